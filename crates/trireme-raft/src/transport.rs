//! What the node needs from the network, and how the network talks back.

use std::path::PathBuf;

use raft::eraftpb::Message;

use crate::node::Mailbox;

/// A snapshot image on disk, ready to be streamed to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    /// Byte length of the file.
    pub size: u64,
    /// crc32 of the whole file; the receiver checks it before handing the file over.
    pub crc32: u32,
}

/// Sends Raft traffic to peers. Implementations never block the caller: a slow or
/// dead peer's messages are dropped (Raft retries) and reported as unreachable.
pub trait Transport: Send + Sync + 'static {
    /// Sends messages, each to its `to`. Called from the Raft thread: must not block.
    fn send(&self, msgs: Vec<Message>, feedback: &Mailbox);
    /// Streams a snapshot file to `msg.to` in chunks, then delivers `msg`; reports the
    /// outcome through `feedback.snapshot_done` (and failures to reach a peer through
    /// `feedback.unreachable`). Must not block the caller.
    fn send_snapshot(&self, msg: Message, file: SnapshotFile, feedback: Mailbox);
}
