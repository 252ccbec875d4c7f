//! The Raft thread: the one owner of the `RawNode`, the log and the state machine.
//!
//! Everything that makes Raft work arrives on two channels (`Request`s from handles,
//! `Event`s from the transport) and is handled in [`Driver::run`]'s loop: wait for the
//! first event or the next tick, drain everything queued (so many proposals share
//! one Ready, one log write and one fsync), tick, issue batched ReadIndex requests,
//! process the Ready, then build snapshots and compact the log when due.
//!
//! It is an OS thread, not a tokio task, because the fsync in every Ready blocks.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole};
use raft_proto::ConfChangeI as _;
use tokio::sync::{oneshot, watch, Notify};

use crate::durable::sync_dir;
use crate::error::{ProposeError, ReadError, StartError, StorageError, UncertainReason};
use crate::log_store::LogStore;
use crate::logger::raft_logger;
use crate::node::{Bootstrap, Event, Mailbox, NodeConfig, NodeHandle, NodeStatus, Request, Role};
use crate::runtime::{RaftRuntime, ToRaft};
use crate::state_machine::{decode_conf_state, encode_conf_state, ApplyEntry, StateMachine};
use crate::transport::{SnapshotFile, Transport};

/// Founding members start with the log truncated at this index and term, and the
/// initial membership applied there. Any node that joins later has an empty log, so
/// the leader must send it a snapshot (with the membership) before any entry: a
/// joiner can never replay a log that lacks the founding configuration.
pub const INITIAL_INDEX: u64 = 5;
pub const INITIAL_TERM: u64 = 5;

/// Most queued requests and events handled before the next Ready.
const MAX_DRAIN: usize = 8192;
/// Committed entries wait at most this long, or until this many are queued, for more
/// to share their state machine batch while the node has more work queued.
const APPLY_DELAY_MAX: Duration = Duration::from_millis(1);
const APPLY_BATCH_MAX: usize = 1024;

mod commit_notice;
mod membership;
use commit_notice::CommitNotices;
use membership::{in_conf, removed_from, Refusal, PROBE_CONTEXT};

/// A fail-stop condition: the loop ends and the node reports it in its status.
struct Fatal(String);

impl From<StorageError> for Fatal {
    fn from(e: StorageError) -> Self {
        Fatal(e.to_string())
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Fatal(format!("snapshot file I/O: {e}"))
    }
}

struct Pending<R> {
    deadline: Instant,
    reply: oneshot::Sender<R>,
}

type ReadReply = Pending<Result<u64, ReadError>>;

/// A batch of reads sharing one ReadIndex request.
struct InFlightRead {
    waiters: Vec<ReadReply>,
    /// Tick at which the request was (re)issued; raft-rs drops ReadIndex silently in
    /// some states (a new leader before its first commit), so it is re-issued.
    issued_at: u64,
}

/// Which reply an applied entry owes.
enum Owed {
    Proposal(Vec<u8>),
    ConfChange(Vec<u8>, Result<ConfState, ProposeError>),
    /// A leader's refusal of the change proposed with this context.
    Refused(Vec<u8>, Refusal),
}

