//! `trireme controller` processes against three replica processes: one holds the
//! Lease and runs the garbage collector, the others stand by; kubectl's
//! `--cascade=background|orphan|foreground` do what they do on Kubernetes; a SIGKILLed
//! holder is replaced after the lease duration, a SIGTERMed one hands over at once, and
//! one that was paused past its renew deadline exits when it resumes. The Lease's
//! transitions count exactly those handovers (no flapping).
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{run_bounded, wait_child, Cluster, BIN};
use trireme_client::{ApiResource, Client, ClientConfig, Kubeconfig, WatchParams};

const LIMIT: Duration = Duration::from_secs(60);

struct Controllers {
    dir: PathBuf,
    kubeconfig: PathBuf,
    endpoints: String,
    children: Vec<Option<Child>>,
}

impl Controllers {
    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let child = Command::new(BIN)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--endpoints", &self.endpoints])
            .args(["--identity", &format!("c{i}")])
            .args(["--leader-elect-lease-duration", "6s"])
            .args(["--leader-elect-renew-deadline", "4s"])
            .args(["--leader-elect-retry-period", "1s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        if self.children.len() <= i {
            self.children.resize_with(i + 1, || None);
        }
        self.children[i] = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("controller-{i}.log"))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn pid(&self, i: usize) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.children[i].as_ref().unwrap().id() as i32)
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(i), sig).unwrap();
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn wait_exit(&mut self, i: usize) -> Option<i32> {
        let mut c = self.children[i].take().unwrap();
        match wait_child(&mut c, Duration::from_secs(30)) {
            Some(s) => s.code(),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("controller {i} did not exit:\n{}", self.log(i));
            }
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_for<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubectl against one replica (the kubeconfig's server is the load balancer's port).
fn kubectl(kubeconfig: &Path, cache: &Path, server: &str, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--server", server])
            .args(args),
        None,
        LIMIT,
    );
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn owned_cm(name: &str, owner: &str, uid: &str, block: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": block}
        ]},
        "data": {"k": "v"}
    })
}

async fn create(client: &Client, cms: &ApiResource, obj: Value) -> String {
    let made = client.create(cms, None, &obj).await.unwrap();
    made["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn exists(client: &Client, cms: &ApiResource, name: &str) -> bool {
    match client.get(cms, None, name).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => panic!("get {name}: {e}"),
    }
}

