//! Membership as the Raft thread enforces it, beyond what raft-rs does:
//!
//! - the leader checks every membership change, its own and those a follower
//!   forwards (`screen_forwarded_conf_changes`): one at a time, never its own removal
//!   (it transfers leadership instead: raft-rs panics in a leader that applied its own
//!   removal), a learner promoted only when in sync; a refused forwarded change comes
//!   back to the follower as an empty entry carrying the refusal ([`Refusal`]);
//! - a node learns that it was removed: by applying the change, from its stored
//!   configuration at start, or from a member that does not count it any more
//!   (`on_not_member`); a node that hears no leader probes the members it knows so
//!   that one can tell it (`maybe_probe`);
//! - a leader removed anyway hands leadership over (`maybe_hand_over`).

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, EntryType, Message, MessageType,
};
use raft::StateRole;
use raft_proto::ConfChangeI as _;

use super::Driver;
use crate::error::ProposeError;
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// The context of an empty normal entry a leader appends in place of a membership
/// change it refused on a follower's behalf: this prefix, a [`Refusal`] code, then
/// the change's own context (the follower's request id). The follower that proposed
/// the change fails its waiter when it applies the entry, instead of waiting for a
/// change that will never come (raft-rs turns refused changes into empty entries and
/// drops their context).
const REFUSAL_PREFIX: &[u8] = b"trireme/refused-conf-change/";

/// The context of a probe: a `MsgHeartbeatResponse` a node that has not heard from a
/// leader for a while sends to the other members it knows, so that one that no
/// longer counts it as a member can tell it (the transport answers a non-member).
/// Receivers drop probes; raft-rs never sees them.
pub(super) const PROBE_CONTEXT: &[u8] = b"trireme/probe";

/// Election timeouts without a word from a leader before a node starts probing.
const PROBE_AFTER_ELECTIONS: u64 = 2;

/// A learner is "in sync" when its match index is at least this share (in tenths)
/// of the leader's, as etcd requires before a promotion...
const PROMOTE_MIN_TENTHS: u64 = 9;
/// ...or at most this many entries behind it (small logs).
const PROMOTE_MAX_LAG: u64 = 64;

/// Why a leader refused a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Pending = 1,
    LearnerNotReady = 2,
    /// The change removes (or demotes) the leader itself: raft-rs cannot run a leader
    /// that applied its own removal (it panics on its missing progress), so the
    /// leader hands leadership over first and the caller retries.
    LeaderTransferring = 3,
    /// After the change, fewer voters than a quorum would be up (etcd's
    /// `--strict-reconfig-check`): the cluster would stop taking writes.
    NotEnoughActive = 4,
}

impl Refusal {
    fn from_code(code: u8) -> Option<Refusal> {
        match code {
            1 => Some(Refusal::Pending),
            2 => Some(Refusal::LearnerNotReady),
            3 => Some(Refusal::LeaderTransferring),
            4 => Some(Refusal::NotEnoughActive),
            _ => None,
        }
    }

    pub(super) fn error(self) -> ProposeError {
        match self {
            Refusal::Pending => ProposeError::ConfChangePending,
            Refusal::LearnerNotReady => ProposeError::LearnerNotReady,
            Refusal::LeaderTransferring => ProposeError::Dropped,
            Refusal::NotEnoughActive => ProposeError::NotEnoughActive,
        }
    }

    pub(super) fn context(self, ctx: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(REFUSAL_PREFIX.len() + 1 + ctx.len());
        v.extend_from_slice(REFUSAL_PREFIX);
        v.push(self as u8);
        v.extend_from_slice(ctx);
        v
    }

    /// (refusal, the refused change's context) of a refusal entry's context.
    pub(super) fn parse(context: &[u8]) -> Option<(Refusal, &[u8])> {
        let rest = context.strip_prefix(REFUSAL_PREFIX)?;
        let (code, ctx) = rest.split_first()?;
        Some((Refusal::from_code(*code)?, ctx))
    }
}

pub(super) fn in_conf(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners.contains(&id)
        || cs.learners_next.contains(&id)
}

/// A configuration with voters that does not list `id`: `id` was removed. (A node
/// that joins has an empty configuration until its first snapshot.)
pub(super) fn removed_from(cs: &ConfState, id: u64) -> bool {
    (!cs.voters.is_empty() || !cs.voters_outgoing.is_empty()) && !in_conf(cs, id)
}

