//! Three real replica processes from the built binary (issue: replica daemon, §7).
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{b64, Cluster, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_a_follower_reads_back_through_the_third_replica() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let third = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let rev = c.put(follower, "greeting", "hello").await;
    assert_eq!(
        c.get(third, "greeting").await,
        Some(("hello".to_string(), rev))
    );
    assert_eq!(
        c.get(leader, "greeting").await,
        Some(("hello".to_string(), rev))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_of_the_leader_writes_go_on_and_the_restarted_replica_catches_up() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let before = c.put(leader, "k0", "before").await;
    c.kill(leader);
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = c.wait_leader(&rest).await;
    assert_ne!(new_leader, leader);
    let mut written = Vec::new();
    for i in 1..=10 {
        let rev = c.put(rest[i % 2], &format!("k{i}"), &format!("v{i}")).await;
        written.push((format!("k{i}"), format!("v{i}"), rev));
    }
    c.spawn(leader);
    c.wait_leader(&[0, 1, 2]).await;
    assert_eq!(c.get(leader, "k0").await, Some(("before".into(), before)));
    for (k, v, rev) in written {
        assert_eq!(
            c.get(leader, &k).await,
            Some((v, rev)),
            "{k} on the restarted replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_413_and_malformed_ones_400_and_nothing_is_stored() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let big = json!({"key": b64("big"), "value": b64(&"x".repeat(100 * 1024))});
    let (s, v) = c.call(leader, "/v3/kv/put", big).await.unwrap();
    assert_eq!(s, 413, "{v}");
    let (s, v) = c
        .call_raw(leader, "/v3/kv/put", "{\"key\": \"Zm9v\", ".into())
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    let (s, _) = c
        .call(
            leader,
            "/v3/kv/put",
            json!({"key": "%%%", "value": b64("x")}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    assert_eq!(c.get(leader, "big").await, None);
    assert_eq!(c.get(leader, "foo").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_compact_history_on_their_own_as_kube_apiserver_does() {
    let mut c = Cluster::prepare(3);
    for i in 0..3 {
        c.add_api_config(i, "compaction_interval_s = 1");
        c.spawn(i);
    }
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let old = c.put(leader, "k", "v1").await;
    let new = c.put(leader, "k", "v2").await;
    let read_at =
        |rev: u64| json!({"key": b64("k"), "revision": rev.to_string(), "serializable": true});
    // Compaction reaches `old` within two intervals (the first records where history
    // starts; puts go on so that the revision seen moves past it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let compacted = loop {
        c.put(leader, "tick", "x").await;
        let (status, body) = c.call(leader, "/v3/kv/range", read_at(old)).await.unwrap();
        if status == 400 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "never compacted: {}",
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        compacted["error"].as_str().unwrap().contains("compacted"),
        "{compacted}"
    );
    // The turn key is kube-apiserver's, and the latest value is still there everywhere.
    let (_, v) = c
        .call(
            leader,
            "/v3/kv/range",
            json!({"key": b64("compact_rev_key")}),
        )
        .await
        .unwrap();
    assert!(
        v["kvs"][0]["version"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 2,
        "{v}"
    );
    for i in 0..3 {
        assert_eq!(c.get(i, "k").await, Some(("v2".to_string(), new)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_when_every_peer_is_gone_and_sigterm_exits_0() {
    let mut c = Cluster::start(3).await;
    let http = c.http.clone();
    let url = format!("{}/readyz", c.members[0].api);
    let ready = |_: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(0).await, 200);
    assert_eq!(c.terminate(1), Some(0), "SIGTERM exits 0\n{}", c.log(1));
    assert_eq!(c.terminate(2), Some(0), "SIGTERM exits 0\n{}", c.log(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ready(0).await == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_missing_certificate_file_exits_2_naming_the_file() {
    let c = Cluster::prepare(3);
    let missing = c.pki().join("replica-1-peer.crt");
    std::fs::remove_file(&missing).unwrap();
    let out = Command::new(BIN)
        .arg("replica")
        .arg("--config")
        .arg(&c.members[0].config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replica-1-peer.crt"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        !c.dir.path().join("data/replica-1").exists(),
        "nothing written"
    );
}

#[test]
fn a_data_dir_of_another_cluster_is_refused_with_exit_2() {
    let c = Cluster::prepare(1);
    let data = c.dir.path().join("data/replica-1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("trireme.id"), "cluster=other replica=replica-1\n").unwrap();
    let out = Command::new(BIN)
        .arg("replica")
        .arg("--config")
        .arg(&c.members[0].config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to cluster=other"), "{err}");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        1,
        "nothing written"
    );
}

#[test]
fn a_bad_config_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "name = \"replica-1\"\n[api]\nlisten = \"nope\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("replica")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