pub(crate) fn start<SM, T>(
    config: NodeConfig,
    mut sm: SM,
    transport: Arc<T>,
    runtime: RaftRuntime,
) -> Result<Arc<NodeHandle<SM::Output>>, StartError>
where
    SM: StateMachine,
    T: Transport,
{
    config.validate()?;
    let io = |e: std::io::Error| StartError::Storage(StorageError::Io(e));
    let sm_err = |e: SM::Error| StartError::StateMachine(e.to_string());
    std::fs::create_dir_all(config.log_dir()).map_err(io)?;
    std::fs::create_dir_all(config.snap_dir()).map_err(io)?;
    remove_stale_snapshot_files(&config.snap_dir()).map_err(io)?;

    let mut log = LogStore::open(&config.log_dir())?;
    let mut applied = sm.applied();
    if log.is_empty() && applied.index == 0 {
        if let Bootstrap::Initial(voters) = &config.bootstrap {
            // Persist the initial configuration before the node can ever campaign:
            // a crash right after this cannot leave an empty voter set.
            let mut cs = ConfState::default();
            cs.set_voters(voters.clone());
            sm.apply(vec![ApplyEntry {
                index: INITIAL_INDEX,
                term: INITIAL_TERM,
                data: None,
                conf_state: Some(encode_conf_state(&cs)),
            }])
            .map_err(sm_err)?;
            sm.sync().map_err(sm_err)?;
            applied = sm.applied();
        }
    }
    let conf_state = decode_conf_state(&applied.conf_state)
        .map_err(|e| StorageError::Corrupt(format!("applied conf state: {e}")))?;
    // Reconcile the log with the state machine after a crash: the state machine may
    // have applied (or restored a snapshot) past what the log recorded.
    if applied.index > log.last_index_now() {
        let mut meta = raft::eraftpb::SnapshotMetadata::default();
        meta.index = applied.index;
        meta.term = applied.term;
        meta.set_conf_state(conf_state.clone());
        log.apply_snapshot(&meta)?;
    } else if applied.index > log.hard_state().commit {
        log.set_commit(applied.index);
    }
    if applied.index < log.snapshot_index() {
        return Err(StorageError::Corrupt(format!(
            "state machine applied index {} is behind the log's compaction point {}",
            applied.index,
            log.snapshot_index()
        ))
        .into());
    }
    let removed = removed_from(&conf_state, config.id);
    if removed {
        tracing::warn!(
            node = config.id,
            "this node's state says it was removed from the cluster"
        );
    }
    log.set_conf_state(conf_state);

    let raft_config = raft::Config {
        id: config.id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied: applied.index,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        // One append message per follower per Ready, not one per proposal: under load
        // that is most of the messages (and their acknowledgements) a write costs.
        batch_append: true,
        // No empty append to every follower each time the commit index moves: the
        // driver tells followers itself (`commit_notice`).
        skip_bcast_commit: true,
        max_uncommitted_size: config.max_uncommitted_size,
        ..Default::default()
    };
    raft_config.validate()?;
    let raw = RawNode::new(&raft_config, log, &raft_logger(config.id))?;

    let wake = Arc::new(Notify::new());
    let (req_tx, req_rx) = crossbeam_channel::bounded(config.max_pending_requests);
    let (ev_tx, ev_rx) = crossbeam_channel::bounded(config.max_pending_requests);
    let req_tx = ToRaft::new(req_tx, Arc::clone(&wake));
    let ev_tx = ToRaft::new(ev_tx, Arc::clone(&wake));
    let (status_tx, status_rx) = watch::channel(NodeStatus {
        id: config.id,
        removed,
        ..Default::default()
    });
    let mailbox = Mailbox {
        tx: ev_tx,
        id: config.id,
        snap_dir: config.snap_dir(),
        status: status_rx.clone(),
    };
    let handle = Arc::new(NodeHandle {
        id: config.id,
        tx: req_tx,
        mailbox: mailbox.clone(),
        status: status_rx,
        request_timeout: config.request_timeout,
        boot: rand::random(),
        seq: AtomicU64::new(0),
    });
    let mut driver = Driver {
        id: config.id,
        raw,
        sm,
        transport,
        mailbox,
        requests: req_rx,
        events: ev_rx,
        wake,
        status: status_tx,
        proposals: HashMap::new(),
        conf_changes: HashMap::new(),
        new_reads: Vec::new(),
        reads_in_flight: HashMap::new(),
        reads_waiting_apply: Vec::new(),
        received_snapshots: HashMap::new(),
        snapshot_file: None,
        applied: applied.index,
        term: 0,
        ticks: 0,
        read_seq: 0,
        leave_joint: false,
        removed,
        last_hand_over: None,
        last_leader_contact: 0,
        last_heard: HashMap::new(),
        last_probe: 0,
        to_apply: Vec::new(),
        to_apply_since: None,
        syncer: None,
        commit_notices: CommitNotices::default(),
        peer_ids: Vec::new(),
        config,
    };
    if let Some(sync) = driver.sm.background_sync() {
        driver.syncer = Some(Syncer::start(driver.id, sync)?);
    }
    driver.term = driver.raw.raft.term;
    driver.publish_status(None);
    std::thread::Builder::new()
        .name(format!("raft-{}", driver.id))
        .spawn(move || runtime.block_on(driver.run_to_end()))
        .map_err(StartError::Spawn)?;
    Ok(handle)
}

/// Pushes `m` onto `out`, split into consecutive appends of at most about `max_bytes`
/// of entries each if it is a `MsgAppend` above that. With `batch_append`, raft-rs
/// merges every append it sends a peer within one Ready into one message, with no size
/// bound: a follower catching up would get one message of up to
/// `max_inflight_msgs` x `max_size_per_msg`, more than the transport carries. Each
/// piece names the entry before it, so the follower accepts them in order as if raft-rs
/// had sent them one by one; a single entry above the bound goes alone.
fn split_append(mut m: Message, max_bytes: u64, out: &mut Vec<Message>) {
    let size = |e: &Entry| u64::from(e.compute_size());
    if m.get_msg_type() != MessageType::MsgAppend
        || m.entries.len() < 2
        || m.entries.iter().map(size).sum::<u64>() <= max_bytes
    {
        out.push(m);
        return;
    }
    let mut pieces: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0;
    for e in m.take_entries() {
        let n = size(&e);
        match pieces.last_mut() {
            Some(piece) if bytes + n <= max_bytes => piece.push(e),
            _ => {
                pieces.push(vec![e]);
                bytes = 0;
            }
        }
        bytes += n;
    }
    let (mut prev_index, mut prev_term) = (m.index, m.log_term);
    for piece in pieces {
        let mut part = m.clone();
        (part.index, part.log_term) = (prev_index, prev_term);
        if let Some(last) = piece.last() {
            (prev_index, prev_term) = (last.index, last.term);
        }
        part.set_entries(piece.into());
        out.push(part);
    }
}

