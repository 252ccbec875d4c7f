//! The member API on in-process replicas (real sled, real fsync, in-memory network):
//! a fourth replica added as a learner catches up and is promoted, another is
//! removed, every replica agrees on the member table, which survives restarts and
//! travels in snapshots; a removed replica's name can be added again; refusals.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trireme_mvcc::{PutRequest, RangeRequest};
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::testing::wait_for;
use trireme_raft::{member_id, Bootstrap, NodeConfig, ProposeError, Role, FAST_TICK};
use trireme_store::{KvStore, Member, MemberError, StoreConfig, StoreError};

const FOUNDERS: [&str; 3] = ["n1", "n2", "n3"];

fn peer_url(name: &str) -> String {
    format!("https://{name}.test:7000")
}

fn client_url(name: &str) -> String {
    format!("https://{name}.test:6443")
}

struct Cluster {
    net: Arc<MemoryNetwork>,
    stores: BTreeMap<String, Arc<KvStore>>,
    dirs: BTreeMap<String, tempfile::TempDir>,
    threshold: u64,
}

impl Cluster {
    fn start(threshold: u64) -> Cluster {
        let mut c = Cluster {
            net: MemoryNetwork::new(),
            stores: BTreeMap::new(),
            dirs: BTreeMap::new(),
            threshold,
        };
        for name in FOUNDERS {
            c.boot(name, false);
        }
        c
    }

    /// Starts `name` on its directory (a new one if it has none): a founder, or a
    /// replica joining (`join`).
    fn boot(&mut self, name: &str, join: bool) {
        let dir = self
            .dirs
            .entry(name.to_string())
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let bootstrap = if join {
            Bootstrap::Join
        } else {
            Bootstrap::Initial(FOUNDERS.iter().map(|n| member_id(n)).collect())
        };
        let mut n = NodeConfig::new(member_id(name), dir.path(), bootstrap);
        n.tick = FAST_TICK;
        n.election_ticks = 10;
        n.heartbeat_ticks = 2;
        n.snapshot_threshold = self.threshold;
        n.compaction_margin = 0;
        n.request_timeout = Duration::from_secs(3);
        let s = KvStore::start(StoreConfig::new(n), self.net.transport(member_id(name))).unwrap();
        self.net.register(s.node().mailbox());
        self.stores.insert(name.to_string(), s);
    }

    async fn stop(&mut self, name: &str) {
        self.net.unregister(member_id(name));
        let s = self.stores.remove(name).unwrap();
        s.shutdown().await;
    }

    /// Stops `name` and throws its data away.
    async fn wipe(&mut self, name: &str) {
        self.stop(name).await;
        self.dirs.remove(name);
    }

    fn s(&self, name: &str) -> &KvStore {
        &self.stores[name]
    }

    async fn leader(&self, among: &[&str]) -> String {
        wait_for(Duration::from_secs(10), || {
            among
                .iter()
                .find(|n| {
                    let id = member_id(n);
                    self.s(n).status().role == Role::Leader
                        && among.iter().all(|o| self.s(o).status().leader_id == id)
                })
                .map(|n| n.to_string())
        })
        .await
        .expect("a leader is elected")
    }

    /// What a replica does once it runs: publish its own name and URLs.
    async fn publish(&self, name: &str) {
        retry(|| async {
            self.s(name)
                .member_publish(name, vec![peer_url(name)], vec![client_url(name)])
                .await
                .map(|_| ())
        })
        .await;
    }

