//! The replicated state machine as the node sees it.

use std::io::{Read, Write};

use protobuf::Message as _;
use raft::eraftpb::ConfState;

/// What the state machine has applied, persisted atomically with the state it produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Index of the last applied entry.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The membership as of `index`, encoded with [`encode_conf_state`]; empty for a
    /// node that was never bootstrapped nor given a snapshot.
    pub conf_state: Vec<u8>,
}

/// One committed entry handed to the state machine.
#[derive(Debug, Clone)]
pub struct ApplyEntry {
    pub index: u64,
    pub term: u64,
    /// The proposal's payload; `None` for an empty entry or a membership change.
    pub data: Option<Vec<u8>>,
    /// The new membership after a conf change entry, to persist with `index`.
    pub conf_state: Option<Vec<u8>>,
}

/// See [`StateMachine::background_sync`]; the error is the message of a fail-stop error.
pub type BackgroundSync = Box<dyn FnMut() -> Result<(), String> + Send>;

/// A deterministic state machine driven by committed entries.
///
/// Contract:
/// - `apply` applies the entries in order and persists the new [`AppliedState`]
///   (the last entry's index and term, and the last `conf_state` given) *in the same
///   atomic write* as the changes; an entry at or below the applied index is a no-op.
///   It returns one output per entry. It need not fsync: the log is the durable copy
///   until [`StateMachine::sync`] returns, which the node calls before compacting the log.
/// - Every error it returns is fail-stop: the node stops.
/// - `write_snapshot` writes a consistent image of everything applied so far;
///   `restore` replaces the whole state by such an image, durably and atomically (a
///   crash leaves the old state or the new one), before returning.
pub trait StateMachine: Send + 'static {
    /// What a proposal's waiter receives once its entry is applied.
    type Output: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    fn applied(&self) -> AppliedState;
    fn apply(&mut self, entries: Vec<ApplyEntry>) -> Result<Vec<Self::Output>, Self::Error>;
    /// `apply`, handing the outputs to `answer` as early as the machine can: once they
    /// are decided and any read that starts after `answer` returns would see them,
    /// possibly before `apply`'s own writes are done. The node answers the proposals'
    /// waiters from `answer`. It is called once if this returns `Ok`; after an `Err`
    /// the node stops whether it was called or not. The default answers after `apply`.
    fn apply_answering(
        &mut self,
        entries: Vec<ApplyEntry>,
        answer: &mut dyn FnMut(Vec<Self::Output>),
    ) -> Result<(), Self::Error> {
        let outputs = self.apply(entries)?;
        answer(outputs);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), Self::Error>;
    /// A function that does what [`StateMachine::sync`] does from another thread, while
    /// `apply` goes on: everything applied before it was called is durable when it
    /// returns `Ok`. The node syncs through it before compacting the log, so that the
    /// Raft loop does not wait for the disk (`None`, the default: it calls `sync`).
    /// It is never running while `restore` runs.
    fn background_sync(&self) -> Option<BackgroundSync> {
        None
    }
    fn write_snapshot(&mut self, w: &mut dyn Write) -> Result<AppliedState, Self::Error>;
    fn restore(&mut self, r: &mut dyn Read) -> Result<AppliedState, Self::Error>;
}

/// Encodes a membership for [`AppliedState::conf_state`].
pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    // Encoding a message held in memory cannot fail except on a size overflow.
    cs.write_to_bytes().unwrap_or_default()
}

/// Decodes [`AppliedState::conf_state`]; empty bytes are the empty membership.
pub fn decode_conf_state(bytes: &[u8]) -> Result<ConfState, protobuf::ProtobufError> {
    ConfState::parse_from_bytes(bytes)
}
