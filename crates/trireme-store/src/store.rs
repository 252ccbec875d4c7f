//! [`KvStore`]: the store handle of one replica. Writes become proposals through the
//! local Raft node and return once applied here; reads are linearizable (ReadIndex)
//! unless asked to be serializable; watches read the event history. Membership
//! operations are in `membership`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use trireme_mvcc::{
    Command, CommandResult, DeleteRangeRequest, DeleteRangeResponse, LeaseInfo, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use trireme_raft::{NodeConfig, NodeHandle, NodeStatus, RaftRuntime, Role, StartError, Transport};

use crate::lessor::Lessor;
use crate::machine::{current, expect_mvcc, MvccMachine, SharedStore};
use crate::member::{Member, MemberError};
use crate::proposal::{Applied, ApplyFailure, ApplyOutput, Proposal};
use crate::watch::Watcher;
use crate::StoreError;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (ReadIndex).
    #[default]
    Linearizable,
    /// This replica's local state: possibly stale, always available.
    Serializable,
}

/// Configuration of a store replica.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node: NodeConfig,
    /// Largest encoded proposal accepted (etcd's `--max-request-bytes`, 1.5 MiB).
    pub max_request_bytes: usize,
    /// How often the leader looks for expired leases.
    pub lease_check_interval: Duration,
}

impl StoreConfig {
    pub fn new(node: NodeConfig) -> Self {
        StoreConfig {
            node,
            max_request_bytes: 1536 * 1024,
            lease_check_interval: Duration::from_millis(500),
        }
    }
}

