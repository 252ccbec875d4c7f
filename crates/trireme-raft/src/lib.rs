//! # trireme-raft: the consensus node
//!
//! Wraps raft-rs's `RawNode` into a node that persists its log durably in a write-ahead file, batches
//! proposals (one fsync per Ready), matches results to callers by request id, serves
//! linearizable reads through ReadIndex, changes membership with ConfChangeV2, and
//! compacts its log behind snapshots that travel as files.
//!
//! ## Layout
//! - `member`: [`member_id`], the Raft id of a replica name.
//! - `node`: [`NodeConfig`], [`NodeHandle`] (propose, read_index, membership, status),
//!   [`Mailbox`] (where the transport delivers inbound traffic).
//! - `driver`: the one thread that owns the `RawNode`; the Ready loop.
//! - `runtime`: [`RaftRuntime`], the single-threaded tokio runtime that thread drives
//!   (a transport's tasks can run on it), and the queues that wake the loop.
//!   `driver::membership`: the membership rules it adds to raft-rs (one change at a
//!   time, no self-removal of a leader, promotion only in sync, removal detection).
//! - `log_store`: [`LogStore`], raft-rs's `Storage`: a write-ahead file plus the entries in memory.
//! - `state_machine`: the [`StateMachine`] trait the node applies entries to.
//! - `transport`: the [`Transport`] trait the node sends through.
//! - `memory`: an in-memory [`memory::MemoryNetwork`] that can drop, delay and
//!   partition, for in-process cluster tests.
//! - `durable`: atomic file replace, directory fsync.
//! - `testing`: [`testing::RecordingSm`] and [`testing::wait_for`] for in-process tests.
//!
//! ## Boundaries
//! Generic over the transport and the state machine; knows nothing of gRPC, TLS, HTTP
//! or the MVCC data model. raft-rs's protobuf types appear in the `Transport` API
//! (the transport encodes them). The Raft thread runs its loop on its own
//! single-threaded runtime; the handle's futures only await oneshot replies.

// raft-rs's protobuf messages have private fields besides the public ones: they are
// built with `default()` and assignments, as raft-rs itself does.
#![allow(clippy::field_reassign_with_default)]

mod driver;
pub mod durable;
mod error;
mod log_store;
mod logger;
mod member;
pub mod memory;
mod node;
mod runtime;
mod state_machine;
pub mod testing;
mod transport;

pub use driver::{
    decode_descriptor, encode_descriptor, CrcWriter, FAST_TICK, INITIAL_INDEX, INITIAL_TERM,
};
pub use error::{ProposeError, ReadError, StartError, StorageError, UncertainReason};
pub use log_store::LogStore;
pub use member::member_id;
pub use node::{Bootstrap, Mailbox, NodeConfig, NodeHandle, NodeStatus, Role};
pub use runtime::RaftRuntime;
pub use state_machine::{
    decode_conf_state, encode_conf_state, AppliedState, ApplyEntry, BackgroundSync, StateMachine,
};
pub use transport::{SnapshotFile, Transport};

/// raft-rs's message types, for transports.
pub use raft::eraftpb;
