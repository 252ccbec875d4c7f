//! What one Raft entry carries: an MVCC command, a lease keep-alive, or a write to
//! the member table.

use serde::{Deserialize, Serialize};
use trireme_mvcc::{Command, CommandError, CommandResult};

use crate::member::MemberAttrs;

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
    // New variants go at the end: postcard encodes the variant's position, and
    // entries already in logs must keep decoding.
    /// Stores the attributes of a member about to be added (before its membership
    /// change is proposed). Unconditional.
    MemberAdd {
        id: u64,
        attrs: MemberAttrs,
    },
    /// A member's own attributes; refused (`ApplyFailure::NotMember`) unless `id` is
    /// in the configuration when the entry is applied.
    MemberPublish {
        id: u64,
        attrs: MemberAttrs,
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
    LeaseKeepAlive {
        id: i64,
        ttl_seconds: i64,
    },
    /// A member table write was applied.
    Member {
        id: u64,
    },
}

/// Why an applied entry did nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("undecodable entry: {0}")]
    Malformed(String),
    /// A publish by a replica that is not a member.
    #[error("member {0:x} is not in the cluster")]
    NotMember(u64),
}

/// What a proposer receives per entry.
pub type ApplyOutput = Result<Applied, ApplyFailure>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Entries already in logs were encoded with the first variants: their bytes
    /// must keep meaning the same.
    #[test]
    fn existing_variants_keep_their_encoding() {
        let ka = Proposal::LeaseKeepAlive { id: 5 };
        assert_eq!(ka.encode()[0], 1);
        assert_eq!(Proposal::decode(&ka.encode()).unwrap(), ka);
        let m = Proposal::Mvcc(Command::Compact { revision: 3 });
        assert_eq!(m.encode()[0], 0);
        let add = Proposal::MemberAdd {
            id: 9,
            attrs: MemberAttrs {
                name: "replica-4".into(),
                peer_urls: vec!["https://127.0.0.1:7004".into()],
                client_urls: vec![],
            },
        };
        assert_eq!(Proposal::decode(&add.encode()).unwrap(), add);
    }
}