impl<SM: StateMachine, T: Transport> Driver<SM, T> {
    /// Whether the leader (this node) accepts a membership change now: one change at
    /// a time, never its own removal or demotion (it hands leadership over first), a
    /// learner promoted only when it is in sync with the leader, and never a change
    /// after which fewer voters than a quorum are up.
    pub(super) fn check_conf_change(&self, cc: &ConfChangeV2) -> Result<(), Refusal> {
        let raft = &self.raw.raft;
        if raft.has_pending_conf() {
            return Err(Refusal::Pending);
        }
        let removes_self = cc.get_changes().iter().any(|c| {
            c.node_id == self.id
                && matches!(
                    c.get_change_type(),
                    ConfChangeType::RemoveNode | ConfChangeType::AddLearnerNode
                )
        });
        if removes_self {
            return Err(Refusal::LeaderTransferring);
        }
        let learners = raft.prs().conf().learners();
        let leader_match = raft
            .prs()
            .get(self.id)
            .map(|p| p.matched)
            .unwrap_or_else(|| raft.raft_log.last_index());
        for c in cc.get_changes() {
            if c.get_change_type() != ConfChangeType::AddNode || !learners.contains(&c.node_id) {
                continue;
            }
            // `matched` moves only on the learner's acknowledgements (a snapshot it
            // installed counts once it acknowledges the next append).
            let ready = raft.prs().get(c.node_id).is_some_and(|p| {
                p.matched > 0
                    && (p.matched.saturating_mul(10)
                        >= leader_match.saturating_mul(PROMOTE_MIN_TENTHS)
                        || p.matched + PROMOTE_MAX_LAG >= leader_match)
            });
            if !ready {
                return Err(Refusal::LearnerNotReady);
            }
        }
        if !self.keeps_an_active_quorum(cc) {
            return Err(Refusal::NotEnoughActive);
        }
        Ok(())
    }

    /// Whether a quorum of the voters after `cc` are up: this node, and the peers
    /// heard from within an election timeout. Removing a voter that is down, or
    /// adding and removing learners, never fails this.
    fn keeps_an_active_quorum(&self, cc: &ConfChangeV2) -> bool {
        let mut voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        let before = voters.len();
        for c in cc.get_changes() {
            voters.retain(|v| *v != c.node_id);
            if c.get_change_type() == ConfChangeType::AddNode {
                voters.push(c.node_id);
            }
        }
        if voters.is_empty() {
            return true; // refused elsewhere (the last voter)
        }
        if before == 1 && voters.len() == 2 && voters.contains(&self.id) {
            // A lone voter adding a second: the new one cannot be up before it is
            // added, and the cluster had no other voter to lose (etcd allows it too).
            return true;
        }
        let window = self.config.election_ticks as u64;
        let up = |id: &u64| {
            *id == self.id
                || self
                    .last_heard
                    .get(id)
                    .is_some_and(|t| self.ticks <= t + window)
        };
        voters.iter().filter(|v| up(v)).count() > voters.len() / 2
    }

    pub(super) fn on_refusal(&mut self, refusal: Refusal) {
        if refusal == Refusal::LeaderTransferring {
            if let Some(to) = self.best_transferee() {
                tracing::info!(
                    node = self.id,
                    to,
                    "asked to remove the leader: transferring leadership first"
                );
                self.raw.transfer_leader(to);
            }
        }
    }

