//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, may change).
//!
//! [`decode_request`] runs a request body through the real [`JsonBody`] extractor into
//! the real (private) wire type of a path, exactly as the router does before the
//! handler runs. The checks each handler does after decoding (`into_request`, `plan`,
//! ...) are private to `etcd`; the `etcd_json` fuzz target reaches them through
//! [`crate::app`] with a stopped store.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::Request;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use crate::json::JsonBody;
use crate::{etcd, etcd_cluster, etcd_watch};

/// Every path whose body is a JSON request.
pub const PATHS: &[&str] = &[
    "/v3/kv/put",
    "/v3/kv/range",
    "/v3/kv/deleterange",
    "/v3/kv/txn",
    "/v3/kv/compaction",
    "/v3/lease/grant",
    "/v3/lease/revoke",
    "/v3/kv/lease/revoke",
    "/v3/lease/keepalive",
    "/v3/watch",
    "/v3/cluster/member/list",
    "/v3/cluster/member/add",
    "/v3/cluster/member/remove",
    "/v3/cluster/member/promote",
];

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<(), String> {
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .map_err(|e| e.to_string())?;
    // A body already in memory is read in one poll.
    match JsonBody::<T>::from_request(req, &()).now_or_never() {
        Some(Ok(JsonBody(_))) => Ok(()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the body extractor did not complete in one poll".into()),
    }
}

/// Decodes `body` as the request of `path` (one of [`PATHS`]); `Err` for a refused body
/// or an unknown path. Must never panic.
pub fn decode_request(path: &str, body: &[u8]) -> Result<(), String> {
    match path {
        "/v3/kv/put" => decode::<etcd::PutJson>(body),
        "/v3/kv/range" => decode::<etcd::RangeJson>(body),
        "/v3/kv/deleterange" => decode::<etcd::DeleteRangeJson>(body),
        "/v3/kv/txn" => decode::<etcd::TxnJson>(body),
        "/v3/kv/compaction" => decode::<etcd::CompactionJson>(body),
        "/v3/lease/grant" => decode::<etcd::LeaseGrantJson>(body),
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" | "/v3/lease/keepalive" => {
            decode::<etcd::LeaseIdJson>(body)
        }
        "/v3/watch" => decode::<etcd_watch::WatchRequestJson>(body),
        "/v3/cluster/member/list" => decode::<etcd_cluster::MemberListJson>(body),
        "/v3/cluster/member/add" => decode::<etcd_cluster::MemberAddJson>(body),
        "/v3/cluster/member/remove" | "/v3/cluster/member/promote" => {
            decode::<etcd_cluster::MemberIdJson>(body)
        }
        _ => Err(format!("no JSON request at {path}")),
    }
}
