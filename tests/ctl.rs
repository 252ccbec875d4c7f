//! `trireme ctl` against three real replica processes (issue: Kubernetes API, §3):
//! apply from a file and from stdin, get as a table / json / yaml / name with a label
//! selector and across namespaces, watch, delete, `status`, and failover past a killed
//! replica listed first in `--endpoints`. Plus usage errors without a cluster.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, BIN};

struct Ctl {
    kubeconfig: PathBuf,
}

impl Ctl {
    fn cmd(&self, endpoints: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("ctl").arg("--kubeconfig").arg(&self.kubeconfig);
        if !endpoints.is_empty() {
            c.args(["--endpoints", endpoints]);
        }
        c.args(["--request-timeout", "10"]).args(args);
        c
    }

    fn run(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
        support::run_bounded(
            &mut self.cmd(endpoints, args),
            stdin,
            Duration::from_secs(60),
        )
    }

    fn ok(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(endpoints, args, stdin);
        assert!(
            out.status.success(),
            "trireme ctl {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, endpoints: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(endpoints, &a, None)).unwrap()
    }
}

/// Fails with `code` and exactly one line on stderr; returns that line.
fn fails(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    stderr
}

/// The generated kubeconfig with its server pointed at `server` (it says :6443).
fn kubeconfig_for(pki: &Path, server: &str, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(pki.join("kubeconfig")).unwrap();
    assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
    let path = out.join("kubeconfig");
    std::fs::write(
        &path,
        text.replace(
            "server: https://127.0.0.1:6443",
            &format!("server: {server}"),
        ),
    )
    .unwrap();
    path
}

const MANIFESTS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels:
    app: demo
data:
  a: \"1\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
data:
  b: \"x\"
  c: \"y\"
";

/// Status rows (header skipped) as whitespace-split cells.
fn status_rows(text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("ROLE") && header.contains("HEALTH"),
        "{text}"
    );
    lines
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_get_apply_watch_delete_status_and_failover() {
    let mut c = Cluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let k = Ctl {
        kubeconfig: kubeconfig_for(&c.pki(), &c.members[0].api, work.path()),
    };
    let apis: Vec<String> = c.members.iter().map(|m| m.api.clone()).collect();
    let all = apis.join(",");

    // The default namespace appears once a leader has created it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = k.run(&all, &["get", "ns", "default", "-o", "name"], None);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "namespace/default\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // apply -f FILE: two documents.
    let file = work.path().join("cms.yaml");
    std::fs::write(&file, MANIFESTS).unwrap();
    let out = k.ok(&all, &["apply", "-f", file.to_str().unwrap()], None);
    assert_eq!(out, "configmap/cfg created\nconfigmap/other created\n");

    // get: the server's Table, one object and a list, through other replicas.
    let table = k.ok(&apis[1], &["get", "cm", "cfg"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DATA") && lines[0].contains("AGE"),
        "{table}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], ["cfg", "1"], "{table}");
    let list = k.ok(&apis[2], &["get", "configmaps"], None);
    assert!(list.lines().any(|l| l.starts_with("other ")), "{list}");
    let wide = k.ok(&all, &["get", "ConfigMap", "-o", "wide", "-A"], None);
    assert!(wide.starts_with("NAMESPACE"), "{wide}");
    assert!(
        wide.lines()
            .any(|l| l.starts_with("default ") && l.contains(" cfg ")),
        "{wide}"
    );

    // -o json / yaml / name, -l.
    let first = k.json(&all, &["get", "cm", "cfg"]);
    assert_eq!(first["data"]["a"], "1");
    assert_eq!(first["metadata"]["labels"]["app"], "demo");
    let yaml = k.ok(&all, &["get", "configmap", "cfg", "-o", "yaml"], None);
    let y: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(y["kind"], "ConfigMap");
    assert_eq!(y["data"]["a"], "1");
    assert_eq!(y["metadata"]["name"], "cfg");
    assert_eq!(
        k.ok(&all, &["get", "cm", "-l", "app=demo", "-o", "name"], None),
        "configmap/cfg\n"
    );
    let none = k.run(&all, &["get", "cm", "-l", "app=nothing"], None);
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));
    let list = k.json(&all, &["get", "cm", "-n", "default"]);
    assert_eq!(list["kind"], "ConfigMapList");

    // apply -f - (JSON on stdin): configured, then unchanged.
    let changed = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"default"},"data":{"a":"2"}}"#;
    assert_eq!(
        k.ok(&all, &["apply", "-f", "-"], Some(changed)),
        "configmap/cfg configured\n"
    );
    assert_eq!(
        k.ok(&all, &["apply", "-f", "-"], Some(changed)),
        "configmap/cfg unchanged\n"
    );
    let second = k.json(&apis[2], &["get", "cm", "cfg"]);
    assert_eq!(second["data"]["a"], "2");
    assert_eq!(
        second["metadata"]["labels"]["app"], "demo",
        "merge keeps fields"
    );
    assert_ne!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // watch one object through replica 3 while it is deleted through replica 1.
    let watcher = k
        .cmd(&apis[2], &["watch", "cm", "cfg", "--timeout", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        k.ok(&apis[0], &["delete", "cm", "cfg"], None),
        "configmap \"cfg\" deleted\n"
    );
    let w = watcher.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&w.stdout);
    assert!(
        w.status.success(),
        "{events}\n{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let kinds: Vec<&str> = events
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(kinds, ["ADDED", "DELETED"], "{events}");
    assert!(
        events.lines().all(|l| l.contains("configmap/cfg")),
        "{events}"
    );

    // Errors: one line, exit 1 from the server, 2 for usage.
    let gone = k.run(&all, &["get", "cm", "cfg"], None);
    assert!(fails(&gone, 1).contains("NotFound"));
    let unknown = k.run(&all, &["get", "frobs"], None);
    assert!(fails(&unknown, 2).contains("\"frobs\""));

    // status: three replicas, one leader, all ready.
    let status = k.ok(&all, &["status"], None);
    let rows = status_rows(&status);
    assert_eq!(rows.len(), 3, "{status}");
    assert_eq!(
        rows.iter().filter(|r| r[3] == "leader").count(),
        1,
        "{status}"
    );
    assert!(
        rows.iter().all(|r| r[3] == "leader" || r[3] == "follower"),
        "{status}"
    );
    assert!(rows.iter().all(|r| r[6] == "ready"), "{status}");
    let mut names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    names.sort();
    assert_eq!(names, ["replica-1", "replica-2", "replica-3"], "{status}");
    for (i, m) in c.members.iter().enumerate() {
        let row = rows.iter().find(|r| r[0] == m.name).unwrap();
        assert_eq!(row[1], format!("127.0.0.1:{}", m.api_port), "{i}: {status}");
        assert_eq!(
            row[2],
            format!("zone-{}", i + 1),
            "the zone of the config: {status}"
        );
    }

    // Failover: a killed replica first in --endpoints.
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let victim = (leader + 1) % 3;
    c.kill(victim);
    let mut order = vec![apis[victim].clone()];
    order.extend((0..3).filter(|i| *i != victim).map(|i| apis[i].clone()));
    let order = order.join(",");
    let other = k.json(&order, &["get", "cm", "other"]);
    assert_eq!(other["data"]["c"], "y");
    assert_eq!(
        k.ok(&order, &["get", "cm", "other", "-o", "name"], None),
        "configmap/other\n"
    );
    let status = k.ok(&order, &["status"], None);
    let rows = status_rows(&status);
    assert_eq!(rows.len(), 3, "{status}");
    assert_eq!(rows[0][6], "unreachable", "{status}");
    assert_eq!(
        rows.iter().filter(|r| r[3] == "leader").count(),
        1,
        "{status}"
    );
    assert_eq!(
        rows.iter().filter(|r| r[6] == "ready").count(),
        2,
        "{status}"
    );
}

#[test]
fn usage_and_config_errors_are_one_line_with_the_right_exit_code() {
    let out = Command::new(BIN).args(["ctl", "get"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["ctl", "get", "cm", "-o", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args([
            "ctl",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "get",
            "cm",
        ])
        .output()
        .unwrap();
    assert!(fails(&out, 1).contains("/nonexistent/kubeconfig"));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, "clusters: [{name: a, cluster: {server: 'ftp://x'}}]\n").unwrap();
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "cm"])
        .output()
        .unwrap();
    assert!(fails(&out, 1).contains("ftp://x"));
    // `certs add` without a CA, with a name that is not a member name.
    let out = Command::new(BIN)
        .args(["certs", "add", "--dir"])
        .arg(dir.path().join("no-pki"))
        .args(["--replica", "replica-4=127.0.0.1"])
        .output()
        .unwrap();
    assert!(fails(&out, 2).contains("ca.crt"));
    let out = Command::new(BIN)
        .args(["certs", "add", "--dir"])
        .arg(dir.path())
        .args(["--replica", "Replica_4=127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Replica_4"));
}