    /// The voter (not this node) with the highest match index, for a leadership
    /// transfer.
    fn best_transferee(&self) -> Option<u64> {
        let raft = &self.raw.raft;
        raft.prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|id| *id != self.id)
            .filter_map(|id| raft.prs().get(id).map(|p| (p.matched, id)))
            .max()
            .map(|(_, id)| id)
    }

    /// A leader checks the membership changes a follower forwarded (in a `MsgPropose`)
    /// as it checks its own. A refused change is taken out of the message and an empty
    /// entry carrying the refusal and the change's context is proposed instead, so the
    /// follower's caller gets the reason when it applies it.
    pub(super) fn screen_forwarded_conf_changes(&mut self, m: &mut Message) {
        let mut refused = Vec::new();
        let entries = std::mem::take(&mut m.entries);
        for e in entries {
            let cc = match e.get_entry_type() {
                EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
                    .ok()
                    .map(|c| c.into_v2()),
                EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data).ok(),
                EntryType::EntryNormal => None,
            };
            let verdict = cc.map(|cc| self.check_conf_change(&cc));
            match verdict {
                Some(Err(refusal)) => {
                    self.on_refusal(refusal);
                    refused.push(refusal.context(&e.context));
                }
                _ => m.entries.push(e),
            }
        }
        for context in refused {
            if let Err(e) = self.raw.propose(context, Vec::new()) {
                tracing::debug!(node = self.id, "propose a refusal: {e}");
            }
        }
    }

    /// A node that has not heard from a leader for a while asks the members it knows,
    /// so that one that does not count it as a member any more can say so.
    pub(super) fn maybe_probe(&mut self) {
        if self.raw.raft.state == StateRole::Leader {
            self.last_leader_contact = self.ticks;
            return;
        }
        let election = self.config.election_ticks as u64;
        if self.removed
            || self.ticks < self.last_leader_contact + PROBE_AFTER_ELECTIONS * election
            || self.ticks < self.last_probe + election
        {
            return;
        }
        let cs = self.raw.raft.prs().conf().to_conf_state();
        if !in_conf(&cs, self.id) {
            return;
        }
        self.last_probe = self.ticks;
        let mut to: Vec<u64> = cs
            .voters
            .iter()
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners)
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        to.sort_unstable();
        to.dedup();
        let probes = to
            .into_iter()
            .map(|to| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgHeartbeatResponse);
                m.from = self.id;
                m.to = to;
                m.term = self.raw.raft.term;
                m.context = PROBE_CONTEXT.to_vec().into();
                m
            })
            .collect();
        self.transport.send(probes, &self.mailbox);
    }

    /// Member `from` (which had applied up to `applied`) says this node is not a
    /// member. Believed only if this node counts itself a member and has applied
    /// less: a replica added again after its removal has applied its re-addition.
    pub(super) fn on_not_member(&mut self, from: u64, applied: u64) {
        let cs = self.raw.raft.prs().conf().to_conf_state();
        if !self.removed && in_conf(&cs, self.id) && self.applied < applied {
            tracing::warn!(
                node = self.id,
                from,
                their_applied = applied,
                applied = self.applied,
                "a member says this node is not in the cluster any more: it was removed"
            );
            self.removed = true;
        }
    }

    /// A leader that was removed anyway (it refuses its own removal, but leadership
    /// can move back before the change applies) hands leadership to the most
    /// caught-up voter of the new configuration: right after `advance` (like
    /// `maybe_leave_joint`), then again every election timeout while it still leads
    /// (the transferee refuses to campaign while it has not applied the removal
    /// itself, and raft-rs gives up a transfer after an election timeout).
    pub(super) fn maybe_hand_over(&mut self) {
        if !self.removed || self.raw.raft.state != StateRole::Leader {
            return;
        }
        let election = self.config.election_ticks as u64;
        if self
            .last_hand_over
            .is_some_and(|t| self.ticks < t + election)
        {
            return;
        }
        self.last_hand_over = Some(self.ticks);
        if let Some(target) = self.best_transferee() {
            tracing::info!(
                node = self.id,
                to = target,
                "removed while leading: transferring leadership"
            );
            self.raw.transfer_leader(target);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_refusal_round_trips_through_an_entry_context() {
        for r in [
            Refusal::Pending,
            Refusal::LearnerNotReady,
            Refusal::LeaderTransferring,
            Refusal::NotEnoughActive,
        ] {
            let ctx = [7u8; 24];
            let c = r.context(&ctx);
            assert_eq!(Refusal::parse(&c), Some((r, &ctx[..])));
        }
        // A proposal's own context (node id, boot, sequence) is never a refusal.
        assert_eq!(Refusal::parse(&[0u8; 24]), None);
        assert_eq!(Refusal::parse(REFUSAL_PREFIX), None);
        let mut unknown = REFUSAL_PREFIX.to_vec();
        unknown.push(99);
        assert_eq!(Refusal::parse(&unknown), None);
        assert_eq!(
            Refusal::LeaderTransferring.error(),
            ProposeError::Dropped,
            "retryable: the new leader takes the change"
        );
    }

    #[test]
    fn removal_is_told_from_a_configuration() {
        let cs = |voters: &[u64], learners: &[u64], outgoing: &[u64]| {
            let mut c = ConfState::default();
            c.set_voters(voters.to_vec());
            c.set_learners(learners.to_vec());
            c.set_voters_outgoing(outgoing.to_vec());
            c
        };
        // (configuration, id, in it, removed from it)
        let table = [
            (cs(&[1, 2, 3], &[], &[]), 1, true, false),
            (cs(&[1, 2, 3], &[4], &[]), 4, true, false),
            (cs(&[2, 3], &[], &[1, 2, 3]), 1, true, false),
            (cs(&[2, 3], &[], &[]), 1, false, true),
            // A joining node before its first snapshot: no configuration at all.
            (cs(&[], &[], &[]), 1, false, false),
        ];
        for (c, id, member, removed) in table {
            assert_eq!(in_conf(&c, id), member, "{c:?} {id}");
            assert_eq!(removed_from(&c, id), removed, "{c:?} {id}");
        }
    }
}
