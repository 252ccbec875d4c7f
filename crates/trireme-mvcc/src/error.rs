//! Error types, one per kind of operation.
//!
//! [`StorageError`] is fail-stop: the node must stop. [`CommandError`] is an expected,
//! deterministic outcome of a command: every replica reaches the same one, and the
//! command wrote nothing.

use serde::{Deserialize, Serialize};

/// A fatal storage failure: sled, the file system, or a record that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl StorageError {
    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StorageError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Most ops in each list of a txn, as in etcd (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A command that was refused; it wrote nothing but its entry counts as applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("key is empty")]
    EmptyKey,
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    #[error("lease {0} already exists")]
    LeaseExists(i64),
    #[error("lease id must not be 0 and ttl must be > 0 (id {id}, ttl {ttl_seconds})")]
    InvalidLease { id: i64, ttl_seconds: i64 },
    #[error("revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: u64 },
    #[error("revision is in the future (current revision {current})")]
    FutureRevision { current: u64 },
    #[error("a key is written twice in one txn")]
    DuplicateKeyInTxn,
    #[error("too many operations in txn (max {MAX_TXN_OPS})")]
    TooManyOps,
    #[error("entry already applied")]
    AlreadyApplied,
}

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: u64 },
    #[error("revision is in the future (current revision {current})")]
    FutureRevision { current: u64 },
    #[error("key is empty")]
    EmptyKey,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a snapshot could not be restored. Whatever was written has been removed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("target directory {0} exists and is not empty")]
    DirNotEmpty(std::path::PathBuf),
    #[error("snapshot stream is truncated")]
    Truncated,
    #[error(
        "snapshot checksum mismatch (stream says {expected:#010x}, data gives {actual:#010x})"
    )]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot is malformed: {0}")]
    Malformed(String),
    #[error("reading snapshot stream: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
