//! etcd's v3 gRPC client API on the API port, for etcd's own clients (`etcdctl`,
//! clientv3): the KV, Watch, Lease, Cluster and Maintenance services of
//! `proto/etcd/rpc.proto`, beside the JSON gateway and the Kubernetes API on the same
//! port (gRPC requests are HTTP/2 with `application/grpc`; the accept loop serves
//! HTTP/2 over TLS by ALPN and in clear text by prior knowledge).
//!
//! Requests are checked and answered as in the JSON gateway (`etcd`, `etcd_watch`,
//! `etcd_cluster`), with the same etcd error messages as gRPC statuses.

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

mod cluster;
mod kv;
mod lease;
mod watch;

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use tonic::server::NamedService;
use trireme_mvcc::KeyValue;

use crate::ApiState;
use pb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};

/// etcd's default: a watch asked for progress notifications gets one after ten
/// minutes without events.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// The gRPC services as routes of the API port's router, each answering only
/// clients with a certificate of the cluster CA on the TLS listener.
pub(crate) fn routes(state: ApiState, progress_interval: Duration) -> Router {
    let limit = state.max_request_bytes;
    let kv = KvServer::new(kv::Kv(state.clone())).max_decoding_message_size(limit);
    let watch = WatchServer::new(watch::WatchService {
        state: state.clone(),
        progress_interval,
    })
    .max_decoding_message_size(limit);
    let lease =
        LeaseServer::new(lease::LeaseService(state.clone())).max_decoding_message_size(limit);
    let cluster =
        ClusterServer::new(cluster::ClusterService(state.clone())).max_decoding_message_size(limit);
    let maintenance =
        MaintenanceServer::new(cluster::MaintenanceService(state)).max_decoding_message_size(limit);
    Router::new()
        .route_service(&path::<KvServer<kv::Kv>>(), kv)
        .route_service(&path::<WatchServer<watch::WatchService>>(), watch)
        .route_service(&path::<LeaseServer<lease::LeaseService>>(), lease)
        .route_service(&path::<ClusterServer<cluster::ClusterService>>(), cluster)
        .route_service(
            &path::<MaintenanceServer<cluster::MaintenanceService>>(),
            maintenance,
        )
        .route(
            "/etcdserverpb.Auth/{*rest}",
            axum::routing::any(auth_unimplemented),
        )
        .route_layer(axum::middleware::from_fn(require_client_certificate))
}

fn path<S: NamedService>() -> String {
    format!("/{}/{{*rest}}", S::NAME)
}

async fn auth_unimplemented() -> Response {
    tonic::Status::unimplemented(
        "trireme: etcd's user and role API is not served; the API port authenticates clients by their certificate",
    )
    .into_http::<axum::body::Body>()
    .into_response()
}

/// The gRPC form of the JSON gateway's check: on the TLS listener, a client without
/// a certificate of the cluster CA is refused (UNAUTHENTICATED).
async fn require_client_certificate(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if crate::ClientIdentity::is_anonymous(req.extensions()) {
        return tonic::Status::unauthenticated(
            "etcdserver: a client certificate of the cluster CA is required",
        )
        .into_http::<axum::body::Body>()
        .into_response();
    }
    next.run(req).await
}

/// protobuf's int64 for the store's unsigned counters (revisions never come near).
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The response header; `revision` 0 means the store's current revision.
fn header(s: &ApiState, revision: u64) -> ResponseHeader {
    let revision = if revision == 0 {
        s.store.revision()
    } else {
        revision
    };
    exact_header(s, revision)
}

/// The response header with exactly `revision` (progress answers, where 0 is 0).
fn exact_header(s: &ApiState, revision: u64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: s.cluster_id,
        member_id: s.member_id,
        revision: signed(revision),
        raft_term: s.store.term(),
    }
}

fn kv(kv: KeyValue) -> pb::mvccpb::KeyValue {
    pb::mvccpb::KeyValue {
        key: kv.key,
        create_revision: signed(kv.create_revision),
        mod_revision: signed(kv.mod_revision),
        version: signed(kv.version),
        value: kv.value,
        lease: kv.lease,
    }
}
