//! Replicas converge: after healing, every replica reports the same revision and the
//! same consistency hash.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What one replica reported after the cluster healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    pub replica: u64,
    pub revision: u64,
    /// The store's consistency hash at `revision`.
    pub hash: u64,
}

/// A replica that disagrees with the reference state (the most common one; on a tie,
/// the one with the highest revision, then the lowest hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Divergence {
    #[error("replica {replica} is at revision {revision}, the others at {expected_revision}")]
    Revision {
        replica: u64,
        revision: u64,
        expected_revision: u64,
    },
    #[error(
        "replica {replica} has hash {hash:#x} at revision {revision}, the others {expected_hash:#x}"
    )]
    Hash {
        replica: u64,
        revision: u64,
        hash: u64,
        expected_hash: u64,
    },
}

/// Returns every replica that disagrees with the reference state.
pub fn check_convergence(replicas: &[ReplicaState]) -> Vec<Divergence> {
    let mut counts: HashMap<(u64, u64), usize> = HashMap::new();
    for r in replicas {
        *counts.entry((r.revision, r.hash)).or_default() += 1;
    }
    let Some((revision, hash)) = counts
        .into_iter()
        .max_by_key(|&((revision, hash), n)| (n, revision, std::cmp::Reverse(hash)))
        .map(|(state, _)| state)
    else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter(|r| (r.revision, r.hash) != (revision, hash))
        .map(|r| {
            if r.revision == revision {
                Divergence::Hash {
                    replica: r.replica,
                    revision,
                    hash: r.hash,
                    expected_hash: hash,
                }
            } else {
                Divergence::Revision {
                    replica: r.replica,
                    revision: r.revision,
                    expected_revision: revision,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(replica: u64, revision: u64, hash: u64) -> ReplicaState {
        ReplicaState {
            replica,
            revision,
            hash,
        }
    }

    #[test]
    fn agreeing_replicas_pass() {
        assert_eq!(
            check_convergence(&[r(1, 9, 0xab), r(2, 9, 0xab), r(3, 9, 0xab)]),
            vec![]
        );
        assert_eq!(check_convergence(&[]), vec![]);
    }

    #[test]
    fn disagreeing_replicas_are_named() {
        let d = check_convergence(&[r(1, 9, 0xab), r(2, 9, 0xcd), r(3, 9, 0xab)]);
        assert_eq!(
            d,
            vec![Divergence::Hash {
                replica: 2,
                revision: 9,
                hash: 0xcd,
                expected_hash: 0xab
            }]
        );
        assert_eq!(
            d[0].to_string(),
            "replica 2 has hash 0xcd at revision 9, the others 0xab"
        );
        let d = check_convergence(&[r(1, 9, 0xab), r(2, 9, 0xab), r(3, 7, 0x11)]);
        assert_eq!(
            d,
            vec![Divergence::Revision {
                replica: 3,
                revision: 7,
                expected_revision: 9
            }]
        );
        // No majority: the highest revision is the reference; the others are named.
        let d = check_convergence(&[r(1, 9, 1), r(2, 8, 1), r(3, 7, 1)]);
        assert_eq!(d.len(), 2);
    }
}
