//! A one-replica store behind the API router, for tests that call the router directly.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use trireme_api::app;

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
            data_dir: dir.path().into(),
            max_request_bytes: 64 * 1024,
            zone: None,
        },
        _dir: dir,
    }
}

/// Sends one request through the router; the answer's status and its body as JSON (or
/// as a JSON string when it is not JSON).
pub async fn send(
    f: &Fixture,
    method: &str,
    path: &str,
    body: Body,
    content_type: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}
