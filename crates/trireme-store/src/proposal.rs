//! What one Raft entry carries: an MVCC command, or a lease keep-alive.

use serde::{Deserialize, Serialize};
use trireme_mvcc::{Command, CommandError, CommandResult};

/// The payload of a Raft entry proposed by the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    Mvcc(Command),
    /// Keep-alives are replicated so that every replica's lessor, not only the
    /// leader's, knows when each lease was last renewed: a new leader expires leases
    /// on the same schedule the old one would have.
    LeaseKeepAlive {
        id: i64,
    },
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        // postcard cannot fail on these types except on allocation failure.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The result of applying one entry, handed to the replica that proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Mvcc(CommandResult),
    LeaseKeepAlive { id: i64, ttl_seconds: i64 },
}

/// Why an applied entry did nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("undecodable entry: {0}")]
    Malformed(String),
}

/// What a proposer receives per entry.
pub type ApplyOutput = Result<Applied, ApplyFailure>;
