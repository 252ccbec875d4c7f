//! The periodic history compaction kube-apiserver runs: one compaction per interval
//! across replicas, never at the first interval, keeping one interval of history.
#![allow(clippy::unwrap_used)]

use trireme_api::kube::{compact_once, CompactorState, COMPACT_REV_KEY};
use trireme_mvcc::{PutRequest, RangeRequest};
use trireme_store::{Consistency, KvStore, StoreError};

mod common;
use common::fixture;

async fn put(store: &KvStore, key: &str, value: &str) -> u64 {
    store
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
        })
        .await
        .unwrap()
        .revision
}

async fn read_at(store: &KvStore, key: &str, revision: u64) -> Result<Vec<u8>, StoreError> {
    let req = RangeRequest {
        key: key.into(),
        revision,
        ..Default::default()
    };
    let r = store.range(&req, Consistency::Serializable).await?;
    Ok(r.kvs.first().map(|kv| kv.value.clone()).unwrap_or_default())
}

fn compact_rev_key(store: &KvStore) -> (u64, String) {
    let r = store
        .range_local(&RangeRequest {
            key: COMPACT_REV_KEY.to_vec(),
            ..Default::default()
        })
        .unwrap();
    let kv = &r.kvs[0];
    (kv.version, String::from_utf8(kv.value.clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_compacts_per_interval_to_the_revision_seen_one_interval_earlier() {
    let f = fixture().await;
    let store = &*f.state.store;
    let first = put(store, "/registry/configmaps/default/a", "1").await;

    // Interval 1: replica A takes the turn and only records where history starts;
    // replica B, one step behind on the key, follows it.
    let (a, r) = compact_once(store, CompactorState::default()).await;
    assert_eq!(
        r.unwrap(),
        None,
        "nothing is compacted at the first interval"
    );
    assert_eq!(a.version, 1);
    let seen = a.revision;
    assert!(seen > first);
    let (b, r) = compact_once(store, CompactorState::default()).await;
    assert_eq!(r.unwrap(), None, "the key moved: B does not compact");
    assert_eq!(b.version, 1);
    assert_eq!(compact_rev_key(store), (1, "0".to_string()));

    let second = put(store, "/registry/configmaps/default/a", "2").await;

    // Interval 2: A compacts to what it saw at interval 1; B, now current, would have
    // taken the turn instead, but A was first.
    let (a, r) = compact_once(store, a).await;
    assert_eq!(r.unwrap(), Some(seen));
    assert_eq!(a.version, 2);
    let (b, r) = compact_once(store, b).await;
    assert_eq!(r.unwrap(), None, "one compaction per interval");
    assert_eq!(b.version, 2);
    assert_eq!(compact_rev_key(store), (2, seen.to_string()));

    // History from the compaction point on is kept; older reads are refused.
    assert!(matches!(
        read_at(store, "/registry/configmaps/default/a", first).await,
        Err(StoreError::Compacted { compact_revision }) if compact_revision == seen
    ));
    assert_eq!(
        read_at(store, "/registry/configmaps/default/a", seen)
            .await
            .unwrap(),
        b"1"
    );
    assert_eq!(
        read_at(store, "/registry/configmaps/default/a", second)
            .await
            .unwrap(),
        b"2"
    );

    // Interval 3: B holds the current version now and takes the turn, compacting to
    // the revision it saw at interval 2.
    let b_seen = b.revision;
    put(store, "/registry/configmaps/default/a", "3").await;
    let (b, r) = compact_once(store, b).await;
    assert_eq!(r.unwrap(), Some(b_seen));
    assert_eq!(b.version, 3);

    // A client compacted further in between: the next turn has nothing to drop.
    put(store, "/registry/configmaps/default/a", "4").await;
    let latest = put(store, "/registry/configmaps/default/a", "5").await;
    store.compact(latest).await.unwrap();
    let (_, r) = compact_once(store, b).await;
    assert_eq!(r.unwrap(), None);
}
