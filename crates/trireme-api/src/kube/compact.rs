//! The history compactor kube-apiserver runs against etcd (`--etcd-compaction-interval`,
//! 5 minutes by default), run by every replica's API server.
//!
//! Each interval, every replica tries a compare-and-swap on [`COMPACT_REV_KEY`]: the
//! one whose last seen version of the key is still current bumps it and compacts the
//! store to the revision it saw one interval earlier; the others adopt the key's
//! version and the current revision. So the cluster compacts once per interval, never
//! at its first one, and keeps at least one interval of history for watches and
//! `resourceVersion` reads that resume (older ones get 410 Gone).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trireme_mvcc::{
    CommandError, Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest,
};
use trireme_store::{KvStore, StoreError};

/// The key kube-apiserver keeps its compaction turns in (outside `/registry`).
pub const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

/// What one replica's compactor carries from one interval to the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactorState {
    /// The version of [`COMPACT_REV_KEY`] this replica last saw (0: absent).
    pub version: u64,
    /// The store's revision when it saw it: what the next compaction keeps from.
    pub revision: u64,
}

/// One interval's turn. Returns the state for the next turn (it moves on even when
/// the compaction itself fails, as kube-apiserver's does) and the revision compacted
/// to, if this replica compacted.
pub async fn compact_once(
    store: &KvStore,
    state: CompactorState,
) -> (CompactorState, Result<Option<u64>, StoreError>) {
    let key = COMPACT_REV_KEY.to_vec();
    let txn = TxnRequest {
        compare: vec![Compare {
            key: key.clone(),
            range_end: Vec::new(),
            target: CompareTarget::Version(state.version),
            result: CompareResult::Equal,
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key.clone(),
            value: state.revision.to_string().into_bytes(),
            lease: 0,
            prev_kv: false,
        })],
        failure: vec![RequestOp::Range(RangeRequest {
            key,
            ..Default::default()
        })],
    };
    let resp = match store.txn(txn).await {
        Ok(r) => r,
        Err(e) => return (state, Err(e)),
    };
    if !resp.succeeded {
        // Another replica took this turn: follow the key from where it is now.
        let version = match resp.responses.first() {
            Some(ResponseOp::Range(r)) => r.kvs.first().map_or(0, |kv| kv.version),
            _ => 0,
        };
        let next = CompactorState {
            version,
            revision: resp.revision,
        };
        return (next, Ok(None));
    }
    let next = CompactorState {
        version: state.version + 1,
        revision: resp.revision,
    };
    if state.revision == 0 {
        // The first turn only records where history starts.
        return (next, Ok(None));
    }
    match store.compact(state.revision).await {
        Ok(_) => (next, Ok(Some(state.revision))),
        // Compacted past it already (by a client): nothing to do.
        Err(StoreError::Command(CommandError::Compacted { .. })) => (next, Ok(None)),
        Err(e) => (next, Err(e)),
    }
}

/// Runs [`compact_once`] every `interval` until `stop` turns true.
pub async fn run_compactor(
    store: Arc<KvStore>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = CompactorState::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (next, result) = compact_once(&store, state).await;
        state = next;
        match result {
            Ok(Some(revision)) => {
                tracing::info!(revision, "compacted the store's history")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("history compaction: {e}"),
        }
    }
}
