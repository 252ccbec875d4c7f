//! # trireme-api: the API port of a replica
//!
//! Every replica's API is active: it reads from the local store (linearizably by
//! default) and writes through the quorum. This crate owns HTTP, JSON and the error
//! shapes clients see; nothing else in the workspace knows HTTP.
//!
//! ## Layout
//! - [`app`]: the router. `serve`: the TLS/plain accept loop with its limits.
//! - `health`: `/livez`, `/readyz`, `/version`.
//! - `etcd_grpc`: etcd's v3 gRPC API (KV, Watch, Lease, Cluster, Maintenance) for
//!   etcdctl and clientv3, on the same port (HTTP/2, `application/grpc`).
//! - `etcd`: the etcd v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//!   `/v3/maintenance/status`, `/v3/maintenance/hashkv`); `etcd_watch`: `/v3/watch`;
//!   `etcd_cluster`: the member API (`/v3/cluster/member/list|add|remove|promote`).
//! - `json`: proto3-JSON helpers and the [`json::JsonBody`] extractor.
//! - `error`: [`ApiError`], the one place etcd-gateway errors become responses.
//! - `kube`: the Kubernetes-style REST API (discovery, objects, watch, Tables);
//!   `kube::KubeError` is the one place kube errors become `Status` responses.
//!
//! ## Boundaries
//! Talks to the store only through `trireme_store::KvStore`; knows nothing of Raft
//! internals, sled or the peer protocol.

use std::path::Path;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use trireme_store::KvStore;

mod error;
mod etcd;
mod etcd_cluster;
pub(crate) mod etcd_grpc;
mod etcd_watch;
#[doc(hidden)]
pub mod fuzzing;
mod health;
pub mod json;
pub mod kube;
mod serve;

pub use error::ApiError;
pub use etcd::ETCD_API_VERSION;
/// etcd's v3 API messages and gRPC clients (`proto/etcd`), for Rust clients of a
/// replica's API port.
pub use etcd_grpc::pb as etcdpb;
pub use serve::{serve, server_tls_config, ClientIdentity, ServeLimits};

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<KvStore>,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The replica's data directory (for `dbSize`). Shared: axum clones the state
    /// for every request.
    pub data_dir: Arc<Path>,
    /// Largest request body accepted; larger ones get 413.
    pub max_request_bytes: usize,
    /// The replica's failure zone, reported by `/v3/maintenance/status`.
    pub zone: Option<Arc<str>>,
}

/// The etcd gRPC services alone, with watch progress notifications every
/// `progress_interval` (the API port uses etcd's ten minutes). For tests.
#[doc(hidden)]
pub fn etcd_grpc_router(state: ApiState, progress_interval: std::time::Duration) -> Router {
    etcd_grpc::routes(state, progress_interval)
}

/// The API router of one replica.
pub fn app(state: ApiState) -> Router {
    let limit = state.max_request_bytes;
    let etcd_gateway = Router::new()
        .route("/v3/kv/put", post(etcd::put))
        .route("/v3/kv/range", post(etcd::range))
        .route("/v3/kv/deleterange", post(etcd::delete_range))
        .route("/v3/kv/txn", post(etcd::txn))
        .route("/v3/kv/compaction", post(etcd::compaction))
        .route("/v3/lease/grant", post(etcd::lease_grant))
        .route("/v3/lease/revoke", post(etcd::lease_revoke))
        .route("/v3/kv/lease/revoke", post(etcd::lease_revoke))
        .route("/v3/lease/keepalive", post(etcd::lease_keep_alive))
        .route("/v3/maintenance/status", post(etcd::status))
        .route("/v3/maintenance/hashkv", post(etcd::hash_kv))
        .route(
            "/v3/maintenance/transfer-leadership",
            post(etcd::move_leader),
        )
        .route("/v3/watch", post(etcd_watch::watch))
        .route("/v3/cluster/member/list", post(etcd_cluster::member_list))
        .route("/v3/cluster/member/add", post(etcd_cluster::member_add))
        .route(
            "/v3/cluster/member/remove",
            post(etcd_cluster::member_remove),
        )
        .route(
            "/v3/cluster/member/promote",
            post(etcd_cluster::member_promote),
        )
        .route_layer(axum::middleware::from_fn(error::require_client_certificate));
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz", get(health::readyz))
        .route("/version", get(health::version))
        .merge(etcd_gateway)
        .merge(kube::router())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone())
        .merge(etcd_grpc::routes(state, etcd_grpc::PROGRESS_INTERVAL))
}