    /// Waits until each of `names` lists exactly `want` (as (name, learner) pairs).
    async fn members_agree(&self, names: &[&str], want: &[(&str, bool)]) -> Vec<Member> {
        let mut want: Vec<(String, bool)> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        want.sort();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let lists: Vec<Vec<Member>> = names
                .iter()
                .map(|n| self.s(n).members_local().unwrap())
                .collect();
            let agree = lists.iter().all(|l| {
                let mut got: Vec<(String, bool)> =
                    l.iter().map(|m| (m.name.clone(), m.is_learner)).collect();
                got.sort();
                got == want && *l == lists[0]
            });
            if agree {
                return lists[0].clone();
            }
            assert!(
                Instant::now() < end,
                "members never agreed on {want:?}: {lists:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Retries retryable errors (leader changes, a change in progress, a learner not in
/// sync yet), bounded; panics on anything else.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    for _ in 0..500 {
        if Instant::now() > end {
            break;
        }
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("never succeeded; last error: {last}");
}

fn err<T>(r: Result<T, StoreError>) -> MemberError {
    match r {
        Err(StoreError::Member(e)) => e,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

async fn put(s: &KvStore, key: &str, value: &str) -> u64 {
    retry(|| async {
        s.put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
        })
        .await
        .map(|r| r.revision)
    })
    .await
}

/// Whether `key` is in the replica's local state.
fn has_key(s: &KvStore, key: &str) -> Option<()> {
    let r = s
        .range_local(&RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .unwrap();
    (!r.kvs.is_empty()).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_learner_promote_it_remove_another_and_every_replica_agrees() {
    let mut c = Cluster::start(10_000);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    let follower = FOUNDERS.iter().find(|n| **n != leader).unwrap().to_string();
    put(c.s(&leader), "before", "1").await;

    // Added through a follower, as a learner.
    let added = retry(|| c.s(&follower).member_add("n4", vec![peer_url("n4")], true)).await;
    assert_eq!(added.id, member_id("n4"));
    assert!(added.is_learner);
    c.boot("n4", true);
    let synced = wait_for(Duration::from_secs(15), || has_key(c.s("n4"), "before")).await;
    assert!(synced.is_some(), "the learner catches up");
    c.publish("n4").await;
    let founders_and_learner = [("n1", false), ("n2", false), ("n3", false), ("n4", true)];
    c.members_agree(&["n1", "n2", "n3", "n4"], &founders_and_learner)
        .await;

    // Promoted through the learner itself (forwarded to the leader).
    retry(|| c.s("n4").member_promote(member_id("n4"))).await;
    let four_voters = [("n1", false), ("n2", false), ("n3", false), ("n4", false)];
    let list = c
        .members_agree(&["n1", "n2", "n3", "n4"], &four_voters)
        .await;
    let n4 = list.iter().find(|m| m.name == "n4").unwrap();
    assert_eq!(n4.peer_urls, [peer_url("n4")]);
    assert_eq!(n4.client_urls, [client_url("n4")]);
    put(c.s("n4"), "via-n4", "1").await;

    // n1 removed through n4; it learns it was removed.
    let after = retry(|| c.s("n4").member_remove(member_id("n1"))).await;
    assert!(after.iter().all(|m| m.name != "n1"), "{after:?}");
    let rest = [("n2", false), ("n3", false), ("n4", false)];
    c.members_agree(&["n2", "n3", "n4"], &rest).await;
    let removed = wait_for(Duration::from_secs(10), || {
        c.s("n1").status().removed.then_some(())
    })
    .await;
    assert!(removed.is_some(), "{:?}", c.s("n1").status());
    put(c.s("n2"), "after-remove", "1").await;
    // The linearizable list agrees with the local ones.
    let linear = retry(|| c.s("n3").members()).await;
    assert_eq!(linear, c.s("n3").members_local().unwrap());

    // The table survives a restart.
    c.stop("n2").await;
    c.boot("n2", false);
    let list = c.members_agree(&["n2", "n3", "n4"], &rest).await;
    assert!(list
        .iter()
        .all(|m| m.peer_urls == [peer_url(&m.name)] && m.client_urls == [client_url(&m.name)]));
    // n1's state says it was removed, also after a restart.
    c.stop("n1").await;
    c.boot("n1", false);
    assert!(c.s("n1").status().removed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_catches_up_by_snapshot_learns_the_member_table() {
    // A low threshold: the log is compacted, so a new replica gets a snapshot.
    let mut c = Cluster::start(20);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    for i in 0..60 {
        put(c.s(&leader), &format!("k{i}"), "v").await;
    }
    retry(|| c.s(&leader).member_add("n4", vec![peer_url("n4")], true)).await;
    c.boot("n4", true);
    let synced = wait_for(Duration::from_secs(15), || has_key(c.s("n4"), "k59")).await;
    assert!(synced.is_some(), "the learner catches up");
    let by_snapshot = wait_for(Duration::from_secs(10), || {
        (c.s("n4").status().first_index > 1).then_some(())
    })
    .await;
    assert!(by_snapshot.is_some(), "by snapshot");
    // Before it published anything itself, it knows the others' names and URLs.
    let list = c.s("n4").members_local().unwrap();
    for n in FOUNDERS {
        let m = list.iter().find(|m| m.name == n).unwrap();
        assert_eq!(m.peer_urls, [peer_url(n)]);
        assert_eq!(m.client_urls, [client_url(n)]);
    }
    let n4 = list.iter().find(|m| m.id == member_id("n4")).unwrap();
    assert_eq!((n4.name.as_str(), n4.is_learner), ("n4", true));
    assert_eq!(n4.peer_urls, [peer_url("n4")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_wiped_and_added_again_under_its_name_catches_up() {
    // No compaction: the snapshot the leader builds for n4 stays on offer.
    let mut c = Cluster::start(10_000);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    let victim = FOUNDERS.iter().find(|n| **n != leader).unwrap().to_string();
    let others: Vec<&str> = FOUNDERS.iter().copied().filter(|n| *n != victim).collect();
    // A learner that joins by snapshot first: the leader keeps that snapshot, which
    // lists the victim as a voter. The re-added victim must not get it (it would
    // replay its own removal).
    for i in 0..30 {
        put(c.s(&leader), &format!("early{i}"), "v").await;
    }
    retry(|| c.s(&leader).member_add("n4", vec![peer_url("n4")], true)).await;
    c.boot("n4", true);
    let synced = wait_for(Duration::from_secs(15), || has_key(c.s("n4"), "early29")).await;
    assert!(synced.is_some(), "the learner catches up");
    retry(|| c.s(&leader).member_remove(member_id(&victim))).await;
    let removed = wait_for(Duration::from_secs(10), || {
        c.s(&victim).status().removed.then_some(())
    })
    .await;
    assert!(removed.is_some());
    c.wipe(&victim).await;
    for i in 0..5 {
        put(c.s(&leader), &format!("k{i}"), "v").await;
    }
    // The same name (so the same id), a new address.
    let new_url = format!("https://{victim}.moved.test:7000");
    let added = retry(|| {
        c.s(others[1])
            .member_add(&victim, vec![new_url.clone()], true)
    })
    .await;
    assert_eq!(added.id, member_id(&victim));
    c.boot(&victim, true);
    let synced = wait_for(Duration::from_secs(15), || has_key(c.s(&victim), "k4")).await;
    assert!(synced.is_some(), "the re-added replica catches up");
    let by_snapshot = wait_for(Duration::from_secs(10), || {
        (c.s(&victim).status().first_index > 1).then_some(())
    })
    .await;
    assert!(by_snapshot.is_some(), "by snapshot");
    assert!(!c.s(&victim).status().removed, "it is a member again");
    retry(|| c.s(&leader).member_promote(member_id(&victim))).await;
    c.publish(&victim).await;
    let all = [
        (FOUNDERS[0], false),
        (FOUNDERS[1], false),
        (FOUNDERS[2], false),
        ("n4", true),
    ];
    let list = c.members_agree(&FOUNDERS, &all).await;
    let m = list.iter().find(|m| m.name == victim).unwrap();
    assert_eq!(m.peer_urls, [peer_url(&victim)], "its own publish wins");
    put(c.s(&victim), "via-readded", "1").await;
    assert!(!c.s(&victim).status().removed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_reason() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    let s = c.s(&leader);
    assert!(matches!(
        err(s.member_add("n2", vec![peer_url("x")], true).await),
        MemberError::AlreadyExists { .. }
    ));
    assert!(matches!(
        err(s.member_add("n9", vec![peer_url("n2")], true).await),
        MemberError::PeerUrlExists { .. }
    ));
    assert!(matches!(
        err(s.member_add("N9", vec![peer_url("n9")], true).await),
        MemberError::InvalidName { .. }
    ));
    assert!(matches!(
        err(s.member_add("n9", vec!["http://n9:1".into()], true).await),
        MemberError::InvalidUrl { .. }
    ));
    assert_eq!(
        err(s.member_add("n9", vec![], true).await),
        MemberError::NoPeerUrl
    );
    assert_eq!(err(s.member_remove(42).await), MemberError::NotFound(42));
    assert_eq!(
        err(s.member_promote(member_id("n2")).await),
        MemberError::NotLearner(member_id("n2"))
    );
    // A learner that never runs is never in sync.
    retry(|| s.member_add("n9", vec![peer_url("n9")], true)).await;
    match s.member_promote(member_id("n9")).await {
        Err(StoreError::Propose(ProposeError::LearnerNotReady)) => {}
        other => panic!("{other:?}"),
    }
    // Removing voters down to the last one.
    let mut voters: Vec<&str> = FOUNDERS.iter().copied().filter(|n| *n != leader).collect();
    voters.push(&leader);
    retry(|| s.member_remove(member_id("n9"))).await;
    // voters[0] is cut off while it is removed: it misses the change.
    c.net.isolate(member_id(voters[0]));
    for v in &voters[..2] {
        retry(|| s.member_remove(member_id(v))).await;
    }
    c.net.heal();
    assert_eq!(
        err(s.member_remove(member_id(&leader)).await),
        MemberError::LastVoter(member_id(&leader))
    );
    // A replica that is not a member cannot publish, also when it missed its removal
    // (it may not know a leader for a while: retryable errors until then).
    let removed = c.s(voters[0]);
    let end = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        match removed
            .member_publish(voters[0], vec![peer_url(voters[0])], vec![])
            .await
        {
            Err(e) if e.is_retryable() && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            r => break err(r),
        }
    };
    assert_eq!(refusal, MemberError::NotMember(member_id(voters[0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_asked_to_remove_itself_after_it_was_removed_says_it_is_done() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    let victim = FOUNDERS.iter().copied().find(|n| *n != leader).unwrap();
    // The victim misses its removal: it still counts itself a member.
    c.net.isolate(member_id(victim));
    retry(|| c.s(&leader).member_remove(member_id(victim))).await;
    c.net.heal();
    assert!(c
        .s(victim)
        .members_local()
        .unwrap()
        .iter()
        .any(|m| m.name == victim));
    // Asked to remove itself, it learns from the leader that it is out: done.
    let after = c.s(victim).member_remove(member_id(victim)).await.unwrap();
    assert!(after.iter().all(|m| m.name != victim), "{after:?}");
    let published = wait_for(Duration::from_secs(10), || {
        c.s(victim).status().removed.then_some(())
    })
    .await;
    assert!(published.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_moves_leadership_first_and_writes_go_on() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&FOUNDERS).await;
    for n in FOUNDERS {
        c.publish(n).await;
    }
    put(c.s(&leader), "before", "1").await;
    // Asked on the leader itself: it hands leadership over, the change goes to the
    // new leader, and the old one applies its removal as a follower.
    let after = retry(|| c.s(&leader).member_remove(member_id(&leader))).await;
    assert!(after.iter().all(|m| m.name != leader), "{after:?}");
    let rest: Vec<&str> = FOUNDERS.iter().copied().filter(|n| *n != leader).collect();
    let new_leader = c.leader(&rest).await;
    assert_ne!(new_leader, leader);
    let removed = wait_for(Duration::from_secs(10), || {
        c.s(&leader).status().removed.then_some(())
    })
    .await;
    assert!(removed.is_some(), "{:?}", c.s(&leader).status());
    assert!(
        !c.s(&leader).status().stopped,
        "the old leader's node did not stop (raft-rs panics on a leader that applied its own removal)"
    );
    for (i, n) in rest.iter().enumerate() {
        put(c.s(n), &format!("after-{i}"), "v").await;
    }
    let want: Vec<(&str, bool)> = rest.iter().map(|n| (*n, false)).collect();
    c.members_agree(&rest, &want).await;
}
