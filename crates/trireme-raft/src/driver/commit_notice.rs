//! When a leader tells its followers about a commit.
//!
//! raft-rs by default broadcasts an empty append to every follower each time the
//! commit index moves. Under a steady stream of writes that message is redundant: the
//! next append carries the commit index anyway. With one client it costs a message
//! and its acknowledgement on every member per write, on the CPUs the next write
//! needs. The node runs raft-rs with `skip_bcast_commit` and tells followers itself:
//!
//! - a follower that forwarded a proposal waits to apply it before it can answer its
//!   client: it hears of the commit of that proposal at once;
//! - every other follower hears of a commit with the next append or heartbeat, or,
//!   when none goes out within [`NOTICE_DELAY`], from an empty append then. Reads and
//!   watches served by followers see a write at most that much later than with the
//!   broadcast. (Linearizable reads are not affected: the heartbeats of a ReadIndex
//!   round carry the commit index.)

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};

/// How long a commit may go untold to a follower that is not waiting for it.
pub(super) const NOTICE_DELAY: Duration = Duration::from_millis(1);

/// Forwarded proposals remembered per follower; beyond that the oldest are
/// forgotten (their follower then hears of their commit within [`NOTICE_DELAY`]).
const MAX_WAITING: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct CommitNotices {
    /// The highest commit index handed to the transport for each peer.
    told: HashMap<u64, u64>,
    /// For each follower, the last log index of each proposal it forwarded, in order.
    waiting: HashMap<u64, VecDeque<u64>>,
    /// The highest commit index a delayed notice was sent for.
    noticed: u64,
    /// When the followers that still lag are told.
    due: Option<Instant>,
}

impl CommitNotices {
    /// Records the commit index an outgoing message carries.
    pub(super) fn on_send(&mut self, m: &Message) {
        if matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat
        ) {
            let told = self.told.entry(m.to).or_default();
            *told = (*told).max(m.commit);
        }
    }

    /// `from` forwarded a proposal that now ends at `last_index` of the log.
    pub(super) fn on_forwarded(&mut self, from: u64, last_index: u64) {
        let q = self.waiting.entry(from).or_default();
        if q.len() >= MAX_WAITING {
            q.pop_front();
        }
        q.push_back(last_index);
    }

    /// Forgets everything: this node is not the leader (any more).
    pub(super) fn clear(&mut self) {
        if self.told.is_empty() && self.waiting.is_empty() && self.due.is_none() {
            return;
        }
        *self = CommitNotices::default();
    }

    /// When [`CommitNotices::due_now`] next has something to send.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The peers among `peers` to send an append to now so that they learn of
    /// `committed`. Arms the delayed notice when some peer lags.
    pub(super) fn due_now(&mut self, now: Instant, committed: u64, peers: &[u64]) -> Vec<u64> {
        let told = &self.told;
        let lags = |p: &u64| told.get(p).copied().unwrap_or(0) < committed;
        let mut out = Vec::new();
        for (peer, q) in self.waiting.iter_mut() {
            let mut reached = false;
            while q.front().is_some_and(|&i| i <= committed) {
                q.pop_front();
                reached = true;
            }
            if reached && lags(peer) && peers.contains(peer) {
                out.push(*peer);
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        if committed <= self.noticed || !peers.iter().any(&lags) {
            self.due = None;
            return out;
        }
        match self.due {
            None => self.due = Some(now + NOTICE_DELAY),
            Some(t) if now >= t => {
                out.extend(peers.iter().copied().filter(&lags));
                out.sort_unstable();
                out.dedup();
                self.noticed = committed;
                self.due = None;
            }
            Some(_) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MessageType, to: u64, commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.to = to;
        m.commit = commit;
        m
    }

    #[test]
    fn a_lagging_follower_is_told_after_the_delay_once() {
        let mut n = CommitNotices::default();
        let t0 = Instant::now();
        n.on_send(&msg(MessageType::MsgAppend, 2, 9));
        n.on_send(&msg(MessageType::MsgAppend, 3, 9));
        assert!(n.due_now(t0, 10, &[2, 3]).is_empty());
        assert_eq!(n.due(), Some(t0 + NOTICE_DELAY));
        // An append carrying the commit reaches peer 2 in the meantime.
        n.on_send(&msg(MessageType::MsgAppend, 2, 10));
        assert!(n.due_now(t0, 10, &[2, 3]).is_empty());
        assert_eq!(n.due_now(t0 + NOTICE_DELAY, 10, &[2, 3]), vec![3]);
        assert_eq!(n.due(), None);
        // Sent but not handed over (a paused peer): not retried for the same commit.
        assert!(n.due_now(t0 + 2 * NOTICE_DELAY, 10, &[2, 3]).is_empty());
        assert_eq!(n.due(), None);
        // A later commit arms it again.
        assert!(n.due_now(t0 + 3 * NOTICE_DELAY, 11, &[2, 3]).is_empty());
        assert!(n.due().is_some());
    }

    #[test]
    fn nothing_is_armed_when_every_peer_already_knows() {
        let mut n = CommitNotices::default();
        n.on_send(&msg(MessageType::MsgAppend, 2, 10));
        n.on_send(&msg(MessageType::MsgHeartbeat, 3, 10));
        assert!(n.due_now(Instant::now(), 10, &[2, 3]).is_empty());
        assert_eq!(n.due(), None);
        // Other message types carry no commit that counts.
        n.on_send(&msg(MessageType::MsgAppendResponse, 3, 11));
        n.due_now(Instant::now(), 11, &[2, 3]);
        assert!(n.due().is_some());
    }

    #[test]
    fn a_follower_that_forwarded_a_proposal_is_told_of_its_commit_at_once() {
        let mut n = CommitNotices::default();
        let t0 = Instant::now();
        n.on_send(&msg(MessageType::MsgAppend, 2, 4));
        n.on_send(&msg(MessageType::MsgAppend, 3, 4));
        n.on_forwarded(3, 7);
        n.on_forwarded(3, 9);
        // Commit 6 is before its proposals: only the delay applies.
        assert!(n.due_now(t0, 6, &[2, 3]).is_empty());
        assert_eq!(n.due_now(t0, 7, &[2, 3]), vec![3]);
        n.on_send(&msg(MessageType::MsgAppend, 3, 7));
        assert!(n.due_now(t0, 8, &[2, 3]).is_empty());
        assert_eq!(n.due_now(t0, 9, &[2, 3]), vec![3]);
        n.on_send(&msg(MessageType::MsgAppend, 3, 9));
        // Nothing left waiting; peer 2 still hears of it after the delay.
        assert!(n.due_now(t0, 9, &[2, 3]).is_empty());
        assert_eq!(n.due_now(t0 + NOTICE_DELAY, 9, &[2, 3]), vec![2]);
    }

    #[test]
    fn a_removed_peer_is_not_told_and_clear_forgets_everything() {
        let mut n = CommitNotices::default();
        n.on_forwarded(4, 3);
        assert!(n.due_now(Instant::now(), 5, &[2]).is_empty());
        n.on_forwarded(2, 6);
        n.due_now(Instant::now(), 6, &[2]);
        n.clear();
        assert_eq!(n.due(), None);
        assert!(n.due_now(Instant::now(), 0, &[2]).is_empty());
    }
}
