//! The node's public face: its configuration, the handle callers use, the mailbox the
//! transport delivers to, and the events that reach the Raft thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Message,
};
use tokio::sync::{oneshot, watch};

use crate::error::{ProposeError, ReadError, StartError};
use crate::runtime::{RaftRuntime, ToRaft};
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// How a node first comes to life when its directories are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A founding member: the cluster starts with exactly these voters. Every founding
    /// member must be given the same list.
    Initial(Vec<u64>),
    /// A node added later through a membership change: it waits for the leader's
    /// snapshot and does not campaign before it has one.
    Join,
}

/// Configuration of one Raft node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; never 0, never reused after a removal.
    pub id: u64,
    /// Directory for the Raft log (`log/`) and snapshot files (`snap/`).
    pub dir: PathBuf,
    pub bootstrap: Bootstrap,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Ticks without a heartbeat before a follower campaigns (raft-rs randomises
    /// between this and twice this).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log (and keep a snapshot) once this many entries were applied
    /// since the last compaction.
    pub snapshot_threshold: u64,
    /// Entries kept below the applied index at compaction, so a briefly lagging
    /// follower catches up by log rather than by snapshot.
    pub compaction_margin: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Bytes of proposals not yet committed before the leader drops new ones.
    pub max_uncommitted_size: u64,
    /// Default deadline of a proposal or read.
    pub request_timeout: Duration,
    /// Requests that may wait in the node's queue.
    pub max_pending_requests: usize,
}

impl NodeConfig {
    /// Production defaults (etcd-like: 100 ms tick, 1 s election timeout).
    pub fn new(id: u64, dir: impl Into<PathBuf>, bootstrap: Bootstrap) -> Self {
        NodeConfig {
            id,
            dir: dir.into(),
            bootstrap,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_threshold: 10_000,
            compaction_margin: 5_000,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            max_pending_requests: 16_384,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StartError> {
        if self.id == 0 {
            return Err(StartError::Config("id must not be 0".into()));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(StartError::Config(
                "election_ticks must be greater than heartbeat_ticks, which must be > 0".into(),
            ));
        }
        if self.tick.is_zero() {
            return Err(StartError::Config("tick must be > 0".into()));
        }
        if let Bootstrap::Initial(voters) = &self.bootstrap {
            if !voters.contains(&self.id) {
                return Err(StartError::Config(format!(
                    "initial voters {voters:?} do not include this node {}",
                    self.id
                )));
            }
            if voters.contains(&0) {
                return Err(StartError::Config("a voter id is 0".into()));
            }
        }
        Ok(())
    }

    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    pub(crate) fn snap_dir(&self) -> PathBuf {
        self.dir.join("snap")
    }
}

/// The role of a node, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    Candidate,
    PreCandidate,
    Leader,
}

/// A view of the node, published after every Ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub term: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub role: Role,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub voters: Vec<u64>,
    /// The old voters while a joint configuration is in force; empty otherwise.
    pub voters_outgoing: Vec<u64>,
    pub learners: Vec<u64>,
    /// For a leader, each voter's and learner's match index.
    pub progress: Vec<(u64, u64)>,
    /// Set when the node stopped on a fail-stop error.
    pub failed: Option<String>,
    /// This node was a member and is not any more: it applied a membership change
    /// that removed it, its state says so at start, or a member told it that it is
    /// not in the cluster (see [`Mailbox::not_a_member`]). The node keeps running;
    /// its owner should stop it.
    pub removed: bool,
    /// True once the loop has exited.
    pub stopped: bool,
}

/// Everything that reaches the Raft thread from callers. One closed enum, so every
/// trigger of Raft work is visible in one `match` (in `driver.rs`).
pub(crate) enum Request<O> {
    Propose {
        ctx: Vec<u8>,
        data: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<Result<O, ProposeError>>,
    },
    ConfChange {
        ctx: Vec<u8>,
        cc: ConfChangeV2,
        deadline: Instant,
        reply: oneshot::Sender<Result<ConfState, ProposeError>>,
    },
    ReadIndex {
        deadline: Instant,
        reply: oneshot::Sender<Result<u64, ReadError>>,
    },
    TransferLeader(u64),
    Campaign,
    Shutdown(oneshot::Sender<()>),
}

/// Everything that reaches the Raft thread from the network.
pub(crate) enum Event {
    Message(Box<Message>),
    Snapshot {
        msg: Box<Message>,
        path: PathBuf,
    },
    Unreachable(u64),
    SnapshotStatus {
        to: u64,
        ok: bool,
    },
    /// The transport met a fail-stop error on this node's behalf (an fsync of a
    /// received snapshot failed): the node stops.
    Fatal(String),
    /// Member `from` answered this node's traffic with "you are not a member": its
    /// configuration as of its applied index `applied` does not list this node.
    NotMember {
        from: u64,
        applied: u64,
    },
}

