//! What can go wrong with a store operation, by kind: the consensus layer could not
//! commit or confirm it (retryable), the command was refused (expected, deterministic),
//! or the read could not be served at that revision.

use trireme_mvcc::CommandError;
use trireme_raft::{ProposeError, ReadError, UncertainReason};

use crate::member::MemberError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write was not (or not known to be) committed; see [`ProposeError`].
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// A linearizable read could not be confirmed by the leader.
    #[error(transparent)]
    ReadIndex(#[from] ReadError),
    /// The command was applied and refused, identically on every replica.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A membership request that cannot be done (unknown member, name taken...).
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: u64 },
    #[error("revision is in the future (current revision {current})")]
    FutureRevision { current: u64 },
    #[error("key is empty")]
    EmptyKey,
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the replicated entry could not be decoded: {0}")]
    Malformed(String),
    /// A fail-stop storage failure on this replica.
    #[error("storage: {0}")]
    Storage(String),
}

impl StoreError {
    /// True when the request failed because this replica was removed from the
    /// cluster (before it was proposed, or while it was pending).
    pub fn is_removed(&self) -> bool {
        matches!(
            self,
            StoreError::Propose(
                ProposeError::Removed | ProposeError::Uncertain(UncertainReason::Removed)
            ) | StoreError::ReadIndex(ReadError::Removed)
        )
    }

    /// True when the same request may succeed if sent again (possibly elsewhere).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Propose(e) => e.is_retryable(),
            StoreError::ReadIndex(e) => !matches!(e, ReadError::Stopped | ReadError::Removed),
            _ => false,
        }
    }
}

impl From<trireme_mvcc::ReadError> for StoreError {
    fn from(e: trireme_mvcc::ReadError) -> Self {
        match e {
            trireme_mvcc::ReadError::Compacted { compact_revision } => {
                StoreError::Compacted { compact_revision }
            }
            trireme_mvcc::ReadError::FutureRevision { current } => {
                StoreError::FutureRevision { current }
            }
            trireme_mvcc::ReadError::EmptyKey => StoreError::EmptyKey,
            trireme_mvcc::ReadError::Storage(e) => StoreError::Storage(e.to_string()),
        }
    }
}