/// One replica's replicated key-value store.
pub struct KvStore {
    pub(crate) node: Arc<NodeHandle<ApplyOutput>>,
    pub(crate) store: SharedStore,
    revision: watch::Receiver<u64>,
    /// The member list as applied here (see `membership`).
    pub(crate) members: watch::Receiver<Vec<Member>>,
    lessor: Arc<Lessor>,
    max_request_bytes: usize,
    stop: Arc<Notify>,
    lease_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl KvStore {
    /// Opens the state under `config.node.dir/state`, starts the Raft node and the
    /// lease expiry task. Must be called inside a tokio runtime.
    pub fn start<T: Transport>(
        config: StoreConfig,
        transport: Arc<T>,
    ) -> Result<Arc<Self>, StartError> {
        let runtime = RaftRuntime::new().map_err(StartError::Spawn)?;
        KvStore::start_on(config, transport, runtime)
    }

    /// [`KvStore::start`] with the Raft thread driving `runtime`, on which the
    /// transport runs its tasks (see [`RaftRuntime`]).
    pub fn start_on<T: Transport>(
        config: StoreConfig,
        transport: Arc<T>,
        runtime: RaftRuntime,
    ) -> Result<Arc<Self>, StartError> {
        let lessor = Arc::new(Lessor::default());
        let machine = MvccMachine::open(&config.node.dir.join("state"), Arc::clone(&lessor))
            .map_err(|e| StartError::StateMachine(e.to_string()))?;
        let store = machine.shared_store();
        let revision = machine.revision_watch();
        let members = machine.member_watch();
        let node = NodeHandle::start_on(config.node, machine, transport, runtime)?;
        let this = Arc::new(KvStore {
            node,
            store,
            revision,
            members,
            lessor,
            max_request_bytes: config.max_request_bytes,
            stop: Arc::new(Notify::new()),
            lease_task: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(expire_leases(
            Arc::downgrade(&this),
            Arc::clone(&this.stop),
            config.lease_check_interval,
        ));
        if let Ok(mut slot) = this.lease_task.lock() {
            *slot = Some(task);
        }
        Ok(this)
    }

    /// The Raft node underneath (membership, leader transfer, status).
    pub fn node(&self) -> &Arc<NodeHandle<ApplyOutput>> {
        &self.node
    }

    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.node.term()
    }

    /// The current store revision of this replica.
    pub fn revision(&self) -> u64 {
        current(&self.store).revision()
    }

    pub fn compact_revision(&self) -> u64 {
        current(&self.store).compact_revision()
    }

    /// A hash of the whole MVCC state (not the Raft metadata): replicas that applied
    /// the same entries agree.
    pub fn hash(&self) -> Result<u32, StoreError> {
        current(&self.store)
            .hash()
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    pub(crate) async fn propose(&self, p: Proposal) -> Result<Applied, StoreError> {
        let data = p.encode();
        if data.len() > self.max_request_bytes {
            return Err(StoreError::TooLarge {
                size: data.len(),
                limit: self.max_request_bytes,
            });
        }
        match self.node.propose(data).await? {
            Ok(applied) => Ok(applied),
            Err(ApplyFailure::Command(e)) => Err(StoreError::Command(e)),
            Err(ApplyFailure::Malformed(e)) => Err(StoreError::Malformed(e)),
            Err(ApplyFailure::NotMember(id)) => Err(MemberError::NotMember(id).into()),
        }
    }

    async fn command(&self, c: Command) -> Result<CommandResult, StoreError> {
        expect_mvcc(self.propose(Proposal::Mvcc(c)).await?)
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, StoreError> {
        match self.command(Command::Put(req)).await? {
            CommandResult::Put(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        match self.command(Command::DeleteRange(req)).await? {
            CommandResult::DeleteRange(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        match self.command(Command::Txn(req)).await? {
            CommandResult::Txn(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Drops history below `revision` on every replica.
    pub async fn compact(&self, revision: u64) -> Result<u64, StoreError> {
        match self.command(Command::Compact { revision }).await? {
            CommandResult::Compact { revision } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Grants a lease of `ttl_seconds`; `id` 0 picks a random id.
    pub async fn lease_grant(&self, id: i64, ttl_seconds: i64) -> Result<(i64, i64), StoreError> {
        let id = if id == 0 {
            (rand::random::<u64>() >> 1).max(1) as i64
        } else {
            id
        };
        match self
            .command(Command::LeaseGrant { id, ttl_seconds })
            .await?
        {
            CommandResult::LeaseGrant {
                id, ttl_seconds, ..
            } => Ok((id, ttl_seconds)),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes a lease, deleting every key attached to it; returns the revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<u64, StoreError> {
        match self.command(Command::LeaseRevoke { id }).await? {
            CommandResult::LeaseRevoke { revision } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Renews a lease for its full TTL; returns the TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        match self.propose(Proposal::LeaseKeepAlive { id }).await? {
            Applied::LeaseKeepAlive { ttl_seconds, .. } => Ok(ttl_seconds),
            Applied::Mvcc(other) => Err(unexpected(other)),
            Applied::Member { .. } => Err(StoreError::Malformed(
                "a member result for a keep-alive".into(),
            )),
        }
    }

    /// Seconds left on a lease as this replica's lessor sees it.
    pub fn lease_time_to_live(&self, id: i64) -> Option<Duration> {
        self.lessor.remaining(id, Instant::now())
    }

    /// A lease with its granted TTL and attached keys (None: no such lease).
    pub async fn lease(
        &self,
        id: i64,
        consistency: Consistency,
    ) -> Result<Option<LeaseInfo>, StoreError> {
        if consistency == Consistency::Linearizable {
            self.node.read_index().await?;
        }
        current(&self.store)
            .lease(id)
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    /// Every lease, in id order.
    pub async fn leases(&self, consistency: Consistency) -> Result<Vec<LeaseInfo>, StoreError> {
        if consistency == Consistency::Linearizable {
            self.node.read_index().await?;
        }
        current(&self.store)
            .leases()
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    pub async fn range(
        &self,
        req: &RangeRequest,
        consistency: Consistency,
    ) -> Result<RangeResponse, StoreError> {
        if consistency == Consistency::Linearizable {
            self.node.read_index().await?;
        }
        self.range_local(req)
    }

    /// A serializable read of this replica's state, without waiting on anything.
    pub fn range_local(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(current(&self.store).range(req)?)
    }

    /// Watches `[key, range_end)` (etcd conventions) from `start_revision` (0: from
    /// the next write on).
    pub fn watch(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start_revision: u64,
        prev_kv: bool,
    ) -> Watcher {
        Watcher::new(
            Arc::clone(&self.store),
            self.revision.clone(),
            key,
            range_end,
            start_revision,
            prev_kv,
        )
    }

    /// Stops the lease task and the Raft node; waits until the node released its files.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let task = self.lease_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        self.node.shutdown().await;
    }
}

fn unexpected(result: CommandResult) -> StoreError {
    StoreError::Malformed(format!("unexpected result {result:?}"))
}

/// The leader proposes a revoke for every lease past its deadline.
async fn expire_leases(store: std::sync::Weak<KvStore>, stop: Arc<Notify>, every: Duration) {
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(store) = store.upgrade() else { return };
        if store.node.status().role != Role::Leader {
            continue;
        }
        for id in store.lessor.take_expired(Instant::now()) {
            let s = Arc::clone(&store);
            tokio::spawn(async move {
                match s.lease_revoke(id).await {
                    Ok(_) | Err(StoreError::Command(_)) => {}
                    Err(e) => {
                        tracing::debug!(lease = id, "revoke of an expired lease failed: {e}");
                        s.lessor.revoke_failed(id);
                    }
                }
            });
        }
    }
}