/// What the transport's receiving side delivers to. Cloneable, cheap, never blocks:
/// when the node's queue is full the message is dropped and Raft retries.
#[derive(Clone)]
pub struct Mailbox {
    pub(crate) tx: ToRaft<Event>,
    pub(crate) id: u64,
    pub(crate) snap_dir: PathBuf,
    /// The node's published status: which members it knows, for [`Mailbox::non_member`].
    pub(crate) status: watch::Receiver<NodeStatus>,
}

impl Mailbox {
    /// This node's id (the `to` of every message it accepts).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands a Raft message from a peer to the node.
    pub fn step(&self, msg: Message) {
        let _ = self.tx.try_send(Event::Message(Box::new(msg)));
    }

    /// Where a transport writes a snapshot file it is receiving.
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.snap_dir
    }

    /// Hands over a `MsgSnapshot` whose file has been received in full and verified.
    pub fn receive_snapshot(&self, msg: Message, path: PathBuf) {
        let event = Event::Snapshot {
            msg: Box::new(msg),
            path,
        };
        if let Err(
            TrySendError::Full(Event::Snapshot { path, .. })
            | TrySendError::Disconnected(Event::Snapshot { path, .. }),
        ) = self.tx.try_send(event)
        {
            // Dropped (Raft retries the snapshot): do not leave the file behind.
            let _ = std::fs::remove_file(path);
        }
    }

    /// A fail-stop error met on this node's behalf (an fsync failed): the node stops,
    /// as it does for its own storage errors. Never dropped: when the queue is full a
    /// thread waits for room, so the caller (an async task) is not blocked.
    pub fn fatal(&self, reason: String) {
        if let Err(TrySendError::Full(event)) = self.tx.try_send(Event::Fatal(reason)) {
            let tx = self.tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(event);
            });
        }
    }

    /// Whether `from` is not a member of the cluster as this node knows it: `Some` of
    /// this node's applied index when this node is a member itself, its configuration
    /// does not list `from`, and it runs. A transport answers such a sender with that
    /// index, so that a replica that missed its own removal learns of it.
    pub fn non_member(&self, from: u64) -> Option<u64> {
        let s = self.status.borrow();
        let member = |id: u64| {
            s.voters.contains(&id) || s.voters_outgoing.contains(&id) || s.learners.contains(&id)
        };
        (!s.stopped && !s.removed && member(self.id) && !member(from)).then_some(s.applied)
    }

    /// Member `from`, which had applied up to `applied`, says this node is not in the
    /// cluster. The node believes it only if it is a member in its own configuration
    /// and has applied less than `from` had: a replica added again after a removal
    /// has applied its re-addition, which comes after anything that removed it.
    pub fn not_a_member(&self, from: u64, applied: u64) {
        let _ = self.tx.try_send(Event::NotMember { from, applied });
    }

    /// The peer could not be reached.
    pub fn unreachable(&self, to: u64) {
        let _ = self.tx.try_send(Event::Unreachable(to));
    }

    /// A snapshot send to `to` finished.
    pub fn snapshot_done(&self, to: u64, ok: bool) {
        let _ = self.tx.try_send(Event::SnapshotStatus { to, ok });
    }
}

/// The handle callers use: propose, read, change membership, watch status.
pub struct NodeHandle<O> {
    pub(crate) id: u64,
    pub(crate) tx: ToRaft<Request<O>>,
    pub(crate) mailbox: Mailbox,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) request_timeout: Duration,
    /// Random per handle: request ids stay unique across restarts and nodes.
    pub(crate) boot: u64,
    pub(crate) seq: AtomicU64,
}

