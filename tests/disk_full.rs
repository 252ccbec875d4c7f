//! A full disk on one follower (FAULTS-NOTES §8): its replica stops on the write it
//! cannot make, says why, does not panic and is not taken for a removed member; the
//! other two keep acknowledging writes; once there is room again it restarts, catches
//! up and has the same state as the others. The follower's data dir is a small tmpfs
//! mounted by the test (root, as in CI), unmounted (lazily) at the end whatever happens.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;
use support::{b64, Cluster};

/// A tmpfs mounted on a directory, detached when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Every replica's (applied index, MVCC hash), once all three report the same applied
/// index (bounded wait).
async fn converged(c: &Cluster) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for i in 0..3 {
            if let Ok((200, v)) = c.call(i, "/v3/maintenance/hashkv", json!({})).await {
                let applied = v["raft_applied_index"].as_str().unwrap().parse().unwrap();
                seen.push((applied, v["hash"].as_u64().unwrap()));
            }
        }
        if seen.len() == 3 && seen.iter().all(|s| s.0 == seen[0].0) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "replicas do not converge: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_one_replica_cleanly_and_it_rejoins_once_there_is_room() {
    let mut c = Cluster::prepare(3);
    let full = 2;
    let disk = Tmpfs::mount(&c.data_dir(full), "24m");
    for i in 0..3 {
        c.spawn(i);
    }
    let mut leader = c.wait_leader(&[0, 1, 2]).await;
    if leader == full {
        // The full disk is a follower's: hand leadership to replica 0.
        let id = c.status(0).await.unwrap()["header"]["member_id"]
            .as_str()
            .unwrap()
            .to_string();
        let (code, body) = c
            .call(
                full,
                "/v3/maintenance/transfer-leadership",
                json!({ "targetID": id }),
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        leader = c.wait_leader(&[0, 1, 2]).await;
    }
    assert_ne!(leader, full);

    // 30 KB values through the healthy replicas until the follower's disk is full and
    // its replica exits; every write is acknowledged.
    let value = "x".repeat(30_000);
    let mut acked = Vec::new();
    let mut exit = None;
    for n in 0..2_000 {
        let key = format!("/full/{n}");
        c.put(n % 2, &key, &value).await;
        acked.push(key);
        if n % 10 == 0 {
            exit = c.wait_exit(full, Duration::from_millis(1));
            assert!(
                exit.is_some() || c.members[full].child.is_some(),
                "the replica was killed by a signal:\n{}",
                c.log(full)
            );
            if exit.is_some() {
                break;
            }
        }
    }
    let code = exit.expect("the replica on the full disk stops");
    assert_ne!(code, 0);
    let log = c.log(full);
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains("the raft node stopped"), "{log}");
    assert!(!log.contains("removed from the cluster"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // The other two keep acknowledging.
    for n in 0..20 {
        let key = format!("/after/{n}");
        c.put(n % 2, &key, "v").await;
        acked.push(key);
    }

    // Room again: the replica restarts from its data dir and catches up.
    disk.grow("512m");
    c.spawn(full);
    let states = converged(&c).await;
    assert!(
        states.iter().all(|s| s.1 == states[0].1),
        "same applied index, different state: {states:?}"
    );
    // Every acknowledged write is on it (serializable: its own state).
    let r = c
        .call(
            full,
            "/v3/kv/range",
            json!({"key": b64("/"), "range_end": b64("0"), "keys_only": true, "serializable": true}),
        )
        .await
        .unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let keys: Vec<String> = r.1["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let raw = STANDARD.decode(kv["key"].as_str().unwrap()).unwrap();
            String::from_utf8(raw).unwrap()
        })
        .collect();
    for k in &acked {
        assert!(
            keys.contains(k),
            "{k} acknowledged but missing on the restarted replica"
        );
    }
    drop(c);
    drop(disk);
}
