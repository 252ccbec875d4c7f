//! `trireme bench` against three real replica processes, over HTTPS with the
//! cluster's client certificate (issue 7, §1): every operation completes without a
//! failure and what it wrote is there; an unreachable endpoint is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{b64, Cluster, BIN};

/// Runs `trireme bench <args> --json` with the cluster's CA and admin certificate;
/// the exit code and the report (or the error line).
fn bench(c: &Cluster, args: &[&str]) -> (Option<i32>, Value, String) {
    let pki = c.pki();
    let endpoints: Vec<&str> = c.members.iter().map(|m| m.api.as_str()).collect();
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_runs_against_a_cluster_without_failures() {
    let c = Cluster::start(3).await;
    c.wait_leader(&[0, 1, 2]).await;
    for (args, what) in [
        (vec!["put", "--target-leader", "--key-space", "50"], "put"),
        (
            vec!["put", "--target-followers", "--key-space", "50"],
            "put",
        ),
        (vec!["range", "--linearizable", "--spread"], "range"),
        (vec!["range", "--serializable", "--spread"], "range"),
        (vec!["txn", "--txn-ops", "3", "--target-leader"], "txn"),
        (vec!["kube-create", "--spread"], "kube-create"),
    ] {
        let mut args = args.clone();
        args.extend(["--clients", "4", "--total", "200"]);
        let (code, report, stderr) = bench(&c, &args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(report["op"], what, "{args:?}: {report}");
        assert_eq!(report["requests"], 200, "{args:?}: {report}");
        assert_eq!(report["ok"], 200, "{args:?}: {report}");
        assert_eq!(report["failed"], 0, "{args:?}: {report}");
        assert!(
            report["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
    // What the puts wrote is there (keys 0..50, zero-padded to 8 bytes), and the
    // ConfigMaps.
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let keys = count(&c, leader, "00000000", "00000050").await;
    assert!(keys > 0 && keys <= 50, "{keys} keys");
    let configmaps = count(
        &c,
        leader,
        "/registry/configmaps/default/",
        "/registry/configmaps/default0",
    )
    .await;
    assert_eq!(configmaps, 200);
}

/// How many keys replica `i` has in [from, to).
async fn count(c: &Cluster, i: usize, from: &str, to: &str) -> u64 {
    let body = json!({"key": b64(from), "range_end": b64(to), "count_only": true});
    let (status, range) = c.call(i, "/v3/kv/range", body).await.unwrap();
    assert_eq!(status, 200, "{range}");
    range["count"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_nobody_listens_on_fails_every_request_and_exits_1() {
    let port = support::free_port();
    let out = Command::new(BIN)
        .args([
            "bench",
            "put",
            "--spread",
            "--clients",
            "2",
            "--total",
            "10",
        ])
        .arg("--endpoints")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 10, "{report}");
    assert_eq!(report["errors"]["transport: connect"], 10, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
