//! The real etcdctl (Debian's etcd-client, v3.4) against three replica processes over
//! mutual TLS: etcd's gRPC API on the API port. Fails, never skips, when etcdctl is
//! missing: scripts/test.sh installs it.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Cluster;

/// A child process killed (by PID) and reaped when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Etcdctl {
    pki: PathBuf,
}

impl Etcdctl {
    fn cmd(&self, endpoints: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--cacert")
            .arg(self.pki.join("ca.crt"))
            .arg("--cert")
            .arg(self.pki.join("admin.crt"))
            .arg("--key")
            .arg(self.pki.join("admin.key"))
            .args(["--dial-timeout=5s", "--command-timeout=15s"])
            .args(args);
        c
    }

    /// Some of etcdctl's commands (`lease keep-alive --once`) ignore
    /// `--command-timeout`: the run is bounded here.
    fn run(&self, endpoints: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
        support::run_bounded(
            &mut self.cmd(endpoints, args),
            stdin,
            Duration::from_secs(60),
        )
    }

    fn ok(&self, endpoints: &[&str], args: &[&str]) -> String {
        self.ok_with(endpoints, args, None)
    }

    fn ok_with(&self, endpoints: &[&str], args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(endpoints, args, stdin);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that must fail; its stderr.
    fn fails(&self, endpoints: &[&str], args: &[&str]) -> String {
        let out = self.run(endpoints, args, None);
        assert!(!out.status.success(), "etcdctl {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, endpoints: &[&str], args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        serde_json::from_str(&self.ok(endpoints, &a)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_any_replica() {
    let mut c = Cluster::start(3).await;
    let e = Etcdctl { pki: c.pki() };
    let apis: Vec<String> = c.members.iter().map(|m| m.api.clone()).collect();
    let [a, b, third] = [apis[0].as_str(), apis[1].as_str(), apis[2].as_str()];

    // A watch on one replica sees writes made through the others.
    let mut watch = KillOnDrop(
        e.cmd(&[third], &["watch", "--prefix", "/etcdctl/"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (lines_tx, lines) = mpsc::channel();
    let out = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // etcdctl prints nothing when its watch is created: write until the watch shows one.
    let start = Instant::now();
    let mut first = None;
    while first.is_none() && start.elapsed() < Duration::from_secs(20) {
        assert_eq!(e.ok(&[a], &["put", "/etcdctl/probe", "p"]).trim(), "OK");
        first = lines.recv_timeout(Duration::from_millis(500)).ok();
    }
    assert_eq!(first.as_deref(), Some("PUT"), "the watch reports the put");

    assert_eq!(e.ok(&[a], &["put", "/etcdctl/a", "1"]).trim(), "OK");
    assert_eq!(
        e.ok(&[b], &["get", "/etcdctl/a", "--print-value-only"])
            .trim(),
        "1"
    );
    let got = e.json(&[third], &["get", "/etcdctl/", "--prefix"]);
    assert_eq!(got["count"], 2, "{got}");
    let rev = got["header"]["revision"].as_i64().unwrap();
    assert_eq!(e.ok(&[b], &["del", "/etcdctl/probe"]).trim(), "1");

    // The watch got every event in order (after the probes that found it open).
    let want = ["PUT", "/etcdctl/a", "1", "DELETE", "/etcdctl/probe"];
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.ends_with(&want.map(String::from)) && Instant::now() < deadline {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(500)) {
            seen.push(l);
        }
    }
    assert!(seen.ends_with(&want.map(String::from)), "{seen:?}");
    // Once each, in that order: nothing duplicated, nothing else in between.
    let rest: Vec<&String> = seen.iter().filter(|l| !l.as_str().eq("p")).collect();
    assert_eq!(
        rest.iter().filter(|l| l.as_str() == "/etcdctl/a").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        rest.iter().filter(|l| l.as_str() == "DELETE").count(),
        1,
        "{seen:?}"
    );
    drop(watch);

    // A transaction read from stdin, as etcdctl's interactive form takes it.
    let txn = "value(\"/etcdctl/a\") = \"1\"\n\nput /etcdctl/t yes\n\nput /etcdctl/t no\n\n";
    let out = e.ok_with(&[b], &["txn"], Some(txn));
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        e.ok(&[a], &["get", "/etcdctl/t", "--print-value-only"])
            .trim(),
        "yes"
    );

    // Leases: a key lives with its lease and goes with it.
    let grant = e.ok(&[a], &["lease", "grant", "60"]);
    let lease = grant.split_whitespace().nth(1).unwrap().to_string();
    e.ok(
        &[b],
        &["put", "/etcdctl/leased", "v", &format!("--lease={lease}")],
    );
    let ttl = e.ok(&[third], &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("attached keys([/etcdctl/leased])"), "{ttl}");
    let kept = e.ok(&[a], &["lease", "keep-alive", "--once", &lease]);
    assert!(kept.contains("keepalived with TTL(60)"), "{kept}");
    e.ok(&[b], &["lease", "revoke", &lease]);
    assert_eq!(e.ok(&[a], &["get", "/etcdctl/leased"]), "");

    // Members and endpoints.
    // Names appear once each replica has published its attributes after starting.
    let start = Instant::now();
    let names = loop {
        let members = e.json(&[a], &["member", "list"]);
        let mut names: Vec<String> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort_unstable();
        if names.iter().all(|n| !n.is_empty()) || start.elapsed() > Duration::from_secs(20) {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(names, ["replica-1", "replica-2", "replica-3"]);
    let status = e.json(&[a, b, third], &["endpoint", "status"]);
    let leaders: Vec<_> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "{status}"
    );
    // etcdctl 3.4 prints the health report on stderr.
    let health = e.run(&[a, b, third], &["endpoint", "health"], None);
    assert!(health.status.success());
    let report = String::from_utf8_lossy(&health.stderr);
    assert_eq!(report.matches("is healthy").count(), 3, "{report}");

    // Compaction and etcd's error for an old revision.
    e.ok(&[a], &["compaction", &rev.to_string()]);
    let err = e.fails(&[b], &["get", "/etcdctl/a", &format!("--rev={}", rev - 1)]);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );

    // What is not served says so; a client without a certificate is refused.
    let err = e.fails(
        &[a],
        &[
            "member",
            "add",
            "replica-9",
            "--peer-urls=https://127.0.0.1:1",
        ],
    );
    assert!(err.contains("needs its replica name"), "{err}");
    let err = e.fails(&[a], &["auth", "enable"]);
    assert!(err.contains("Unimplemented"), "{err}");
    let anonymous = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={a}"))
        .arg("--cacert")
        .arg(c.pki().join("ca.crt"))
        .args(["--dial-timeout=5s", "--command-timeout=10s", "get", "x"])
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(err.contains("client certificate"), "{err}");

    // Leadership handed to another replica on request (etcdctl finds the leader).
    let before = c.wait_leader(&[0, 1, 2]).await;
    let target = (before + 1) % 3;
    let id_of = |api: &str| -> u64 {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Endpoint"] == api)
            .unwrap()["Status"]["header"]["member_id"]
            .as_u64()
            .unwrap()
    };
    let target_id = id_of(&apis[target]);
    let moved = e.ok(&[a, b, third], &["move-leader", &format!("{target_id:x}")]);
    assert!(moved.contains("Leadership transferred"), "{moved}");
    assert_eq!(c.wait_leader(&[0, 1, 2]).await, target);
    // Asked of a replica that does not lead (etcd's gateway route, same check).
    let (code, body) = c
        .call(
            before,
            "/v3/maintenance/transfer-leadership",
            serde_json::json!({ "targetID": target_id.to_string() }),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("etcdserver: not leader"))
    );

    // With the leader killed (SIGKILL), etcdctl given every endpoint goes on.
    let leader = c.wait_leader(&[0, 1, 2]).await;
    c.kill(leader);
    let alive: Vec<&str> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| apis[i].as_str())
        .collect();
    let start = Instant::now();
    loop {
        let out = e.run(&[a, b, third], &["put", "/etcdctl/after", "kill"], None);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no write within 30 s of the kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for api in alive {
        assert_eq!(
            e.ok(&[api], &["get", "/etcdctl/after", "--print-value-only"])
                .trim(),
            "kill"
        );
    }
}
