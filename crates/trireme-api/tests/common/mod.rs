//! A one-replica store behind the API router, for tests that call the router directly.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use trireme_api::ApiState;
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::{Bootstrap, NodeConfig, Role, FAST_TICK};
use trireme_store::{KvStore, StoreConfig};

pub struct Fixture {
    pub state: ApiState,
    _dir: tempfile::TempDir,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let mut node = NodeConfig::new(1, dir.path(), Bootstrap::Initial(vec![1]));
    node.tick = FAST_TICK;
    let store = KvStore::start(StoreConfig::new(node), net.transport(1)).unwrap();
    net.register(store.node().mailbox());
    for _ in 0..500 {
        if store.status().role == Role::Leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.status().role, Role::Leader);
    Fixture {
        state: ApiState {
            store: Arc::clone(&store),
            cluster_id: 7,
            member_id: 1,
            data_dir: dir.path().to_path_buf(),
            max_request_bytes: 64 * 1024,
            zone: None,
        },
        _dir: dir,
    }
}
