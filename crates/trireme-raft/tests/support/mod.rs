//! The in-process cluster fixture shared by this crate's integration tests: real
//! nodes (real sled logs, real fsyncs) on the in-memory network, each with a state
//! machine that records the entries it applies.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use trireme_raft::eraftpb::ConfState;
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::testing::{wait_for, RecordingSm};
use trireme_raft::{Bootstrap, NodeConfig, NodeHandle, ProposeError, Role, FAST_TICK};

pub struct TestNode {
    pub handle: Arc<NodeHandle<u64>>,
    pub sm: RecordingSm,
    _dir: tempfile::TempDir,
}

pub struct Cluster {
    pub net: Arc<MemoryNetwork>,
    pub nodes: Vec<Option<TestNode>>,
}

pub fn config(id: u64, dir: &std::path::Path, bootstrap: Bootstrap, threshold: u64) -> NodeConfig {
    let mut c = NodeConfig::new(id, dir, bootstrap);
    c.tick = FAST_TICK;
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.snapshot_threshold = threshold;
    c.compaction_margin = 0;
    c.request_timeout = Duration::from_secs(3);
    c
}

impl Cluster {
    pub fn start(n: u64, threshold: u64) -> Cluster {
        Cluster::start_with(n, threshold, |_| {})
    }

    /// Like `start`, with each node's configuration adjusted by `tweak`.
    pub fn start_with(n: u64, threshold: u64, tweak: impl Fn(&mut NodeConfig)) -> Cluster {
        let net = MemoryNetwork::new();
        let voters: Vec<u64> = (1..=n).collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let mut c = config(
                id,
                dir.path(),
                Bootstrap::Initial(voters.clone()),
                threshold,
            );
            tweak(&mut c);
            nodes.push(Some(start_node_in(&net, c, dir)));
        }
        Cluster { net, nodes }
    }

    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes[(id - 1) as usize].as_ref().unwrap()
    }

    pub async fn leader(&self, among: &[u64]) -> u64 {
        wait_for(Duration::from_secs(10), || {
            among.iter().copied().find(|id| {
                let s = self.node(*id).handle.status();
                s.role == Role::Leader
                    && among
                        .iter()
                        .all(|o| self.node(*o).handle.status().leader_id == *id)
            })
        })
        .await
        .expect("a leader is elected")
    }
}

pub fn start_node(
    net: &Arc<MemoryNetwork>,
    id: u64,
    bootstrap: Bootstrap,
    threshold: u64,
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let c = config(id, dir.path(), bootstrap, threshold);
    start_node_in(net, c, dir)
}

/// Starts a node with `config`, whose directory is (in) `dir`.
pub fn start_node_in(
    net: &Arc<MemoryNetwork>,
    config: NodeConfig,
    dir: tempfile::TempDir,
) -> TestNode {
    start_node_with_sm(net, config, dir, RecordingSm::default())
}

/// Starts a node with `config` and the state machine `sm`.
pub fn start_node_with_sm(
    net: &Arc<MemoryNetwork>,
    config: NodeConfig,
    dir: tempfile::TempDir,
    sm: RecordingSm,
) -> TestNode {
    let id = config.id;
    let handle = NodeHandle::start(config, sm.clone(), net.transport(id)).unwrap();
    net.register(handle.mailbox());
    TestNode {
        handle,
        sm,
        _dir: dir,
    }
}

/// Promotes `node` through `via`, retrying while the leader finds the learner not yet
/// in sync (its last acknowledgement may still be on the way), as an operator would.
pub async fn promote_when_ready(via: &NodeHandle<u64>, node: u64) -> ConfState {
    for _ in 0..200 {
        match via.promote(node).await {
            Ok(cs) => return cs,
            Err(ProposeError::LearnerNotReady) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("promote {node}: {e}"),
        }
    }
    panic!("learner {node} never got in sync");
}
