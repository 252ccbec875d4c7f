//! `trireme-mvcc`: the MVCC key-value state machine of a Trireme replica, on sled,
//! with the etcd v3 data model.
//!
//! It owns everything a committed command does to the data: one global revision,
//! per-key versions, ranges (current and historical), transactions, leases (grant,
//! attach, revoke: not expiry), the event history that watches replay, compaction,
//! a consistency hash, and snapshots. The Raft layer hands it committed entries with
//! [`Store::apply_batch`]; API threads read concurrently.
//!
//! It must not depend on Raft, the network, tokio, HTTP or JSON: its only I/O is sled
//! and the files under its own directory.
//!
//! # Layout
//! - `types`: the data model: [`Command`], [`CommandResult`], requests and responses,
//!   [`KeyValue`], [`Event`], [`ApplyEntry`], [`AppliedState`], [`ClusterWrite`],
//!   [`prefix_end`].
//! - `error`: [`StorageError`] (fatal), [`CommandError`] (expected, deterministic),
//!   [`ReadError`], [`SnapshotError`].
//! - `keys`: the on-disk layout of the one sled tree (record prefixes, key encoding):
//!   every key version is one record keyed by its revision, as in etcd's backend.
//! - `index`: the in-memory key index (key -> its versions' revisions), rebuilt from
//!   the revision records at open, like etcd's `treeIndex`.
//! - `view`: the tree and the index seen through the pending writes of the apply
//!   group being built.
//! - `read`: ranges, history reads, events, leases over a view.
//! - `apply`: executes commands into one group of writes; `txn`: compares and txn ops.
//! - `store`: [`Store`], the shared handle: open, apply, reads, cluster records,
//!   hash, sync.
//! - `snapshot`: [`Store::write_snapshot`] and [`Store::restore`].
//!
//! # Invariants
//! - One apply group is atomic, together with its [`AppliedState`]: one sled batch, or,
//!   when it only appends revision records, plain inserts committed by the meta-state
//!   record written last (`open` drops records above the recovered revision);
//!   re-applying an index is a no-op.
//! - Readers never see half an apply group: the batch is written, and the index takes
//!   its changes, under one write lock.
//! - The index lists exactly the `r` records in the tree: it changes only together
//!   with them, and is rebuilt from them at open.
//! - A command refused with a [`CommandError`] writes nothing, on every replica alike.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod apply;
mod error;
mod index;
mod keys;
mod read;
mod snapshot;
mod store;
mod txn;
mod types;
mod view;

#[cfg(test)]
mod tests;

pub use error::{CommandError, ReadError, SnapshotError, StorageError, MAX_TXN_OPS};

/// The longest lease TTL a client may ask for, in seconds (etcd's `MaxLeaseTTL`, about
/// 285 years). Checked by the API, not at apply: entries already in logs apply as
/// they did when they were written.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
pub use store::{ClusterRecord, Store};
pub use types::{
    prefix_end, AppliedState, ApplyEntry, ApplyResult, ClusterWrite, Command, CommandResult,
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, LeaseInfo, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, SnapshotInfo, TxnRequest, TxnResponse,
};