/// Removes half-written snapshot files left by a crash.
fn remove_stale_snapshot_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name.starts_with("recv-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

struct Driver<SM: StateMachine, T> {
    id: u64,
    config: NodeConfig,
    raw: RawNode<LogStore>,
    sm: SM,
    transport: Arc<T>,
    /// Our own mailbox: the transport's feedback channel, and a way to report to
    /// ourselves what must not be stepped between `ready()` and `advance()`.
    mailbox: Mailbox,
    requests: Receiver<Request<SM::Output>>,
    events: Receiver<Event>,
    /// Notified by whatever queues a request or an event.
    wake: Arc<Notify>,
    status: watch::Sender<NodeStatus>,
    /// Proposals waiting for their entry to be applied here, by request id.
    proposals: HashMap<Vec<u8>, Pending<Result<SM::Output, ProposeError>>>,
    conf_changes: HashMap<Vec<u8>, Pending<Result<ConfState, ProposeError>>>,
    /// Reads received since the last ReadIndex was issued.
    new_reads: Vec<ReadReply>,
    reads_in_flight: HashMap<Vec<u8>, InFlightRead>,
    /// Reads whose read index is known, waiting for `applied` to reach it.
    reads_waiting_apply: Vec<(u64, ReadReply)>,
    /// Snapshot files received in full, by (term, index), not yet installed.
    received_snapshots: HashMap<(u64, u64), PathBuf>,
    /// The snapshot file this node built last and offers to followers.
    snapshot_file: Option<SnapshotFile>,
    applied: u64,
    /// Term last seen; a change fails every pending proposal and in-flight read.
    term: u64,
    ticks: u64,
    read_seq: u64,
    /// A joint configuration was applied: leave it once this Ready is advanced.
    leave_joint: bool,
    /// This node was removed from the cluster (published in `NodeStatus::removed`).
    removed: bool,
    /// Tick of the last leadership transfer a removed leader started.
    last_hand_over: Option<u64>,
    /// Tick of the last message from the leader (or of being leader).
    last_leader_contact: u64,
    /// Tick of the last probe sent (see [`PROBE_CONTEXT`]).
    last_probe: u64,
    /// Tick of the last message from each peer: which voters are up, for the
    /// leader's check that a membership change keeps a quorum of them.
    last_heard: HashMap<u64, u64>,
    /// Committed entries handed out by raft-rs and not applied yet, and since when.
    /// While more work is queued they wait (a bounded time and count), so that one
    /// state machine batch covers several Readys.
    to_apply: Vec<Entry>,
    to_apply_since: Option<Instant>,
    /// The state machine's background sync, when it has one.
    syncer: Option<Syncer>,
    /// As leader: which commit index each follower was told, and when it must be.
    commit_notices: CommitNotices,
    /// The other members' ids, refilled each round `tell_commit` runs (kept to reuse
    /// its allocation).
    peer_ids: Vec<u64>,
}

/// A thread that syncs the state machine before the log is compacted (see
/// [`StateMachine::background_sync`]): it takes the applied index at the request and
/// answers with it once everything up to there is durable.
struct Syncer {
    requests: Option<crossbeam_channel::Sender<u64>>,
    done: Receiver<(u64, Result<(), String>)>,
    in_flight: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(
        node: u64,
        mut sync: crate::state_machine::BackgroundSync,
    ) -> Result<Syncer, StartError> {
        let (requests, rx) = crossbeam_channel::bounded::<u64>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("sm-sync-{node}"))
            .spawn(move || {
                // Ends when the driver (the only sender) is gone.
                while let Ok(index) = rx.recv() {
                    if done_tx.send((index, sync())).is_err() {
                        return;
                    }
                }
            })
            .map_err(StartError::Spawn)?;
        Ok(Syncer {
            requests: Some(requests),
            done,
            in_flight: false,
            thread: Some(thread),
        })
    }

    /// Ends the thread (after the sync it is running, if any), so that what it holds
    /// of the state machine is released.
    fn stop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<SM: StateMachine, T: Transport> Driver<SM, T> {
    async fn run_to_end(mut self) {
        let result = self.run().await;
        let (failure, shutdown) = match result {
            Ok(s) => (None, s),
            Err(Fatal(msg)) => {
                tracing::error!(node = self.id, "raft node stopped: {msg}");
                (Some(msg), None)
            }
        };
        if failure.is_none() {
            // Wait for a background sync first: `sync` must not run beside it.
            if let Err(Fatal(e)) = self.sync_done(true) {
                tracing::error!(node = self.id, "background state machine sync failed: {e}");
            }
            if let Err(e) = self.sm.sync() {
                tracing::error!(node = self.id, "final state machine sync failed: {e}");
            }
        }
        self.fail_everything_stopped();
        let failed = failure.is_some();
        self.publish_status(failure);
        self.status.send_modify(|s| s.stopped = true);
        // Release the log and the state machine before telling the caller we are gone.
        if let Some(s) = self.syncer.as_mut() {
            s.stop();
        }
        let Driver { raw, sm, .. } = self;
        drop(raw);
        if failed {
            // Leave the state machine as a crash would: its destructor may write and
            // sync again (sled's unwraps a failed sync and panics) on a disk that just
            // failed. The process exits next; recovery when it restarts does not
            // depend on the destructor. (Its files stay open until then: the same
            // process cannot reopen the directory.)
            std::mem::forget(sm);
        } else {
            drop(sm);
        }
        if let Some(s) = shutdown {
            let _ = s.send(());
        }
    }

    async fn run(&mut self) -> Result<Option<oneshot::Sender<()>>, Fatal> {
        let tick = self.config.tick;
        let mut next_tick = Instant::now() + tick;
        // Commit notices were queued at the end of the last round: send them first.
        let mut told = false;
        loop {
            if !told && self.requests.is_empty() && self.events.is_empty() {
                // Runs the transport's tasks while it waits (see `RaftRuntime`).
                let until = self
                    .commit_notices
                    .due()
                    .map_or(next_tick, |due| due.min(next_tick));
                let timeout = until.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
            }
            for _ in 0..MAX_DRAIN {
                let mut idle = true;
                match self.requests.try_recv() {
                    Ok(req) => {
                        idle = false;
                        if let Some(done) = self.on_request(req) {
                            return Ok(Some(done));
                        }
                    }
                    // Every handle is gone: nobody can use this node any more.
                    Err(TryRecvError::Disconnected) => return Ok(None),
                    Err(TryRecvError::Empty) => {}
                }
                if let Ok(e) = self.events.try_recv() {
                    idle = false;
                    self.on_event(e)?;
                }
                if idle {
                    break;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.ticks += 1;
                next_tick += tick;
                if next_tick < now {
                    // The thread fell behind (a long fsync): do not tick in a burst.
                    next_tick = now + tick;
                }
                self.on_tick(now);
                self.maybe_probe();
                self.maybe_hand_over();
            }
            self.issue_reads();
            self.on_ready().await?;
            let busy = !self.requests.is_empty() || !self.events.is_empty();
            let due = self.to_apply.len() >= APPLY_BATCH_MAX
                || self
                    .to_apply_since
                    .is_some_and(|t| t.elapsed() >= APPLY_DELAY_MAX);
            if !busy || due {
                self.flush_apply()?;
            }
            self.maybe_snapshot_and_compact()?;
            self.fail_pending_if_removed();
            self.publish_status(None);
            // After this round's Ready: its acknowledgements may have moved the commit.
            told = self.tell_commit(Instant::now());
        }
    }

    fn on_request(&mut self, req: Request<SM::Output>) -> Option<oneshot::Sender<()>> {
        match req {
            // A removed node's proposals and reads never reach Raft: they would only
            // wait for their deadline.
            Request::Propose { reply, .. } if self.removed => {
                let _ = reply.send(Err(ProposeError::Removed));
            }
            Request::ConfChange { reply, .. } if self.removed => {
                let _ = reply.send(Err(ProposeError::Removed));
            }
            Request::ReadIndex { reply, .. } if self.removed => {
                let _ = reply.send(Err(ReadError::Removed));
            }
            Request::Propose {
                ctx,
                data,
                deadline,
                reply,
            } => match self.raw.propose(ctx.clone(), data) {
                Ok(()) => {
                    self.proposals.insert(ctx, Pending { deadline, reply });
                }
                Err(_) => {
                    let _ = reply.send(Err(ProposeError::Dropped));
                }
            },
            Request::ConfChange {
                ctx,
                cc,
                deadline,
                reply,
            } => {
                // raft-rs silently turns a second pending change into an empty entry:
                // refuse it here instead of letting the caller wait for nothing. A
                // follower forwards the change; the leader screens it on arrival
                // (`screen_forwarded_conf_changes`).
                if self.raw.raft.state == StateRole::Leader {
                    if let Err(refusal) = self.check_conf_change(&cc) {
                        self.on_refusal(refusal);
                        let _ = reply.send(Err(refusal.error()));
                        return None;
                    }
                }
                match self.raw.propose_conf_change(ctx.clone(), cc) {
                    Ok(()) => {
                        self.conf_changes.insert(ctx, Pending { deadline, reply });
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(ProposeError::Dropped));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::InvalidConfChange(e.to_string())));
                    }
                }
            }
            Request::ReadIndex { deadline, reply } => {
                self.new_reads.push(Pending { deadline, reply });
            }
            Request::TransferLeader(to) => self.raw.transfer_leader(to),
            Request::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::debug!(node = self.id, "campaign refused: {e}");
                }
            }
            Request::Shutdown(done) => return Some(done),
        }
        None
    }

    fn on_event(&mut self, event: Event) -> Result<(), Fatal> {
        match event {
            Event::Message(mut m) => {
                if m.to != self.id {
                    tracing::warn!(
                        node = self.id,
                        to = m.to,
                        "dropping a message addressed to another node"
                    );
                    return Ok(());
                }
                if m.get_msg_type() == MessageType::MsgHeartbeatResponse
                    && m.context.as_ref() == PROBE_CONTEXT
                {
                    return Ok(());
                }
                if m.get_msg_type() == MessageType::MsgPropose
                    && self.raw.raft.state == StateRole::Leader
                {
                    self.screen_forwarded_conf_changes(&mut m);
                    if m.entries.is_empty() {
                        return Ok(());
                    }
                }
                let from = m.from;
                let forwarded = m.get_msg_type() == MessageType::MsgPropose;
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(node = self.id, "step: {e}");
                } else if forwarded && self.raw.raft.state == StateRole::Leader {
                    let last = self.raw.raft.raft_log.last_index();
                    self.commit_notices.on_forwarded(from, last);
                }
                if from != raft::INVALID_ID && from == self.raw.raft.leader_id {
                    self.last_leader_contact = self.ticks;
                }
                if from != raft::INVALID_ID {
                    self.last_heard.insert(from, self.ticks);
                }
            }
            Event::Snapshot { msg, path } => {
                let meta = msg.get_snapshot().get_metadata();
                let key = (meta.term, meta.index);
                if let Some(old) = self.received_snapshots.insert(key, path) {
                    let _ = std::fs::remove_file(old);
                }
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(node = self.id, "step snapshot: {e}");
                }
            }
            Event::Unreachable(to) => self.raw.report_unreachable(to),
            Event::SnapshotStatus { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Event::Fatal(reason) => return Err(Fatal(reason)),
            Event::NotMember { from, applied } => self.on_not_member(from, applied),
        }
        Ok(())
    }

    /// Deadlines, and re-issuing reads raft-rs may have dropped.
    fn on_tick(&mut self, now: Instant) {
        let expired: Vec<Vec<u8>> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(p) = self.proposals.remove(&k) {
                let _ = p
                    .reply
                    .send(Err(ProposeError::Uncertain(UncertainReason::Timeout)));
            }
        }
        let expired: Vec<Vec<u8>> = self
            .conf_changes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(p) = self.conf_changes.remove(&k) {
                let _ = p
                    .reply
                    .send(Err(ProposeError::Uncertain(UncertainReason::Timeout)));
            }
        }
        let retry_after = self.config.election_ticks as u64;
        let ticks = self.ticks;
        let mut reissue = Vec::new();
        self.reads_in_flight.retain(|ctx, r| {
            let (live, dead): (Vec<_>, Vec<_>) =
                r.waiters.drain(..).partition(|w| w.deadline > now);
            for w in dead {
                let _ = w.reply.send(Err(ReadError::Timeout));
            }
            r.waiters = live;
            if !r.waiters.is_empty() && ticks >= r.issued_at + retry_after {
                r.issued_at = ticks;
                reissue.push(ctx.clone());
            }
            !r.waiters.is_empty()
        });
        for ctx in reissue {
            self.raw.read_index(ctx);
        }
        let (live, dead): (Vec<_>, Vec<_>) = self
            .reads_waiting_apply
            .drain(..)
            .partition(|(_, w)| w.deadline > now);
        for (_, w) in dead {
            let _ = w.reply.send(Err(ReadError::Timeout));
        }
        self.reads_waiting_apply = live;
    }

    /// All reads received since the last call share one ReadIndex request.
    fn issue_reads(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.new_reads);
        if self.raw.raft.leader_id == raft::INVALID_ID {
            for w in waiters {
                let _ = w.reply.send(Err(ReadError::NoLeader));
            }
            return;
        }
        self.read_seq += 1;
        let mut ctx = Vec::with_capacity(17);
        ctx.push(b'r');
        ctx.extend_from_slice(&self.id.to_be_bytes());
        ctx.extend_from_slice(&self.read_seq.to_be_bytes());
        self.raw.read_index(ctx.clone());
        self.reads_in_flight.insert(
            ctx,
            InFlightRead {
                waiters,
                issued_at: self.ticks,
            },
        );
    }

    fn on_read_state(&mut self, rs: ReadState) {
        if let Some(r) = self.reads_in_flight.remove(&rs.request_ctx) {
            for w in r.waiters {
                self.reads_waiting_apply.push((rs.index, w));
            }
        }
    }

    /// Processes one Ready in the order raft-rs documents ("Processing the Ready
    /// State" in raft-rs's crate docs). Nothing is stepped, proposed or campaigned
    /// between `ready()` and `advance()`.
    async fn on_ready(&mut self) -> Result<(), Fatal> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // 1. Messages a leader may send before its own log write is durable: it
        //    replicates while it persists. When this Ready is fsynced they are put
        //    on the wire first: the transport runs on this thread, which the fsync
        //    blocks. Otherwise they wait for the next pause of the loop, so that a
        //    commit is applied and answered before it is broadcast.
        if self.send_messages(rd.take_messages()) && rd.must_sync() {
            tokio::task::yield_now().await;
        }
        // 2. A snapshot from the leader: its state first, then the log's metadata.
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot())?;
        }
        for rs in rd.take_read_states() {
            self.on_read_state(rs);
        }
        // 3. Committed entries: these are already durable in the local log. Applied
        //    after this Ready (see `flush_apply`).
        self.queue_apply(rd.take_committed_entries());
        // 4. New entries and hard state in ONE log write, dropping any conflicting
        //    suffix; fsynced iff raft-rs says so (new entries, term or vote).
        self.raw
            .mut_store()
            .append(rd.entries(), rd.hs(), rd.must_sync())?;
        // 5. Votes and append acknowledgements: ONLY now that the batch is durable.
        let answered = self.send_messages(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send_messages(light.take_messages());
        self.queue_apply(light.take_committed_entries());
        self.maybe_leave_joint();
        self.maybe_hand_over();
        self.answer_reads();
        self.check_term();
        if answered {
            // An acknowledgement or a vote goes out before this thread applies.
            tokio::task::yield_now().await;
            // And the thread it woke gets the CPU first. Over loopback TCP, Linux wakes
            // the receiver on the sender's CPU and runs it once the sender stops, so on
            // a machine shared with the other replicas (dev-cluster, tests, the
            // benchmark) the leader counted this acknowledgement only after this apply.
            // Elsewhere this is one system call that returns at once.
            std::thread::yield_now();
        }
        Ok(())
    }

    fn queue_apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.to_apply_since.get_or_insert_with(Instant::now);
        self.to_apply.extend(entries);
    }

    /// Applies every queued committed entry in one state machine batch and tells
    /// raft-rs how far this node has applied.
    fn flush_apply(&mut self) -> Result<(), Fatal> {
        if self.to_apply.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.to_apply);
        self.to_apply_since = None;
        self.apply(entries)?;
        self.raw.advance_apply_to(self.applied);
        self.answer_reads();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Fatal> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(entries.len());
        let mut owed = Vec::with_capacity(entries.len());
        let mut leave_joint = false;
        for mut e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    let data = (!e.data.is_empty()).then(|| e.take_data().to_vec());
                    let context = e.take_context().to_vec();
                    match Refusal::parse(&context) {
                        Some((refusal, ctx)) if data.is_none() => {
                            owed.push(Owed::Refused(ctx.to_vec(), refusal));
                        }
                        _ => owed.push(Owed::Proposal(context)),
                    }
                    batch.push(ApplyEntry {
                        index: e.index,
                        term: e.term,
                        data,
                        conf_state: None,
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    // An empty V2 entry is "leave the joint configuration": never skip it.
                    let cc = if e.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::parse_from_bytes(&e.data).map(|c| c.into_v2())
                    } else {
                        ConfChangeV2::parse_from_bytes(&e.data)
                    }
                    .map_err(|err| {
                        Fatal(format!(
                            "committed conf change {} undecodable: {err}",
                            e.index
                        ))
                    })?;
                    let was_member = in_conf(&self.raw.raft.prs().conf().to_conf_state(), self.id);
                    let (result, conf_state) = match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => {
                            if !cs.voters_outgoing.is_empty() {
                                leave_joint = true;
                            }
                            if was_member && !in_conf(&cs, self.id) && !self.removed {
                                tracing::warn!(
                                    node = self.id,
                                    index = e.index,
                                    "this node was removed from the cluster"
                                );
                                self.removed = true;
                                // raft-rs keeps a removed leader leading but drops
                                // every proposal it gets: see `maybe_hand_over`.
                            }
                            // A snapshot built before this change does not have it: a
                            // node added by it must get a newer one (raft-rs refuses a
                            // snapshot whose configuration lacks the receiver).
                            self.raw.store().clear_available_snapshot();
                            let bytes = encode_conf_state(&cs);
                            (Ok(cs), Some(bytes))
                        }
                        Err(err) => (Err(ProposeError::InvalidConfChange(err.to_string())), None),
                    };
                    owed.push(Owed::ConfChange(e.take_context().to_vec(), result));
                    batch.push(ApplyEntry {
                        index: e.index,
                        term: e.term,
                        data: None,
                        conf_state,
                    });
                }
            }
        }
        let last = batch.last().map(|e| e.index).unwrap_or(self.applied);
        let proposals = &mut self.proposals;
        let conf_changes = &mut self.conf_changes;
        self.sm
            .apply_answering(batch, &mut |outputs| {
                for (owed, output) in std::mem::take(&mut owed).into_iter().zip(outputs) {
                    match owed {
                        Owed::Proposal(ctx) => {
                            if let Some(p) = proposals.remove(&ctx) {
                                let _ = p.reply.send(Ok(output));
                            }
                        }
                        Owed::ConfChange(ctx, result) => {
                            if let Some(p) = conf_changes.remove(&ctx) {
                                let _ = p.reply.send(result);
                            }
                        }
                        Owed::Refused(ctx, refusal) => {
                            if let Some(p) = conf_changes.remove(&ctx) {
                                let _ = p.reply.send(Err(refusal.error()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| Fatal(format!("state machine apply: {e}")))?;
        self.applied = self.applied.max(last);
        if leave_joint {
            // Proposed after `advance` (see `on_ready`): nothing may be proposed
            // between `ready()` and `advance()`.
            self.leave_joint = true;
        }
        Ok(())
    }

    /// raft-rs may never leave a joint configuration by itself after a leader change:
    /// the leader proposes the empty V2 change that does.
    fn maybe_leave_joint(&mut self) {
        if !std::mem::take(&mut self.leave_joint) || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if let Err(e) = self
            .raw
            .propose_conf_change(Vec::new(), ConfChangeV2::default())
        {
            tracing::warn!(node = self.id, "propose leaving joint configuration: {e}");
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        let (done, wait): (Vec<_>, Vec<_>) = self
            .reads_waiting_apply
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        self.reads_waiting_apply = wait;
        for (index, w) in done {
            let _ = w.reply.send(Ok(index));
        }
    }

    /// A new term means a new leader (or none): every proposal still pending may or
    /// may not commit, and in-flight ReadIndex requests were dropped. Fail them all;
    /// a deposed leader never reports success for an entry it did not see applied.
    fn check_term(&mut self) {
        let term = self.raw.raft.term;
        if term == self.term {
            return;
        }
        self.term = term;
        self.commit_notices.clear();
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(ProposeError::Uncertain(
                UncertainReason::LeadershipChanged,
            )));
        }
        for (_, p) in self.conf_changes.drain() {
            let _ = p.reply.send(Err(ProposeError::Uncertain(
                UncertainReason::LeadershipChanged,
            )));
        }
        for (_, r) in self.reads_in_flight.drain() {
            for w in r.waiters {
                let _ = w.reply.send(Err(ReadError::LeadershipChanged));
            }
        }
    }

    /// A node that learned it was removed (by applying the change or from a member)
    /// will not see its pending proposals applied nor its reads confirmed: fail them
    /// now rather than at their deadline. Proposals may still commit elsewhere.
    fn fail_pending_if_removed(&mut self) {
        if !self.removed {
            return;
        }
        let uncertain = ProposeError::Uncertain(UncertainReason::Removed);
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(uncertain.clone()));
        }
        for (_, p) in self.conf_changes.drain() {
            let _ = p.reply.send(Err(uncertain.clone()));
        }
        let waiting = self.reads_waiting_apply.drain(..).map(|(_, w)| w);
        let in_flight = self.reads_in_flight.drain().flat_map(|(_, r)| r.waiters);
        for w in self.new_reads.drain(..).chain(waiting).chain(in_flight) {
            let _ = w.reply.send(Err(ReadError::Removed));
        }
    }

    /// As leader, queues an empty append to each follower that must hear of the
    /// commit index now (see `commit_notice`); it goes out with the next Ready. True
    /// if it queued any.
    fn tell_commit(&mut self, now: Instant) -> bool {
        if self.raw.raft.state != StateRole::Leader {
            self.commit_notices.clear();
            return false;
        }
        let me = self.id;
        self.peer_ids.clear();
        self.peer_ids.extend(
            self.raw
                .raft
                .prs()
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != me),
        );
        let committed = self.raw.raft.raft_log.committed;
        let due = self.commit_notices.due_now(now, committed, &self.peer_ids);
        for &to in &due {
            self.raw.raft.send_append(to);
        }
        !due.is_empty()
    }

    /// Hands `msgs` to the transport; true if there were any.
    fn send_messages(&mut self, msgs: Vec<Message>) -> bool {
        if msgs.is_empty() {
            return false;
        }
        let mut plain = Vec::with_capacity(msgs.len());
        for m in msgs {
            if m.get_msg_type() != MessageType::MsgSnapshot {
                split_append(m, self.config.max_size_per_msg, &mut plain);
                continue;
            }
            let meta = m.get_snapshot().get_metadata();
            let file = self
                .snapshot_file
                .as_ref()
                .filter(|f| f.path == snapshot_path(&self.config.snap_dir(), meta.term, meta.index))
                .cloned();
            match file {
                Some(file) => self.transport.send_snapshot(m, file, self.mailbox.clone()),
                // Reported through our own queue: report_snapshot steps raft, which is
                // not allowed between ready() and advance().
                None => self.mailbox.snapshot_done(m.to, false),
            }
        }
        if !plain.is_empty() {
            for m in &plain {
                self.commit_notices.on_send(m);
            }
            self.transport.send(plain, &self.mailbox);
        }
        true
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), Fatal> {
        // Entries committed before the snapshot first, so the order of applies holds.
        self.flush_apply()?;
        // A background sync must not run into the restore (it would sync the store
        // being replaced); the log is reset below, so what it made durable is moot.
        self.sync_done(true)?;
        let meta = snap.get_metadata();
        let path = self
            .received_snapshots
            .remove(&(meta.term, meta.index))
            .ok_or_else(|| {
                Fatal(format!(
                    "no received file for snapshot {}/{}",
                    meta.term, meta.index
                ))
            })?;
        let mut reader = BufReader::new(File::open(&path)?);
        let applied = self
            .sm
            .restore(&mut reader)
            .map_err(|e| Fatal(format!("restore snapshot: {e}")))?;
        if applied.index != meta.index || applied.term != meta.term {
            return Err(Fatal(format!(
                "snapshot file holds {}/{}, raft says {}/{}",
                applied.term, applied.index, meta.term, meta.index
            )));
        }
        // The state is durable: now the log's metadata.
        self.raw.mut_store().apply_snapshot(meta)?;
        self.applied = meta.index;
        let _ = std::fs::remove_file(&path);
        let stale: Vec<_> = self
            .received_snapshots
            .keys()
            .filter(|(_, index)| *index <= meta.index)
            .copied()
            .collect();
        for k in stale {
            if let Some(p) = self.received_snapshots.remove(&k) {
                let _ = std::fs::remove_file(p);
            }
        }
        tracing::info!(
            node = self.id,
            index = meta.index,
            term = meta.term,
            "installed snapshot"
        );
        Ok(())
    }

    fn maybe_snapshot_and_compact(&mut self) -> Result<(), Fatal> {
        if self.raw.store().take_snapshot_wanted() {
            self.build_snapshot()?;
        }
        let margin = self.config.compaction_margin;
        if let Some(synced) = self.sync_done(false)? {
            self.compact_log(synced.saturating_sub(margin))?;
        }
        let compacted = self.raw.store().snapshot_index();
        let threshold = self.config.snapshot_threshold.max(1);
        if self.applied < compacted + threshold + margin {
            return Ok(());
        }
        // The entries about to go must be durable in the state machine first.
        match &mut self.syncer {
            Some(s) => {
                if !s.in_flight {
                    s.requests
                        .as_ref()
                        .and_then(|r| r.send(self.applied).ok())
                        .ok_or_else(|| Fatal("the state machine sync thread is gone".into()))?;
                    s.in_flight = true;
                }
            }
            None => {
                self.sm
                    .sync()
                    .map_err(|e| Fatal(format!("state machine sync: {e}")))?;
                self.compact_log(self.applied - margin)?;
            }
        }
        Ok(())
    }

    /// The outcome of the background sync in flight, if it has finished (or, with
    /// `wait`, once it has): the applied index it made durable. Its failure is fatal.
    fn sync_done(&mut self, wait: bool) -> Result<Option<u64>, Fatal> {
        let Some(s) = self.syncer.as_mut().filter(|s| s.in_flight) else {
            return Ok(None);
        };
        let outcome = if wait {
            s.done.recv().ok()
        } else {
            match s.done.try_recv() {
                Ok(o) => Some(o),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => None,
            }
        };
        s.in_flight = false;
        match outcome {
            Some((index, Ok(()))) => Ok(Some(index)),
            Some((_, Err(e))) => Err(Fatal(format!("state machine sync: {e}"))),
            None => Err(Fatal("the state machine sync thread is gone".into())),
        }
    }

    /// Drops the log through `to` (a no-op at or below the compaction point, e.g. for
    /// a sync that finished after a snapshot was installed).
    fn compact_log(&mut self, to: u64) -> Result<(), Fatal> {
        if to > self.raw.store().snapshot_index() {
            self.raw.mut_store().compact(to)?;
            tracing::debug!(node = self.id, to, "compacted the raft log");
        }
        Ok(())
    }

    /// Writes the state machine's image to a file and offers it to raft-rs.
    fn build_snapshot(&mut self) -> Result<(), Fatal> {
        let dir = self.config.snap_dir();
        let tmp = dir.join("building.tmp");
        let mut w = CrcWriter::new(BufWriter::new(File::create(&tmp)?));
        let applied = self
            .sm
            .write_snapshot(&mut w)
            .map_err(|e| Fatal(format!("write snapshot: {e}")))?;
        let (size, crc32, inner) = w.finish();
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let path = snapshot_path(&dir, applied.term, applied.index);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&dir)?;
        let conf_state = decode_conf_state(&applied.conf_state)
            .map_err(|e| Fatal(format!("applied conf state: {e}")))?;
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = applied.index;
        meta.term = applied.term;
        meta.set_conf_state(conf_state);
        snap.data = encode_descriptor(size, crc32).into();
        self.raw.store().set_available_snapshot(snap);
        let new = SnapshotFile { path, size, crc32 };
        if let Some(old) = self.snapshot_file.replace(new.clone()) {
            if old.path != new.path {
                let _ = std::fs::remove_file(old.path);
            }
        }
        tracing::info!(
            node = self.id,
            index = applied.index,
            size,
            "built snapshot"
        );
        Ok(())
    }

    fn publish_status(&self, failure: Option<String>) {
        let raft = &self.raw.raft;
        let cs = raft.prs().conf().to_conf_state();
        let mut progress = Vec::new();
        if raft.state == StateRole::Leader {
            progress = raft.prs().iter().map(|(id, p)| (*id, p.matched)).collect();
            progress.sort_unstable();
        }
        let mut voters = cs.voters.clone();
        voters.sort_unstable();
        let mut voters_outgoing = cs.voters_outgoing.clone();
        voters_outgoing.sort_unstable();
        let mut learners = cs.learners.clone();
        learners.sort_unstable();
        let status = NodeStatus {
            id: self.id,
            term: raft.term,
            leader_id: raft.leader_id,
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Follower => Role::Follower,
            },
            commit: raft.raft_log.committed,
            applied: self.applied,
            first_index: self.raw.store().snapshot_index() + 1,
            last_index: raft.raft_log.last_index(),
            voters,
            voters_outgoing,
            learners,
            progress,
            failed: failure,
            removed: self.removed,
            stopped: false,
        };
        // Waiters are told about changes of role, leadership, membership and the
        // node's life; the indexes and progress move with every write and are only
        // updated in place (readers of `status()` still see them), so that a write
        // does not wake every subscriber's thread.
        self.status.send_if_modified(|s| {
            if *s == status {
                return false;
            }
            let notify = s.term != status.term
                || s.leader_id != status.leader_id
                || s.role != status.role
                || s.voters != status.voters
                || s.voters_outgoing != status.voters_outgoing
                || s.learners != status.learners
                || s.failed != status.failed
                || s.removed != status.removed
                || s.stopped != status.stopped;
            *s = status;
            notify
        });
    }

    fn fail_everything_stopped(&mut self) {
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(ProposeError::Stopped));
        }
        for (_, p) in self.conf_changes.drain() {
            let _ = p.reply.send(Err(ProposeError::Stopped));
        }
        for (_, r) in self.reads_in_flight.drain() {
            for w in r.waiters {
                let _ = w.reply.send(Err(ReadError::Stopped));
            }
        }
        for w in self.new_reads.drain(..) {
            let _ = w.reply.send(Err(ReadError::Stopped));
        }
        for (_, w) in self.reads_waiting_apply.drain(..) {
            let _ = w.reply.send(Err(ReadError::Stopped));
        }
        while let Ok(req) = self.requests.try_recv() {
            match req {
                Request::Propose { reply, .. } => {
                    let _ = reply.send(Err(ProposeError::Stopped));
                }
                Request::ConfChange { reply, .. } => {
                    let _ = reply.send(Err(ProposeError::Stopped));
                }
                Request::ReadIndex { reply, .. } => {
                    let _ = reply.send(Err(ReadError::Stopped));
                }
                Request::Shutdown(done) => {
                    let _ = done.send(());
                }
                Request::TransferLeader(_) | Request::Campaign => {}
            }
        }
    }
}

