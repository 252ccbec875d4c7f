//! # trireme-store: the replicated key-value store of one replica
//!
//! Puts the MVCC state machine (`trireme-mvcc`) under the Raft node (`trireme-raft`)
//! and gives the API layer one handle, [`KvStore`]: writes are proposals that return
//! once applied on this replica, reads are linearizable through ReadIndex unless
//! marked serializable, watches replay the event history, and the leader expires
//! leases by proposing revokes.
//!
//! ## Layout
//! - `store`: [`KvStore`], [`StoreConfig`], [`Consistency`].
//! - `machine`: [`MvccMachine`], the `StateMachine` implementation and its
//!   crash-safe swap of the whole store when a snapshot is installed.
//! - `proposal`: what a Raft entry carries ([`Proposal`]) and what applying it gives.
//! - `member`: the replicated member table ([`Member`], [`MemberAttrs`],
//!   [`MemberError`]): names and URLs of the members, in the MVCC store's cluster
//!   records.
//! - `membership`: the member operations of [`KvStore`] (list, add, remove, promote,
//!   publish).
//! - `watch`: [`Watcher`].
//! - `lessor`: lease deadlines.
//! - `error`: [`StoreError`].
//!
//! ## Boundaries
//! Knows nothing of HTTP, JSON, gRPC or TLS; takes any `trireme_raft::Transport`.

mod error;
mod lessor;
mod machine;
mod member;
mod membership;
mod proposal;
mod store;
mod watch;

pub use error::StoreError;
pub use machine::{MachineError, MvccMachine};
pub use member::{check_name, check_peer_url, Member, MemberAttrs, MemberError};
pub use proposal::{Applied, ApplyFailure, ApplyOutput, Proposal};
pub use store::{Consistency, KvStore, StoreConfig};
pub use watch::Watcher;
