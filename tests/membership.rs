//! The member API end to end with real replica processes: three founders, a fourth
//! added as a learner through the API and started with `join = true`, promoted with
//! `trireme ctl`, written through; then a founder removed (it exits with code 3),
//! and added again under the same name after its data directory was wiped: it
//! catches up from a snapshot of a compacted log. This is the "remove and re-add"
//! sequence the chaos harness runs. Last, the leader is removed: it hands leadership
//! over first.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{b64, Cluster, BIN};
use trireme_transport::member_id;

/// `trireme ctl member ...` against the given API endpoints.
fn ctl(c: &Cluster, endpoints: &[usize], args: &[&str]) -> Output {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|i| c.members[*i].api.clone())
        .collect();
    Command::new(BIN)
        .arg("ctl")
        .arg("--kubeconfig")
        .arg(c.pki().join("kubeconfig"))
        .args(["--endpoints", &eps.join(","), "--request-timeout", "10"])
        .arg("member")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A member API call, retried while the answer is retryable (5xx: no leader, a
/// change in progress, a timeout); returns the final (status, body).
async fn member_call(c: &Cluster, i: usize, path: &str, body: Value) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.call(i, path, body.clone()).await {
            Ok((s, v)) if s < 500 => return (s, v),
            Ok((s, v)) => eprintln!("{path} on {i}: {s} {v}"),
            Err(e) => eprintln!("{path} on {i}: {e}"),
        }
        assert!(Instant::now() < deadline, "{path} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `ctl member promote`, retried while the learner is not in sync yet.
async fn promote(c: &Cluster, via: &[usize], name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = ctl(c, via, &["promote", name]);
        if o.status.success() {
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("promoted"),
                "{}",
                text(&o)
            );
            return;
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("in sync with leader") || err.contains("in progress"),
            "{}",
            text(&o)
        );
        assert!(Instant::now() < deadline, "{name} never got in sync: {err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Serializable read on replica `i`: whether it holds `key` (it may not lead or know
/// a leader).
async fn holds(c: &Cluster, i: usize, key: &str) -> bool {
    match c
        .call(
            i,
            "/v3/kv/range",
            json!({"key": b64(key), "serializable": true}),
        )
        .await
    {
        Ok((200, v)) => v["kvs"].as_array().is_some_and(|k| !k.is_empty()),
        _ => false,
    }
}

async fn wait_holds(c: &Cluster, i: usize, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holds(c, i, key).await {
        assert!(
            Instant::now() < deadline,
            "replica {i} never got {key}\n{}",
            c.log(i)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The (name, learner) pairs replica `i` lists, sorted; None if it does not answer.
async fn roster(c: &Cluster, i: usize) -> Option<Vec<(String, bool)>> {
    let (s, v) = c
        .call(i, "/v3/cluster/member/list", json!({"serializable": true}))
        .await
        .ok()?;
    if s != 200 {
        return None;
    }
    let mut r: Vec<(String, bool)> = v["members"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    r.sort();
    Some(r)
}

/// Waits until every replica in `among` lists exactly `want`.
async fn rosters_agree(c: &Cluster, among: &[usize], want: &[(&str, bool)]) {
    let want: Vec<(String, bool)> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for i in among {
            seen.push(roster(c, *i).await);
        }
        if seen.iter().all(|r| r.as_ref() == Some(&want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member lists never agreed on {want:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_promote_remove_and_re_add_replicas_through_the_member_api() {
    let mut c = Cluster::prepare_with_joiners(4, 3);
    // A small snapshot threshold: the log is compacted, so a replica that (re)joins
    // catches up from a snapshot.
    for i in 0..4 {
        c.add_raft_config(i, "snapshot_threshold = 50\ncompaction_margin = 10");
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    c.put(leader, "before", "1").await;

    // 1. Add replica-4 as a learner through a follower's API.
    let (s, v) = member_call(
        &c,
        follower,
        "/v3/cluster/member/add",
        json!({"name": "replica-4", "peerURLs": [c.peer_url(3)], "isLearner": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["member"]["ID"], member_id("replica-4").to_string());
    assert_eq!(v["member"]["isLearner"], true);
    // Without a name: 400, saying why.
    let (s, v) = c
        .call(
            leader,
            "/v3/cluster/member/add",
            json!({"peerURLs": ["https://127.0.0.1:1"]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("name"), "{v}");

    // 2. Start it (join = true, empty data dir); it gets the data.
    c.spawn(3);
    wait_holds(&c, 3, "before").await;

    // 3. Promote it with the CLI; list with the CLI.
    promote(&c, &[leader], "replica-4").await;
    rosters_agree(
        &c,
        &[0, 1, 2, 3],
        &[
            ("replica-1", false),
            ("replica-2", false),
            ("replica-3", false),
            ("replica-4", false),
        ],
    )
    .await;
    let o = ctl(&c, &[3], &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.contains("replica-4"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("started") && row.contains("voter") && row.contains(&c.peer_url(3)),
        "{table}"
    );
    assert!(
        row.contains(&c.members[3].api),
        "its API URL is published: {table}"
    );

    // 4. Write through replica-4; read it back elsewhere.
    let rev = c.put(3, "via-4", "x").await;
    assert_eq!(c.get(leader, "via-4").await, Some(("x".into(), rev)));

    // 5. Remove replica-1 with the CLI, through replica-4.
    let o = ctl(&c, &[3], &["remove", "replica-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let code = c.wait_exit(0, Duration::from_secs(30));
    assert_eq!(code, Some(3), "replica-1 exits with 3\n{}", c.log(0));
    let log = c.log(0);
    assert!(log.contains("removed from the cluster"), "{log}");
    let rest = [1, 2, 3];
    let new_leader = c.wait_leader(&rest).await;
    assert_ne!(new_leader, 0);
    for i in 0..60 {
        c.put(rest[i % 3], &format!("after-remove-{i}"), "v").await;
    }
    rosters_agree(
        &c,
        &rest,
        &[
            ("replica-2", false),
            ("replica-3", false),
            ("replica-4", false),
        ],
    )
    .await;
    // Removing it again: 404.
    let (s, v) = member_call(
        &c,
        1,
        "/v3/cluster/member/remove",
        json!({"ID": member_id("replica-1").to_string()}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    // Restarting the removed replica on its old data: it exits with 3 at once.
    c.spawn(0);
    assert_eq!(
        c.wait_exit(0, Duration::from_secs(30)),
        Some(3),
        "{}",
        c.log(0)
    );

    // 6. Re-add it: wipe its data, add it again (same name, same id), start it with
    //    join = true; it catches up from a snapshot.
    std::fs::remove_dir_all(c.data_dir(0)).unwrap();
    let o = ctl(
        &c,
        &[2, 3],
        &[
            "add",
            "replica-1",
            "--peer-url",
            &c.peer_url(0),
            "--learner",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    c.set_join(0);
    c.spawn(0);
    wait_holds(&c, 0, "after-remove-59").await;
    assert!(
        c.log(0).contains("installed snapshot"),
        "it caught up from a snapshot\n{}",
        c.log(0)
    );
    promote(&c, &[1, 2], "replica-1").await;
    let all = [
        ("replica-1", false),
        ("replica-2", false),
        ("replica-3", false),
        ("replica-4", false),
    ];
    rosters_agree(&c, &[0, 1, 2, 3], &all).await;
    let rev = c.put(0, "via-readded", "y").await;
    assert_eq!(c.get(3, "via-readded").await, Some(("y".into(), rev)));
    assert_eq!(c.get(0, "before").await.map(|(v, _)| v), Some("1".into()));
    let ready = c
        .http
        .get(format!("{}/readyz", c.members[0].api))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ready, 200);

    // 7. Removing the leader: it hands leadership over first, then exits with 3.
    let leader = c.wait_leader(&[0, 1, 2, 3]).await;
    let others: Vec<usize> = (0..4).filter(|i| *i != leader).collect();
    let name = c.members[leader].name.clone();
    let o = ctl(&c, &[leader], &["remove", &name]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        c.wait_exit(leader, Duration::from_secs(30)),
        Some(3),
        "{}",
        c.log(leader)
    );
    assert!(!c.log(leader).contains("panicked"), "{}", c.log(leader));
    let new_leader = c.wait_leader(&others).await;
    assert_ne!(new_leader, leader);
    let rev = c.put(others[0], "after-leader-removed", "z").await;
    assert_eq!(
        c.get(others[2], "after-leader-removed").await,
        Some(("z".into(), rev))
    );
}