async fn holder(client: &Client, leases: &ApiResource) -> Option<(String, i64)> {
    let l = client
        .get(leases, Some("kube-system"), "trireme-controller")
        .await
        .ok()?;
    let h = l["spec"]["holderIdentity"].as_str()?.to_string();
    let t = l["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
    (!h.is_empty()).then_some((h, t))
}

fn index_of(identity: &str) -> usize {
    identity.trim_start_matches('c').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_elect_one_and_collect_garbage() {
    let c = Cluster::start(3).await;
    let kubeconfig = c.pki().join("kubeconfig");
    let endpoints: Vec<String> = c.members.iter().map(|m| m.api.clone()).collect();
    let cache = tempfile::tempdir().unwrap();

    // Bad timings: one line, exit 2, before anything is contacted.
    let out = run_bounded(
        Command::new(BIN)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--leader-elect-renew-deadline", "20s"]),
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("greater than the renew deadline") && err.lines().count() == 1,
        "{err}"
    );

    let mut ctl = Controllers {
        dir: c.dir.path().to_path_buf(),
        kubeconfig: kubeconfig.clone(),
        endpoints: endpoints.join(","),
        children: Vec::new(),
    };
    for i in 0..3 {
        ctl.spawn(i);
    }
    let kc = Kubeconfig::load(&kubeconfig).unwrap();
    let client = Client::new(ClientConfig::from_kubeconfig(&kc, &endpoints)).unwrap();
    let cms = client.resolve("configmaps").await.unwrap();
    let leases = client.resolve("leases").await.unwrap();

    // One holder; the others stand by.
    let (first, _) = wait_for("a lease holder", || holder(&client, &leases)).await;
    let first_i = index_of(&first);
    wait_for("the holder's collector to list every kind", || async {
        ctl.log(first_i).contains("every kind listed").then_some(())
    })
    .await;
    for i in (0..3).filter(|i| *i != first_i) {
        assert!(
            !ctl.log(i).contains("successfully acquired"),
            "c{i} leads beside {first}:\n{}",
            ctl.log(i)
        );
    }

    // Background (kubectl's default): the owner goes at once, its dependents after.
    let owner = create(&client, &cms, json!({"metadata": {"name": "owner"}})).await;
    create(&client, &cms, owned_cm("dep-a", "owner", &owner, false)).await;
    create(&client, &cms, owned_cm("dep-b", "owner", &owner, true)).await;
    // A dependent whose owner never existed, and one with a live and a gone owner.
    create(
        &client,
        &cms,
        owned_cm("stray", "nobody", "no-such-uid", false),
    )
    .await;
    let keeper = create(&client, &cms, json!({"metadata": {"name": "keeper"}})).await;
    let mut two = owned_cm("two-owners", "keeper", &keeper, false);
    two["metadata"]["ownerReferences"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner}));
    create(&client, &cms, two).await;
    kubectl(
        &kubeconfig,
        cache.path(),
        &endpoints[0],
        &["delete", "configmap", "owner"],
    );
    for name in ["dep-a", "dep-b", "stray"] {
        wait_for(name, || async {
            (!exists(&client, &cms, name).await).then_some(())
        })
        .await;
    }
    let two = wait_for("two-owners to lose the gone owner", || async {
        let o = client.get(&cms, None, "two-owners").await.unwrap();
        (o["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1)).then_some(o)
    })
    .await;
    assert_eq!(
        two["metadata"]["ownerReferences"][0]["uid"],
        keeper.as_str()
    );

    // Orphan: the dependent stays without its reference; kubectl waits for the owner
    // to go, which it does once the collector removed the `orphan` finalizer.
    let owner2 = create(&client, &cms, json!({"metadata": {"name": "owner2"}})).await;
    create(&client, &cms, owned_cm("dep2", "owner2", &owner2, true)).await;
    kubectl(
        &kubeconfig,
        cache.path(),
        &endpoints[1],
        &["delete", "configmap", "owner2", "--cascade=orphan"],
    );
    assert!(!exists(&client, &cms, "owner2").await);
    let dep2 = client.get(&cms, None, "dep2").await.unwrap();
    assert!(dep2["metadata"].get("ownerReferences").is_none(), "{dep2}");

    // Foreground: the dependent goes first, then the owner.
    let owner3 = create(&client, &cms, json!({"metadata": {"name": "owner3"}})).await;
    let dep3 = create(&client, &cms, owned_cm("dep3", "owner3", &owner3, true)).await;
    let rv = client.list(&cms, None, &Default::default()).await.unwrap()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = client
        .watch(
            &cms,
            None,
            WatchParams {
                resource_version: Some(rv),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    kubectl(
        &kubeconfig,
        cache.path(),
        &endpoints[1],
        &["delete", "configmap", "owner3", "--cascade=foreground"],
    );
    let mut deleted = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    for _ in 0..100 {
        if deleted.len() == 2 {
            break;
        }
        let ev = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("both deletions within the limit")
            .unwrap()
            .unwrap();
        if ev.kind == trireme_client::EventType::Deleted {
            deleted.push(ev.object["metadata"]["uid"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        deleted,
        [dep3, owner3],
        "the dependent goes before its owner"
    );

    // SIGKILL the holder: a standby takes over once the lease has not been renewed
    // for the lease duration, and collects.
    ctl.signal(first_i, nix::sys::signal::Signal::SIGKILL);
    ctl.wait_exit(first_i);
    let (second, transitions) = wait_for("a new holder", || async {
        holder(&client, &leases).await.filter(|(h, _)| *h != first)
    })
    .await;
    assert!(transitions >= 1);
    let second_i = index_of(&second);
    let owner4 = create(&client, &cms, json!({"metadata": {"name": "owner4"}})).await;
    create(&client, &cms, owned_cm("dep4", "owner4", &owner4, false)).await;
    client.delete(&cms, None, "owner4").await.unwrap();
    wait_for("dep4 collected by the new holder", || async {
        (!exists(&client, &cms, "dep4").await).then_some(())
    })
    .await;

    // Bring the killed one back as a standby, then SIGTERM the holder: it releases
    // the Lease and exits 0; a standby takes it.
    ctl.spawn(first_i);
    ctl.signal(second_i, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(ctl.wait_exit(second_i), Some(0), "{}", ctl.log(second_i));
    assert!(
        ctl.log(second_i).contains("lease released"),
        "{}",
        ctl.log(second_i)
    );
    let (third, _) = wait_for("a holder after the release", || async {
        holder(&client, &leases).await.filter(|(h, _)| *h != second)
    })
    .await;
    let third_i = index_of(&third);

    // Pause the holder past the lease duration: the standby takes over, and the
    // paused one, resumed, finds its renew deadline passed and exits 1 without acting.
    let standby = (0..3).find(|i| *i != second_i && *i != third_i).unwrap();
    ctl.signal(third_i, nix::sys::signal::Signal::SIGSTOP);
    let (fourth, _) = wait_for(
        "the standby to take over from the paused holder",
        || async { holder(&client, &leases).await.filter(|(h, _)| *h != third) },
    )
    .await;
    assert_eq!(fourth, format!("c{standby}"));
    ctl.signal(third_i, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(ctl.wait_exit(third_i), Some(1), "{}", ctl.log(third_i));
    assert!(
        ctl.log(third_i).contains("leader election lost"),
        "{}",
        ctl.log(third_i)
    );
    let (last, transitions) = holder(&client, &leases).await.unwrap();
    assert_eq!(last, fourth);
    assert_eq!(transitions, 3, "one transition per handover caused here");
    drop(c);
}
