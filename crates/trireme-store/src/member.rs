//! The member table: each member's name, peer URLs and client URLs, replicated with
//! the data.
//!
//! Raft knows members only by id (`trireme_raft::member_id` of the name). The table
//! adds what a replica needs to reach them and what operators want to see. It lives
//! in the MVCC store's cluster records (`trireme_mvcc::ClusterWrite`), so it is
//! written atomically with the applied index, travels in snapshots, and is never seen
//! by range requests on user keys.
//!
//! Who writes it, all through Raft (`Proposal::MemberAdd` / `Proposal::MemberPublish`):
//! - `member add` stores the new member's name and peer URLs *before* it proposes the
//!   membership change, so every replica can reach the new member by the time it is
//!   one;
//! - every replica publishes its own name, peer URL and client URL once it is a
//!   member, whenever the stored ones differ (a publish by a non-member is refused,
//!   identically everywhere);
//! - applying a membership change that removes a member deletes its record in the
//!   same batch.
//!
//! The list of members is the applied configuration (voters and learners) joined
//! with the table: a record without a member (an add whose membership change never
//! happened) is not listed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trireme_raft::eraftpb::ConfState;

/// Cluster-record key prefix of member records; the id follows, big-endian.
const MEMBER_PREFIX: &[u8] = b"member/";

/// What the table stores per member id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAttrs {
    /// The replica name: the CN of its peer certificate; its id derives from it.
    pub name: String,
    /// Where its peer port is reached (`https://host:port`).
    pub peer_urls: Vec<String>,
    /// Where its API is reached; empty until the replica published them.
    pub client_urls: Vec<String>,
}

/// One member, as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty if nothing is stored for this id (a founding member that has not
    /// published yet).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A membership request refused before anything was proposed (or a publish refused
/// by the state machine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("member {0:x} not found")]
    NotFound(u64),
    #[error("member {name} (id {id:x}) already exists")]
    AlreadyExists { id: u64, name: String },
    #[error("peer URL {url} is already used by member {name}")]
    PeerUrlExists { url: String, name: String },
    #[error("member {0:x} is not a learner: only a learner can be promoted")]
    NotLearner(u64),
    #[error("member {0:x} is the last voting member: the cluster cannot remove it")]
    LastVoter(u64),
    #[error("invalid member name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("a member needs at least one peer URL")]
    NoPeerUrl,
    /// A replica published attributes while not a member (not yet added, or removed).
    #[error("member {0:x} is not in the cluster")]
    NotMember(u64),
    /// A leadership transfer asked of a replica that is not the leader.
    #[error("this replica is not the leader")]
    NotLeader,
    /// A leadership transfer to a replica that cannot lead (a learner, or not a member).
    #[error("{0:x} is not a voting member and cannot become the leader")]
    BadTransferee(u64),
    /// The target did not take over within the bound.
    #[error("leader transfer to {0:x} took too long")]
    TransferTimeout(u64),
}

/// The cluster-record key of member `id`.
pub(crate) fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn encode_attrs(attrs: &MemberAttrs) -> Vec<u8> {
    // postcard cannot fail on these types except on allocation failure.
    postcard::to_allocvec(attrs).unwrap_or_default()
}

/// Every id in a configuration: voters (incoming and outgoing) and learners.
pub(crate) fn conf_ids(cs: &ConfState) -> Vec<u64> {
    let mut ids: Vec<u64> = cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners)
        .chain(&cs.learners_next)
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The member records among `records` (cluster records, prefix stripped), by id.
/// A record that does not decode is an error: the table is written only by this
/// crate, so it is corruption.
pub(crate) fn decode_table(
    records: &[trireme_mvcc::ClusterRecord],
) -> Result<BTreeMap<u64, MemberAttrs>, String> {
    let mut table = BTreeMap::new();
    for (k, v) in records {
        let Some(id) = k.strip_prefix(MEMBER_PREFIX) else {
            continue;
        };
        let id: [u8; 8] = id
            .try_into()
            .map_err(|_| format!("member record key {k:?}"))?;
        let attrs: MemberAttrs = postcard::from_bytes(v)
            .map_err(|e| format!("member record {:x}: {e}", u64::from_be_bytes(id)))?;
        table.insert(u64::from_be_bytes(id), attrs);
    }
    Ok(table)
}

/// The members of configuration `cs`, with what the table knows of each; sorted by
/// name, then id.
pub(crate) fn list(cs: &ConfState, table: &BTreeMap<u64, MemberAttrs>) -> Vec<Member> {
    let mut members: Vec<Member> = conf_ids(cs)
        .into_iter()
        .map(|id| {
            let attrs = table.get(&id).cloned().unwrap_or_default();
            Member {
                id,
                name: attrs.name,
                peer_urls: attrs.peer_urls,
                client_urls: attrs.client_urls,
                is_learner: (cs.learners.contains(&id) || cs.learners_next.contains(&id))
                    && !cs.voters.contains(&id),
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    members
}

/// Replica names become certificate names and member ids: 1-63 lowercase letters,
/// digits or '-', not starting or ending with '-'.
pub fn check_name(name: &str) -> Result<(), MemberError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(MemberError::InvalidName {
            name: name.to_string(),
            reason:
                "must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
                    .into(),
        })
    }
}

/// A peer URL: `https://host:port` (peers always speak TLS), no path.
pub fn check_peer_url(url: &str) -> Result<(), MemberError> {
    let bad = |reason: &str| MemberError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("a peer URL must start with https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(bad("a peer URL has no path"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("a peer URL needs a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(bad("no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["replica-4", "a", "r1", &"x".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "Replica", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_urls_are_checked() {
        for good in [
            "https://127.0.0.1:2380",
            "https://replica-4.example:7001/",
            "https://[::1]:7",
        ] {
            assert_eq!(check_peer_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://127.0.0.1:2380",
            "127.0.0.1:2380",
            "https://127.0.0.1",
            "https://127.0.0.1:0",
            "https://127.0.0.1:99999",
            "https://:7001",
            "https://h:1/path",
            "",
        ] {
            assert!(check_peer_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_is_the_configuration_joined_with_the_table() {
        let mut cs = ConfState::default();
        cs.set_voters(vec![3, 1]);
        cs.set_learners(vec![7]);
        let mut table = BTreeMap::new();
        let attrs = |name: &str| MemberAttrs {
            name: name.into(),
            peer_urls: vec![format!("https://{name}:1")],
            client_urls: vec![],
        };
        table.insert(1, attrs("b"));
        table.insert(7, attrs("a"));
        table.insert(9, attrs("pending-add"));
        let records: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .map(|(id, a)| (member_key(*id), encode_attrs(a)))
            .chain(std::iter::once((b"other/1".to_vec(), b"x".to_vec())))
            .collect();
        let decoded = decode_table(&records).unwrap();
        assert_eq!(decoded, table);
        let l = list(&cs, &decoded);
        let summary: Vec<(u64, &str, bool)> = l
            .iter()
            .map(|m| (m.id, m.name.as_str(), m.is_learner))
            .collect();
        // Id 3 has no record yet (sorts first by its empty name); 9 is no member.
        assert_eq!(summary, [(3, "", false), (7, "a", true), (1, "b", false)]);
        assert!(decode_table(&[(member_key(1), vec![0xff; 3])]).is_err());
    }
}
