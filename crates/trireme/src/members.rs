//! The replica's side of the replicated member table (`trireme_store::Member`):
//!
//! - `sync_peers`: keeps the `PeerTransport` in step with the table: every member
//!   other than this replica is a peer at its first peer URL (the config's
//!   `cluster.dial` override, else the table's, else the config's `cluster.initial`); a peer that is no member any more is
//!   dropped after a grace period, so the last messages to it (the commit of its own
//!   removal) still go out.
//! - `publish_self`: once a leader is known, publishes this replica's name, peer URL
//!   and API URL (from its config) whenever the stored ones differ.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use trireme_store::{KvStore, Member, MemberError, StoreError};
use trireme_transport::{member_id, PeerTransport};

/// How long a peer that left the member table stays in the transport.
const REMOVED_PEER_GRACE: Duration = Duration::from_secs(5);

/// How often the tasks look again without a change (a publish that failed, a
/// removal whose grace ended).
const RECHECK: Duration = Duration::from_secs(1);

/// The peers the transport should know: id -> URL, for every member but `me` whose
/// URL is known (members without one are in the second set). A `dial` entry wins over
/// the table (the operator routes that member through a proxy or NAT address); the
/// table wins over `initial` (a member that moved). `None` when the member
/// list is empty (a joining replica before its first snapshot): then nothing is
/// known, and nothing should be dropped.
pub fn desired_peers(
    me: u64,
    members: &[Member],
    initial: &BTreeMap<String, String>,
    dial: &BTreeMap<String, String>,
) -> Option<(BTreeMap<u64, String>, BTreeSet<u64>)> {
    if members.is_empty() {
        return None;
    }
    let by_id = |m: &BTreeMap<String, String>| -> BTreeMap<u64, String> {
        m.iter()
            .map(|(name, url)| (member_id(name), url.clone()))
            .collect()
    };
    let from_config = by_id(initial);
    let overrides = by_id(dial);
    let mut peers = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    for m in members.iter().filter(|m| m.id != me) {
        let url = overrides
            .get(&m.id)
            .or_else(|| m.peer_urls.first())
            .or_else(|| from_config.get(&m.id));
        match url {
            Some(url) => {
                peers.insert(m.id, url.clone());
            }
            None => {
                unknown.insert(m.id);
            }
        }
    }
    Some((peers, unknown))
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Keeps `transport` in step with the member table until `stop` turns true.
pub async fn sync_peers(
    store: Arc<KvStore>,
    transport: Arc<PeerTransport>,
    initial: BTreeMap<String, String>,
    dial: BTreeMap<String, String>,
    mut stop: watch::Receiver<bool>,
) {
    let me = store.node().id();
    let mut members = store.member_watch();
    let mut leaving: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut warned: BTreeSet<u64> = BTreeSet::new();
    loop {
        let list = members.borrow_and_update().clone();
        if let Some((desired, unknown)) = desired_peers(me, &list, &initial, &dial) {
            for id in unknown.difference(&warned) {
                tracing::warn!(
                    member = *id,
                    "no peer URL known for a member yet: it is not reachable from here"
                );
            }
            warned = unknown;
            let current: BTreeMap<u64, String> = transport.peers().into_iter().collect();
            for (id, url) in &desired {
                leaving.remove(id);
                if current.get(id) != Some(url) {
                    match transport.set_peer(*id, url) {
                        Ok(()) => {
                            tracing::info!(peer = *id, %url, "peer set from the member table")
                        }
                        Err(e) => tracing::warn!(peer = *id, "cannot use a member's peer URL: {e}"),
                    }
                }
            }
            let now = Instant::now();
            let gone: BTreeSet<u64> = current
                .keys()
                .filter(|id| !desired.contains_key(id))
                .copied()
                .collect();
            for id in &gone {
                leaving.entry(*id).or_insert(now + REMOVED_PEER_GRACE);
            }
            leaving.retain(|id, due| {
                if !gone.contains(id) {
                    return false;
                }
                if *due <= now {
                    tracing::info!(
                        peer = *id,
                        "peer left the cluster: dropped from the transport"
                    );
                    transport.remove_peer(*id);
                    return false;
                }
                true
            });
        }
        tokio::select! {
            _ = until_stopped(&mut stop) => return,
            changed = members.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// What this replica publishes about itself.
#[derive(Debug, Clone)]
pub struct OwnAttributes {
    pub name: String,
    pub peer_url: String,
    pub api_url: String,
}

/// Publishes this replica's attributes whenever the table's differ, until `stop`.
pub async fn publish_self(
    store: Arc<KvStore>,
    own: OwnAttributes,
    mut stop: watch::Receiver<bool>,
) {
    let mut members = store.member_watch();
    loop {
        let st = store.status();
        if st.leader_id != 0 && !st.removed {
            let r = store
                .member_publish(
                    &own.name,
                    vec![own.peer_url.clone()],
                    vec![own.api_url.clone()],
                )
                .await;
            match r {
                Ok(true) => tracing::info!(
                    name = %own.name,
                    peer_url = %own.peer_url,
                    api_url = %own.api_url,
                    "published this replica's attributes"
                ),
                Ok(false) => {}
                // Not added yet (a joining replica before its snapshot), or removed.
                Err(StoreError::Member(MemberError::NotMember(_))) => {}
                Err(e) => tracing::debug!("publishing this replica's attributes: {e}"),
            }
        }
        tokio::select! {
            _ = until_stopped(&mut stop) => return,
            changed = members.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(name: &str, peer: &[&str]) -> Member {
        Member {
            id: member_id(name),
            name: name.into(),
            peer_urls: peer.iter().map(|s| s.to_string()).collect(),
            client_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn peers_come_from_the_table_then_the_config_and_never_include_this_replica() {
        let initial: BTreeMap<String, String> = [
            ("r1", "https://10.0.0.1:7001"),
            ("r2", "https://10.0.0.2:7001"),
            ("r3", "https://10.0.0.3:7001"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let members = vec![
            member("r1", &["https://10.0.0.1:7001"]),
            // Not published yet: the config's URL.
            Member {
                name: String::new(),
                ..member("r2", &[])
            },
            // Moved: the table wins.
            member("r3", &["https://10.9.9.3:7001"]),
            // Added later: only the table knows it.
            member("r4", &["https://10.0.0.4:7001", "https://other:1"]),
            // No URL anywhere.
            member("r5", &[]),
        ];
        let none = BTreeMap::new();
        let (peers, unknown) = desired_peers(member_id("r1"), &members, &initial, &none).unwrap();
        assert_eq!(unknown, BTreeSet::from([member_id("r5")]));
        let want: BTreeMap<u64, String> = [
            ("r2", "https://10.0.0.2:7001"),
            ("r3", "https://10.9.9.3:7001"),
            ("r4", "https://10.0.0.4:7001"),
        ]
        .into_iter()
        .map(|(n, u)| (member_id(n), u.to_string()))
        .collect();
        assert_eq!(peers, want);
        assert_eq!(desired_peers(member_id("r1"), &[], &initial, &none), None);
        // A dial override wins over the table.
        let dial = BTreeMap::from([("r3".to_string(), "https://proxy:9000".to_string())]);
        let (peers, _) = desired_peers(member_id("r1"), &members, &initial, &dial).unwrap();
        assert_eq!(peers[&member_id("r3")], "https://proxy:9000");
        assert_eq!(peers[&member_id("r4")], "https://10.0.0.4:7001");
    }
}
