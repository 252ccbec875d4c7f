//! Narrow error types, one per operation. Expected, retryable outcomes (`NotLeader`,
//! `Timeout`, ...) are kept apart from fail-stop ones (`StorageError`), which stop the node.

use std::io;

/// A fail-stop storage error: the node stops, it never retries and carries on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft log I/O: {0}")]
    Io(#[source] io::Error),
    #[error("raft log corrupt: {0}")]
    Corrupt(String),
}

/// Why a proposal failed. Every variant is retryable except `Stopped`, `Removed` and
/// `InvalidConfChange`.
///
/// `Dropped` and `Busy` mean the entry was certainly not committed. `Uncertain` means it
/// may still commit (it reached a leader that then lost leadership, or its deadline
/// passed): the caller must not assume either outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error(
        "proposal dropped: no leader is known or the leader is transferring leadership; retry"
    )]
    Dropped,
    #[error("too many pending requests; retry later")]
    Busy,
    #[error("outcome unknown: {0}; the request may or may not have been applied")]
    Uncertain(UncertainReason),
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// The leader refused a membership change because another one is not applied
    /// yet (Raft allows one at a time). Nothing was committed; retry shortly.
    #[error("a membership change is already in progress; retry")]
    ConfChangePending,
    /// The leader refused to promote a learner that is not caught up with its log:
    /// a lagging voter could cost the cluster its quorum. Retry once it caught up.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The leader refused a membership change after which fewer voters than a quorum
    /// would be up (etcd's strict reconfiguration check). Retry once they are back.
    #[error("unhealthy cluster: fewer voters than a quorum would be up after this membership change; retry once they are back")]
    NotEnoughActive,
    #[error("the raft node has stopped")]
    Stopped,
    /// This node was removed from the cluster; nothing was proposed. Another
    /// replica may take the request.
    #[error("this replica was removed from the cluster")]
    Removed,
}

impl ProposeError {
    /// True when the caller may retry the same request on this node.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProposeError::Stopped | ProposeError::Removed | ProposeError::InvalidConfChange(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncertainReason {
    /// The term changed while the proposal was pending.
    LeadershipChanged,
    /// The proposal's deadline passed before it was applied here.
    Timeout,
    /// This node learned that it was removed from the cluster while the proposal
    /// was pending; it will not see the entry applied.
    Removed,
}

impl std::fmt::Display for UncertainReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UncertainReason::LeadershipChanged => f.write_str("leadership changed"),
            UncertainReason::Timeout => f.write_str("request timed out"),
            UncertainReason::Removed => f.write_str("this replica was removed from the cluster"),
        }
    }
}

/// Why a linearizable read could not be served. All retryable but `Stopped` and
/// `Removed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is known; retry")]
    NoLeader,
    #[error("leadership changed during the read; retry")]
    LeadershipChanged,
    #[error("read index not confirmed by a quorum in time; retry")]
    Timeout,
    #[error("too many pending requests; retry later")]
    Busy,
    #[error("the raft node has stopped")]
    Stopped,
    /// This node was removed from the cluster: it cannot confirm a read index.
    #[error("this replica was removed from the cluster")]
    Removed,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("state machine: {0}")]
    StateMachine(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("spawn the raft thread: {0}")]
    Spawn(#[source] io::Error),
}