/// Where a snapshot built locally at (term, index) lives.
pub(crate) fn snapshot_path(dir: &Path, term: u64, index: u64) -> PathBuf {
    dir.join(format!("snap-{term:020}-{index:020}.snap"))
}

/// `Snapshot.data` carries only this descriptor; the image travels as a file.
pub fn encode_descriptor(size: u64, crc32: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&crc32.to_be_bytes());
    v
}

/// Reads a descriptor written by [`encode_descriptor`]: (size, crc32).
pub fn decode_descriptor(data: &[u8]) -> Option<(u64, u32)> {
    let size = u64::from_be_bytes(data.get(0..8)?.try_into().ok()?);
    let crc = u32::from_be_bytes(data.get(8..12)?.try_into().ok()?);
    Some((size, crc))
}

/// Counts and checksums what passes through.
pub struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl<W: Write> CrcWriter<W> {
    pub fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// (bytes written, crc32, the inner writer).
    pub fn finish(self) -> (u64, u32, W) {
        (self.size, self.hasher.finalize(), self.inner)
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The default tick when tests want things fast.
pub const FAST_TICK: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn append(entries: usize, data: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        (m.to, m.from, m.term, m.commit) = (2, 1, 3, 7);
        (m.index, m.log_term) = (5, 2);
        let es: Vec<Entry> = (0..entries as u64)
            .map(|i| {
                let mut e = Entry::default();
                e.index = 6 + i;
                e.term = if i < 4 { 2 } else { 3 };
                e.data = vec![b'x'; data].into();
                e
            })
            .collect();
        m.set_entries(es.into());
        m
    }

    #[test]
    fn a_large_append_is_split_into_consecutive_appends() {
        let whole = append(10, 100);
        let mut out = Vec::new();
        split_append(whole.clone(), 350, &mut out);
        assert!(out.len() > 1, "split into {}", out.len());
        let mut prev = (whole.index, whole.log_term);
        let mut all = Vec::new();
        for part in &out {
            assert_eq!(part.get_msg_type(), MessageType::MsgAppend);
            assert_eq!((part.to, part.from, part.term, part.commit), (2, 1, 3, 7));
            assert_eq!((part.index, part.log_term), prev);
            let bytes: u32 = part.entries.iter().map(|e| e.compute_size()).sum();
            assert!(bytes <= 350 || part.entries.len() == 1, "{bytes} bytes");
            let last = part.entries.last().unwrap();
            prev = (last.index, last.term);
            all.extend(part.entries.iter().cloned());
        }
        assert_eq!(all, whole.entries.to_vec());
    }

    #[test]
    fn small_appends_and_other_messages_pass_unchanged() {
        for m in [append(10, 10), append(1, 10_000), {
            let mut hb = Message::default();
            hb.set_msg_type(MessageType::MsgHeartbeat);
            hb
        }] {
            let mut out = Vec::new();
            split_append(m.clone(), 350, &mut out);
            assert_eq!(out, vec![m]);
        }
    }
}
