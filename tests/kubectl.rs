//! The real kubectl (v1.32, `/usr/bin/kubectl`) against three replica processes, through
//! the kubeconfig `certs init` writes (issue: Kubernetes API, §4). Fails, never skips,
//! when kubectl is missing: scripts/test.sh installs it.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::Cluster;

struct Kubectl<'a> {
    kubeconfig: std::path::PathBuf,
    cache: &'a Path,
}

impl Kubectl<'_> {
    fn cmd(&self, server: &str, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache)
            .args(["--server", server])
            .args(args);
        c
    }

    fn run(&self, server: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(server, args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .expect("kubectl runs (install Debian's kubernetes-client or use the image's)");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, server: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(server, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, server: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(server, &a, None)).unwrap()
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\ndata:\n  a: \"1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_any_replica() {
    let c = Cluster::start(3).await;
    let cache = tempfile::tempdir().unwrap();
    let k = Kubectl {
        kubeconfig: c.pki().join("kubeconfig"),
        cache: cache.path(),
    };
    let (r1, r2, r3) = (
        c.members[0].api.clone(),
        c.members[1].api.clone(),
        c.members[2].api.clone(),
    );

    // The system namespaces exist from cluster start (created once a leader is known).
    let mut out = String::new();
    for _ in 0..50 {
        out = k.ok(&r1, &["get", "namespaces"], None);
        if ["default", "kube-system", "kube-public"]
            .iter()
            .all(|ns| out.contains(ns))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for ns in ["default", "kube-system", "kube-public"] {
        assert!(out.contains(ns), "{out}");
    }
    // `create namespace` and `create configmap` send protobuf bodies.
    k.ok(&r1, &["create", "namespace", "demo"], None);
    k.ok(
        &r2,
        &[
            "create",
            "configmap",
            "gen",
            "-n",
            "demo",
            "--from-literal=a=1",
        ],
        None,
    );
    assert_eq!(
        k.json(&r3, &["get", "cm", "gen", "-n", "demo"])["data"]["a"],
        "1"
    );

    // apply, apply again changed: a new resourceVersion, read through another replica.
    k.ok(&r1, &["apply", "-f", "-"], Some(CM));
    let first = k.json(&r2, &["get", "cm", "cfg", "-n", "demo"]);
    k.ok(
        &r2,
        &["apply", "-f", "-"],
        Some(&CM.replace("a: \"1\"", "a: \"2\"")),
    );
    let second = k.json(&r3, &["get", "cm", "cfg", "-n", "demo"]);
    assert_eq!(second["data"]["a"], "2");
    assert_ne!(
        first["metadata"]["resourceVersion"],
        second["metadata"]["resourceVersion"]
    );

    k.ok(&r1, &["label", "cm", "cfg", "-n", "demo", "tier=web"], None);
    k.ok(
        &r2,
        &["annotate", "cm", "cfg", "-n", "demo", "note=hi"],
        None,
    );
    k.ok(
        &r3,
        &[
            "patch",
            "cm",
            "cfg",
            "-n",
            "demo",
            "--type",
            "merge",
            "-p",
            "{\"data\":{\"b\":\"3\"}}",
        ],
        None,
    );
    k.ok(
        &r1,
        &[
            "patch",
            "cm",
            "cfg",
            "-n",
            "demo",
            "--type",
            "json",
            "-p",
            "[{\"op\":\"remove\",\"path\":\"/data/a\"}]",
        ],
        None,
    );
    let now = k.json(&r2, &["get", "cm", "cfg", "-n", "demo"]);
    assert_eq!(now["metadata"]["labels"]["tier"], "web");
    assert_eq!(now["metadata"]["annotations"]["note"], "hi");
    assert_eq!(now["data"], serde_json::json!({"b": "3"}));

    // replace with a stale resourceVersion: Conflict.
    let stale = first.to_string();
    let out = k.run(&r3, &["replace", "-f", "-"], Some(&stale));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Conflict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tables.
    let out = k.ok(&r1, &["get", "cm", "-n", "demo"], None);
    assert!(out.contains("DATA") && out.contains("cfg"), "{out}");
    let out = k.run(&r1, &["get", "lease", "-n", "kube-system"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = k.ok(&r2, &["api-resources"], None);
    for kind in ["configmaps", "leases", "deployments", "namespaces"] {
        assert!(out.contains(kind), "{out}");
    }

    // get -w on replica 1 sees writes made through replica 2.
    let mut watch = k
        .cmd(
            &r1,
            &[
                "get",
                "cm",
                "-n",
                "demo",
                "-w",
                "--output-watch-events",
                "--request-timeout",
                "20s",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    k.ok(&r2, &["create", "-f", "-"], Some("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"w2\",\"namespace\":\"demo\"},\"data\":{\"x\":\"1\"}}"));
    k.ok(
        &r3,
        &[
            "patch",
            "cm",
            "w2",
            "-n",
            "demo",
            "--type",
            "merge",
            "-p",
            "{\"data\":{\"x\":\"2\"}}",
        ],
        None,
    );
    k.ok(&r2, &["delete", "cm", "w2", "-n", "demo"], None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for event in ["ADDED      w2", "MODIFIED   w2", "DELETED    w2"] {
        assert!(text.contains(event), "{event:?} in\n{text}");
    }

    // Server-side dry runs store nothing: diff shows a change (exit 1) and leaves the
    // object as it was; a dry-run delete leaves it too.
    let before = k.json(&r1, &["get", "cm", "cfg", "-n", "demo"]);
    let changed = CM.replace("a: \"1\"", "a: \"changed\"");
    let out = k.run(&r2, &["diff", "-f", "-"], Some(&changed));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed"));
    k.ok(
        &r2,
        &["delete", "cm", "cfg", "-n", "demo", "--dry-run=server"],
        None,
    );
    let after = k.json(&r3, &["get", "cm", "cfg", "-n", "demo"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(after["data"], before["data"]);

    // delete, then NotFound.
    k.ok(&r1, &["delete", "cm", "cfg", "-n", "demo"], None);
    let out = k.run(&r3, &["get", "cm", "cfg", "-n", "demo"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // A Deployment from the protobuf generator; `set image` sends a strategic merge patch
    // that must keep the container's other fields.
    k.ok(
        &r1,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "demo",
            "--image=nginx:1",
            "--port=80",
        ],
        None,
    );
    k.ok(
        &r2,
        &[
            "set",
            "image",
            "deployment/web",
            "-n",
            "demo",
            "nginx=nginx:2",
        ],
        None,
    );
    let d = k.json(&r3, &["get", "deployment", "web", "-n", "demo"]);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:2", "{d}");
    assert_eq!(container["ports"][0]["containerPort"], 80, "{d}");
    assert_eq!(d["metadata"]["generation"], 2, "{d}");

    // A CustomResourceDefinition: its kind is served as soon as it is stored.
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    plural: widgets\n    singular: widget\n    kind: Widget\n    shortNames: [wd]\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n";
    k.ok(&r1, &["apply", "-f", "-"], Some(crd));
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: demo\nspec:\n  size: 3\n";
    k.ok(&r2, &["apply", "-f", "-"], Some(widget));
    k.ok(
        &r3,
        &["apply", "-f", "-"],
        Some(&widget.replace("size: 3", "size: 4")),
    );
    let w = k.json(&r1, &["get", "wd", "w1", "-n", "demo"]);
    assert_eq!(w["spec"]["size"], 4);
    assert!(k.ok(&r2, &["api-resources"], None).contains("widgets"));

    // Without a client certificate: 401 Status.
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(c.pki().join("ca.crt")).unwrap()).unwrap();
    let anon = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = anon
        .get(format!("{r1}/api/v1/namespaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    // Nor does the etcd gateway answer without one.
    let r = anon
        .post(format!("{r1}/v3/kv/range"))
        .body("{\"key\":\"Zm9v\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // /version needs no certificate.
    assert_eq!(
        anon.get(format!("{r1}/version"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}
