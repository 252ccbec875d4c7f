//! The membership operations of [`KvStore`] (etcd's member API): list, add, remove,
//! promote, and a replica publishing its own attributes.
//!
//! Every change goes through Raft. The checks here run against a linearizable view
//! of the member list, so they see every change acknowledged before; the Raft leader
//! checks again what only it can know (a change already pending, a learner's
//! progress) and refuses with `ProposeError::ConfChangePending` or
//! `ProposeError::LearnerNotReady`, also for a change proposed through a follower.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use trireme_raft::eraftpb::ConfChangeType;
use trireme_raft::{member_id, ProposeError, UncertainReason};

use crate::machine::{current, members_of};
use crate::member::{check_name, check_peer_url, Member, MemberAttrs, MemberError};
use crate::proposal::Proposal;
use crate::store::KvStore;
use crate::StoreError;

/// Pause between attempts while the leader hands leadership over.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl KvStore {
    /// The members as this replica has applied them, without waiting on anything (a
    /// serializable read: possibly stale).
    pub fn members_local(&self) -> Result<Vec<Member>, StoreError> {
        members_of(&current(&self.store)).map_err(|e| StoreError::Storage(e.to_string()))
    }

    /// The members: voters and learners of the configuration, with name, peer URLs
    /// and client URLs. Linearizable (ReadIndex): reflects every membership change
    /// acknowledged before the call.
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        self.node.read_index().await?;
        self.members_local()
    }

    /// The member list as applied here; changes after every apply that changed it
    /// (and after a snapshot is installed).
    pub fn member_watch(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// Adds the replica called `name` (its id is `member_id(name)`), reachable at
    /// `peer_urls`, as a learner (`is_learner`) or directly as a voter. Its name and
    /// peer URLs are stored first, then the membership change is proposed; both are
    /// applied here before this returns. Start the new replica (empty data directory,
    /// `join = true`) once this returns.
    pub async fn member_add(
        &self,
        name: &str,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Member, StoreError> {
        check_name(name)?;
        if peer_urls.is_empty() {
            return Err(MemberError::NoPeerUrl.into());
        }
        for url in &peer_urls {
            check_peer_url(url)?;
        }
        let id = member_id(name);
        let members = self.members().await?;
        if let Some(m) = members.iter().find(|m| m.id == id) {
            return Err(MemberError::AlreadyExists {
                id,
                name: if m.name.is_empty() {
                    name.to_string()
                } else {
                    m.name.clone()
                },
            }
            .into());
        }
        for m in &members {
            if let Some(url) = peer_urls.iter().find(|u| m.peer_urls.contains(u)) {
                return Err(MemberError::PeerUrlExists {
                    url: url.clone(),
                    name: m.name.clone(),
                }
                .into());
            }
        }
        self.refuse_while_joint()?;
        let attrs = MemberAttrs {
            name: name.to_string(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
        };
        self.propose(Proposal::MemberAdd { id, attrs }).await?;
        let kind = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.change_until(vec![(kind, id)], |ms| ms.iter().any(|m| m.id == id))
            .await?;
        Ok(Member {
            id,
            name: name.to_string(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner,
        })
    }

    /// Removes member `id` (voter or learner); returns the members after the change
    /// as applied here. The removed replica stops once it learns of it. Removing the
    /// leader moves leadership first (the leader never applies its own removal).
    /// Asked to remove itself, a replica that learns it is out of the cluster (it
    /// need not apply the change to learn it, and it may have been removed already)
    /// answers with success: what was asked holds.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<Member>, StoreError> {
        match self.remove(id).await {
            Err(e) if id == self.node.id() && e.is_removed() => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let mut members = self.members_local()?;
        members.retain(|m| m.id != id);
        Ok(members)
    }

    async fn remove(&self, id: u64) -> Result<(), StoreError> {
        let members = self.members().await?;
        let m = members
            .iter()
            .find(|m| m.id == id)
            .ok_or(MemberError::NotFound(id))?;
        let voters = members.iter().filter(|m| !m.is_learner).count();
        if !m.is_learner && voters <= 1 {
            return Err(MemberError::LastVoter(id).into());
        }
        self.refuse_while_joint()?;
        // The leader hands leadership over before its own removal (see
        // `change_until`).
        self.change_until(vec![(ConfChangeType::RemoveNode, id)], |ms| {
            ms.iter().all(|m| m.id != id)
        })
        .await
    }

    /// Makes learner `id` a voter; the leader refuses while the learner lags behind
    /// its log (`ProposeError::LearnerNotReady`: retry once it caught up).
    pub async fn member_promote(&self, id: u64) -> Result<Vec<Member>, StoreError> {
        let members = self.members().await?;
        let m = members
            .iter()
            .find(|m| m.id == id)
            .ok_or(MemberError::NotFound(id))?;
        if !m.is_learner {
            return Err(MemberError::NotLearner(id).into());
        }
        self.refuse_while_joint()?;
        self.change_until(vec![(ConfChangeType::AddNode, id)], |ms| {
            ms.iter().any(|m| m.id == id && !m.is_learner)
        })
        .await?;
        self.members_local()
    }

    /// Hands leadership to voter `to`, as etcd's `MoveLeader`: asked of the leader,
    /// which stops taking proposals, brings `to` up to date and tells it to campaign at
    /// once. Returns when `to` leads (this replica's view), or `TransferTimeout` after
    /// `within` (raft-rs gives up on its own after an election timeout and this leader
    /// takes proposals again).
    pub async fn move_leader(&self, to: u64, within: Duration) -> Result<(), StoreError> {
        let status = self.node().status();
        if status.role != trireme_raft::Role::Leader {
            return Err(MemberError::NotLeader.into());
        }
        if to == status.id {
            return Ok(());
        }
        if !status.voters.contains(&to) {
            // A learner or not a member (etcd: "bad leader transferee").
            return Err(MemberError::BadTransferee(to).into());
        }
        // Asked once, as etcd does: while a transfer is pending the leader drops
        // proposals, and raft-rs gives it up after an election timeout.
        self.node().transfer_leader(to);
        let deadline = Instant::now() + within;
        loop {
            if self.node().status().leader_id == to {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MemberError::TransferTimeout(to).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publishes this replica's own attributes if the applied table differs. Returns
    /// whether it proposed anything; `MemberError::NotMember` while this replica is
    /// not (yet, or any more) a member.
    pub async fn member_publish(
        &self,
        name: &str,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
    ) -> Result<bool, StoreError> {
        let id = self.node.id();
        let members = self.members_local()?;
        let me = members
            .iter()
            .find(|m| m.id == id)
            .ok_or(MemberError::NotMember(id))?;
        if me.name == name && me.peer_urls == peer_urls && me.client_urls == client_urls {
            return Ok(false);
        }
        let attrs = MemberAttrs {
            name: name.to_string(),
            peer_urls,
            client_urls,
        };
        match self.propose(Proposal::MemberPublish { id, attrs }).await {
            // Removed before it learned so from its own member table: whether or not
            // the entry commits, the cluster has no such member to publish.
            Err(e) if e.is_removed() => Err(MemberError::NotMember(id).into()),
            r => r.map(|_| true),
        }
    }

    /// Proposes a membership change; when it was dropped (a leader hands leadership
    /// over before its own removal) or the leader changed while it was pending,
    /// checks a linearizable member list with `done` and proposes it again unless it
    /// went through. Bounded by the node's request timeout; other errors (a refusal,
    /// a timeout with an unknown outcome) are returned at once.
    async fn change_until(
        &self,
        changes: Vec<(ConfChangeType, u64)>,
        done: impl Fn(&[Member]) -> bool,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.node.request_timeout();
        loop {
            match self.node.change_membership(changes.clone()).await {
                Ok(_) => return Ok(()),
                Err(
                    e @ (ProposeError::Dropped
                    | ProposeError::Uncertain(UncertainReason::LeadershipChanged)),
                ) => {
                    if Instant::now() >= deadline {
                        return Err(e.into());
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                    match self.members().await {
                        Ok(members) if done(&members) => return Ok(()),
                        Ok(_) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A joint configuration is a change in progress: the next one must wait.
    fn refuse_while_joint(&self) -> Result<(), StoreError> {
        if self.node.status().voters_outgoing.is_empty() {
            Ok(())
        } else {
            Err(ProposeError::ConfChangePending.into())
        }
    }
}
