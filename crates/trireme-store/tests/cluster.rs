//! In-process three-replica stores (real sled, real fsync) on the in-memory network.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use trireme_mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::testing::wait_for;
use trireme_raft::{Bootstrap, NodeConfig, Role, FAST_TICK};
use trireme_store::{Consistency, KvStore, StoreConfig, StoreError};

struct Cluster {
    net: Arc<MemoryNetwork>,
    stores: Vec<Option<Arc<KvStore>>>,
    dirs: Vec<tempfile::TempDir>,
    threshold: u64,
}

fn config(id: u64, dir: &std::path::Path, threshold: u64) -> StoreConfig {
    let mut n = NodeConfig::new(id, dir, Bootstrap::Initial(vec![1, 2, 3]));
    n.tick = FAST_TICK;
    n.election_ticks = 10;
    n.heartbeat_ticks = 2;
    n.snapshot_threshold = threshold;
    n.compaction_margin = 0;
    n.request_timeout = Duration::from_secs(3);
    let mut c = StoreConfig::new(n);
    c.lease_check_interval = Duration::from_millis(50);
    c
}

impl Cluster {
    fn start(threshold: u64) -> Cluster {
        let net = MemoryNetwork::new();
        let mut c = Cluster {
            net,
            stores: Vec::new(),
            dirs: Vec::new(),
            threshold,
        };
        for id in 1..=3u64 {
            c.dirs.push(tempfile::tempdir().unwrap());
            c.stores.push(None);
            c.boot(id);
        }
        c
    }

    fn boot(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let s = KvStore::start(
            config(id, self.dirs[i].path(), self.threshold),
            self.net.transport(id),
        )
        .unwrap();
        self.net.register(s.node().mailbox());
        self.stores[i] = Some(s);
    }

    /// Stops a replica and releases its files (as a crash would leave them durable).
    async fn stop(&mut self, id: u64) {
        let i = (id - 1) as usize;
        self.net.unregister(id);
        let s = self.stores[i].take().unwrap();
        s.shutdown().await;
        drop(s);
    }

    fn s(&self, id: u64) -> &KvStore {
        self.stores[(id - 1) as usize].as_ref().unwrap()
    }

    async fn leader(&self, among: &[u64]) -> u64 {
        wait_for(Duration::from_secs(10), || {
            among.iter().copied().find(|id| {
                self.s(*id).status().role == Role::Leader
                    && among.iter().all(|o| self.s(*o).status().leader_id == *id)
            })
        })
        .await
        .expect("a leader is elected")
    }