impl<O: Send + 'static> NodeHandle<O> {
    /// Starts a node: opens its log, reconciles it with the state machine, bootstraps
    /// if the directories are new, and spawns the thread that owns the `RawNode`, on a
    /// runtime of its own.
    pub fn start<SM, T>(
        config: NodeConfig,
        sm: SM,
        transport: Arc<T>,
    ) -> Result<Arc<Self>, StartError>
    where
        SM: StateMachine<Output = O>,
        T: Transport,
    {
        let runtime = RaftRuntime::new().map_err(StartError::Spawn)?;
        NodeHandle::start_on(config, sm, transport, runtime)
    }

    /// [`NodeHandle::start`] on `runtime`, whose handle the transport already spawns
    /// its tasks on: they then run on the Raft thread (see [`RaftRuntime`]).
    pub fn start_on<SM, T>(
        config: NodeConfig,
        sm: SM,
        transport: Arc<T>,
        runtime: RaftRuntime,
    ) -> Result<Arc<Self>, StartError>
    where
        SM: StateMachine<Output = O>,
        T: Transport,
    {
        crate::driver::start(config, sm, transport, runtime)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The default deadline of a proposal or read (`NodeConfig::request_timeout`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The mailbox a transport delivers this node's inbound traffic to.
    pub fn mailbox(&self) -> Mailbox {
        self.mailbox.clone()
    }

    fn next_ctx(&self) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.id.to_be_bytes());
        ctx.extend_from_slice(&self.boot.to_be_bytes());
        ctx.extend_from_slice(&seq.to_be_bytes());
        ctx
    }

    /// Waits for the Raft thread's answer to a queued request. If the thread stops
    /// without answering, `stopped()`: a request queued just as the thread exits is
    /// left in the channel (a bounded crossbeam channel keeps what it holds while a
    /// sender lives), and its reply would never come.
    async fn answer<T, E>(
        &self,
        rx: oneshot::Receiver<Result<T, E>>,
        stopped: impl Fn() -> E,
    ) -> Result<T, E> {
        let mut status = self.status.clone();
        tokio::select! {
            // An answer sent before the thread stopped wins over the stop.
            biased;
            r = rx => r.unwrap_or_else(|_| Err(stopped())),
            _ = async { status.wait_for(|s| s.stopped).await.map(|_| ()) } => Err(stopped()),
        }
    }

    /// Queues a request; on failure only whether the queue was full matters.
    fn send(&self, req: Request<O>) -> Result<(), TrySendError<()>> {
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => TrySendError::Full(()),
            TrySendError::Disconnected(_) => TrySendError::Disconnected(()),
        })
    }

    /// Proposes `data` and waits until its entry is committed and applied on *this*
    /// node; returns the state machine's output for it.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, ProposeError> {
        self.propose_until(data, Instant::now() + self.request_timeout)
            .await
    }

    pub async fn propose_until(&self, data: Vec<u8>, deadline: Instant) -> Result<O, ProposeError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::Propose {
            ctx: self.next_ctx(),
            data,
            deadline,
            reply,
        };
        match self.send(req) {
            Ok(()) => self.answer(rx, || ProposeError::Stopped).await,
            Err(TrySendError::Full(_)) => Err(ProposeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(ProposeError::Stopped),
        }
    }

    /// Waits until this node has applied everything committed when the call was made,
    /// as confirmed by the leader with a quorum (ReadIndex). A read of the local state
    /// machine after this returns is linearizable. Returns the read index.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::ReadIndex {
            deadline: Instant::now() + self.request_timeout,
            reply,
        };
        match self.send(req) {
            Ok(()) => self.answer(rx, || ReadError::Stopped).await,
            Err(TrySendError::Full(_)) => Err(ReadError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(ReadError::Stopped),
        }
    }

    /// Applies one membership change through Raft and waits until it is applied here.
    /// The leader refuses a change while another is pending
    /// ([`ProposeError::ConfChangePending`]), the promotion of a learner that is not
    /// in sync with its log ([`ProposeError::LearnerNotReady`]), and its own removal
    /// or demotion: then it hands leadership to the most caught-up voter and answers
    /// [`ProposeError::Dropped`] (retry: the new leader takes the change). Also when
    /// the change comes through a follower.
    pub async fn change_membership(
        &self,
        changes: Vec<(ConfChangeType, u64)>,
    ) -> Result<ConfState, ProposeError> {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for (kind, node) in changes {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(kind);
            single.node_id = node;
            cc.mut_changes().push(single);
        }
        let (reply, rx) = oneshot::channel();
        let req = Request::ConfChange {
            ctx: self.next_ctx(),
            cc,
            deadline: Instant::now() + self.request_timeout,
            reply,
        };
        match self.send(req) {
            Ok(()) => self.answer(rx, || ProposeError::Stopped).await,
            Err(TrySendError::Full(_)) => Err(ProposeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(ProposeError::Stopped),
        }
    }

    /// Adds `node` as a learner: it receives the log but does not vote.
    pub async fn add_learner(&self, node: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::AddLearnerNode, node)])
            .await
    }

    /// Makes `node` (usually a caught-up learner) a voter; refused with
    /// [`ProposeError::LearnerNotReady`] while that learner lags behind.
    pub async fn promote(&self, node: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::AddNode, node)])
            .await
    }

    pub async fn remove(&self, node: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::RemoveNode, node)])
            .await
    }

    /// Asks the leader (this node) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.send(Request::TransferLeader(to));
    }

    /// Starts an election now (tests and operators' "move leader here").
    pub fn campaign(&self) {
        let _ = self.send(Request::Campaign);
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The current term, without copying the whole status (for response headers).
    pub fn term(&self) -> u64 {
        self.status.borrow().term
    }

    /// A receiver woken when the role, term, leader, membership, `failed`, `removed` or
    /// `stopped` change. The indexes and progress are updated in place without waking
    /// it: poll [`NodeHandle::status`] for those.
    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// Stops the Raft thread (pending requests fail with `Stopped`) and waits until it
    /// has released its files.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}
