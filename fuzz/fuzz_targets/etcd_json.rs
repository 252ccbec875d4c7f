//! Arbitrary bytes as the body of every etcd gateway request: decoding must never panic.
//!
//! Each input goes (1) through `trireme_api::fuzzing::decode_request` (the `JsonBody`
//! extractor into the path's wire type) and (2) through the real router, `app()`, with
//! a store built once and stopped at once: the handler's own checks run, and a request
//! that passes them reaches the store, which answers `Stopped` at once (a serializable
//! range reads the empty local store). A body the extractor refuses must get a 400 or
//! 413 from the router too.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use trireme_api::{app, fuzzing, ApiState};
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::{Bootstrap, NodeConfig};
use trireme_store::{KvStore, StoreConfig};

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let store = rt.block_on(async {
            let net = MemoryNetwork::new();
            let node = NodeConfig::new(1, dir.path(), Bootstrap::Initial(vec![1]));
            let store =
                KvStore::start(StoreConfig::new(node), net.transport(1)).expect("start a store");
            store.shutdown().await;
            store
        });
        let router = app(ApiState {
            store: Arc::clone(&store),
            cluster_id: 7,
            member_id: 1,
            data_dir: dir.path().into(),
            max_request_bytes: 64 * 1024,
            zone: None,
        });
        Fixture {
            rt,
            router,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    for path in fuzzing::PATHS {
        let decoded = fuzzing::decode_request(path, data);
        let status = f.rt.block_on(async {
            let req = Request::post(*path)
                .header("content-type", "application/json")
                .body(Body::from(data.to_vec()))
                .expect("a request");
            let resp = f.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            // A created watch streams until the store moves: only its status is read.
            if !(*path == "/v3/watch" && status == StatusCode::OK) {
                let _ = resp.into_body().collect().await;
            }
            status
        });
        if let Err(e) = decoded {
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{path}: the extractor refused the body ({e}) but the router answered {status}"
            );
        }
    }
});