    /// Waits until every listed replica has applied the same index and holds the same
    /// state hash; returns the hashes last seen (equal unless the wait timed out).
    async fn converged(&self, ids: &[u64]) -> Vec<u32> {
        let mut last = Vec::new();
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            let applied: Vec<u64> = ids.iter().map(|i| self.s(*i).status().applied).collect();
            last = ids.iter().map(|i| self.s(*i).hash().unwrap()).collect();
            if applied.iter().all(|a| *a == applied[0]) && last.iter().all(|h| *h == last[0]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        lease: 0,
        prev_kv: false,
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// Puts with retries on retryable errors (a leader may be in the middle of changing).
async fn put_retrying(s: &KvStore, key: &str, value: &str) -> u64 {
    for _ in 0..200 {
        match s.put(put(key, value)).await {
            Ok(r) => return r.revision,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("put failed: {e}"),
        }
    }
    panic!("put never succeeded");
}

async fn value_at(s: &KvStore, key: &str, c: Consistency) -> Option<Vec<u8>> {
    s.range(&get(key), c)
        .await
        .unwrap()
        .kvs
        .first()
        .map(|kv| kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_replica_get_the_same_revisions_everywhere() {
    let c = Cluster::start(10_000);
    c.leader(&[1, 2, 3]).await;
    let mut revisions = Vec::new();
    for i in 0..30u64 {
        let via = i % 3 + 1;
        revisions.push(put_retrying(c.s(via), &format!("k{}", i % 7), &format!("v{i}")).await);
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions strictly increase: {revisions:?}"
    );
    let hashes = c.converged(&[1, 2, 3]).await;
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    for id in 1..=3 {
        let all = RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        };
        let r = c
            .s(id)
            .range(&all, Consistency::Serializable)
            .await
            .unwrap();
        assert_eq!(r.revision, *revisions.last().unwrap());
        assert_eq!(r.kvs.len(), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_a_write_acknowledged_elsewhere() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 {
            (followers[0], followers[1])
        } else {
            (leader, followers[0])
        };
        let v = format!("v{i}");
        put_retrying(c.s(writer), "x", &v).await;
        let seen = value_at(c.s(reader), "x", Consistency::Linearizable).await;
        assert_eq!(
            seen.as_deref(),
            Some(v.as_bytes()),
            "read {i} on {reader} after write on {writer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_racing_a_compare_and_swap_exactly_one_wins() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let other = (1..=3).find(|i| *i != leader).unwrap();
    for round in 0..10 {
        let rev = put_retrying(c.s(leader), "lock", "free").await;
        let cas = |who: &str| TxnRequest {
            compare: vec![Compare {
                key: b"lock".to_vec(),
                range_end: vec![],
                target: CompareTarget::ModRevision(rev),
                result: CompareResult::Equal,
            }],
            success: vec![RequestOp::Put(put("lock", who))],
            failure: vec![],
        };
        let (a, b) = tokio::join!(c.s(leader).txn(cas("a")), c.s(other).txn(cas("b")));
        let wins = [a.unwrap().succeeded, b.unwrap().succeeded];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {wins:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_sees_every_later_event_once_in_order() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(put_retrying(c.s(leader), &format!("w/{}", i % 3), &format!("{i}")).await);
    }
    let start = revs[4];
    let watcher_node = (1..=3).find(|i| *i != leader).unwrap();
    let mut w = c
        .s(watcher_node)
        .watch(b"w/".to_vec(), b"w0".to_vec(), start, true);
    // Writes keep landing while the watcher catches up.
    let writer = tokio::spawn({
        let s = Arc::clone(c.stores[(leader - 1) as usize].as_ref().unwrap());
        async move {
            let mut revs = Vec::new();
            for i in 10..30 {
                if i % 5 == 0 {
                    let r = s
                        .delete_range(DeleteRangeRequest {
                            key: b"w/1".to_vec(),
                            range_end: vec![],
                            prev_kv: false,
                        })
                        .await
                        .unwrap();
                    if r.deleted > 0 {
                        revs.push(r.revision);
                    }
                } else {
                    revs.push(
                        s.put(put(&format!("w/{}", i % 3), &format!("{i}")))
                            .await
                            .unwrap()
                            .revision,
                    );
                }
            }
            revs
        }
    });
    let later = writer.await.unwrap();
    let expected: Vec<u64> = revs
        .iter()
        .copied()
        .filter(|r| *r >= start)
        .chain(later)
        .collect();
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("events arrive")
            .unwrap();
        for e in batch {
            if e.kind == EventKind::Put && e.kv.version > 1 {
                assert!(
                    e.prev_kv.is_some(),
                    "prev_kv of an update at {}",
                    e.kv.mod_revision
                );
            }
            seen.push(e.kv.mod_revision);
        }
    }
    assert_eq!(seen, expected);
    // Nothing more arrives: no duplicates.
    assert!(tokio::time::timeout(Duration::from_millis(300), w.next())
        .await
        .is_err());

    let compact_at = expected[expected.len() - 3];
    c.s(leader).compact(compact_at).await.unwrap();
    wait_for(Duration::from_secs(10), || {
        (c.s(watcher_node).compact_revision() == compact_at).then_some(())
    })
    .await;
    let mut old = c
        .s(watcher_node)
        .watch(b"w/".to_vec(), b"w0".to_vec(), start, false);
    assert!(
        matches!(old.next().await, Err(StoreError::Compacted { compact_revision }) if compact_revision == compact_at)
    );
    let r = c
        .s(watcher_node)
        .range(
            &RangeRequest {
                key: b"w/0".to_vec(),
                revision: start,
                ..Default::default()
            },
            Consistency::Serializable,
        )
        .await;
    assert!(matches!(r, Err(StoreError::Compacted { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reports_progress_only_up_to_what_it_has_returned() {
    use std::sync::atomic::Ordering;
    let c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    put_retrying(c.s(leader), "other/0", "0").await;
    let node = (1..=3).find(|i| *i != leader).unwrap();
    wait_for(Duration::from_secs(10), || {
        (c.s(node).revision() == c.s(leader).revision()).then_some(())
    })
    .await;
    let now = c.s(node).revision();
    let mut w = c.s(node).watch(b"q/".to_vec(), b"q0".to_vec(), 0, false);
    let progress = w.progress();
    assert_eq!(progress.load(Ordering::Acquire), now);
    // A start in the future never claims more than the store has.
    let mut future = c
        .s(node)
        .watch(b"q/".to_vec(), b"q0".to_vec(), now + 100, false);
    assert_eq!(future.progress().load(Ordering::Acquire), now);
    let _ = tokio::time::timeout(Duration::from_millis(100), future.next()).await;
    assert!(future.progress().load(Ordering::Acquire) <= c.s(node).revision());
    let historical = c.s(node).watch(b"q/".to_vec(), b"q0".to_vec(), 1, false);
    assert_eq!(historical.progress().load(Ordering::Acquire), 0);

    // Writes elsewhere move a quiet watch's progress along.
    let mut last = 0;
    for i in 0..5 {
        last = put_retrying(c.s(leader), &format!("other/{i}"), "x").await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::Acquire) < last {
        assert!(
            std::time::Instant::now() < deadline,
            "progress stays behind"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), w.next())
                .await
                .is_err(),
            "no event of the watched range"
        );
    }
    assert_eq!(progress.load(Ordering::Acquire), last);

    // An event returned is covered only once the caller asks for more.
    let rev = put_retrying(c.s(leader), "q/a", "1").await;
    let got = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("the event arrives")
        .unwrap();
    assert_eq!(got[0].kv.mod_revision, rev);
    assert!(progress.load(Ordering::Acquire) < rev);
    let _ = tokio::time::timeout(Duration::from_millis(100), w.next()).await;
    assert!(progress.load(Ordering::Acquire) >= rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_keeps_every_acknowledged_write_and_rejoins() {
    let mut c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    for i in 0..40 {
        put_retrying(c.s(leader), &format!("r{i}"), &format!("{i}")).await;
    }
    // Restart a follower, then the leader.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    for victim in [follower, leader] {
        let applied_before = c.s(victim).status().applied;
        c.stop(victim).await;
        c.boot(victim);
        assert!(
            c.s(victim).status().applied >= applied_before,
            "applied index survives a restart"
        );
        // The leader applied every write it acknowledged: its own disk has them all.
        // The follower may have been outside the quorum: it catches up, then serves them.
        let consistency = if victim == leader {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        for i in 0..40 {
            let key = format!("r{i}");
            let mut v = None;
            for _ in 0..200 {
                match c.s(victim).range(&get(&key), consistency).await {
                    Ok(r) => {
                        v = r.kvs.first().map(|kv| kv.value.clone());
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            assert_eq!(
                v,
                Some(format!("{i}").into_bytes()),
                "{key} on restarted {victim}"
            );
        }
    }
    let leader = c.leader(&[1, 2, 3]).await;
    put_retrying(c.s(leader), "after", "restart").await;
    let hashes = c.converged(&[1, 2, 3]).await;
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_catches_up_by_snapshot_with_identical_state() {
    let mut c = Cluster::start(25);
    let leader = c.leader(&[1, 2, 3]).await;
    let down = (1..=3).find(|i| *i != leader).unwrap();
    c.stop(down).await;
    let rest: Vec<u64> = (1..=3).filter(|i| *i != down).collect();
    let leader = c.leader(&rest).await;
    for i in 0..150 {
        put_retrying(c.s(leader), &format!("s{}", i % 20), &format!("{i}")).await;
    }
    c.s(leader)
        .compact(c.s(leader).revision() - 10)
        .await
        .unwrap();
    assert!(
        c.s(leader).status().first_index > 100,
        "the log was compacted"
    );
    c.boot(down);
    let hashes = c.converged(&[1, 2, 3]).await;
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    assert_eq!(c.s(down).revision(), c.s(leader).revision());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_never_shows_an_uncommitted_write() {
    let c = Cluster::start(10_000);
    let old = c.leader(&[1, 2, 3]).await;
    put_retrying(c.s(old), "m", "committed").await;
    c.net.isolate(old);
    let w = c.s(old).put(put("m", "uncommitted")).await;
    assert!(
        w.is_err(),
        "a write on an isolated leader cannot be acknowledged: {w:?}"
    );
    let r = c.s(old).range(&get("m"), Consistency::Linearizable).await;
    assert!(
        r.is_err(),
        "a linearizable read in the minority fails: {r:?}"
    );
    // Even its local state never applied the uncommitted write.
    assert_eq!(
        value_at(c.s(old), "m", Consistency::Serializable).await,
        Some(b"committed".to_vec())
    );
    c.net.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_on_every_replica_and_keep_alive_holds_it() {
    let c = Cluster::start(10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let (short, _) = c.s(leader).lease_grant(0, 1).await.unwrap();
    let (kept, _) = c.s(leader).lease_grant(0, 2).await.unwrap();
    let mut p = put("ephemeral", "x");
    p.lease = short;
    c.s(leader).put(p).await.unwrap();
    let mut p = put("kept", "y");
    p.lease = kept;
    c.s(leader).put(p).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.s(follower).lease_keep_alive(kept).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in 1..=3 {
        let gone = wait_for(Duration::from_secs(5), || {
            c.s(id)
                .range_local(&get("ephemeral"))
                .unwrap()
                .kvs
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(gone.is_some(), "expired lease's key deleted on {id}");
        assert_eq!(
            value_at(c.s(id), "kept", Consistency::Serializable).await,
            Some(b"y".to_vec())
        );
    }
    let r = c.s(leader).lease_keep_alive(short).await;
    assert!(
        matches!(
            r,
            Err(StoreError::Command(
                trireme_mvcc::CommandError::LeaseNotFound(_)
            ))
        ),
        "{r:?}"
    );
}
