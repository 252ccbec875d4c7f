//! `POST /v3/watch`: the etcd gateway's streaming watch. The body is one
//! `{"create_request": {...}}`; the response is a stream of JSON objects, one per
//! line: first `{"result": {"created": true, ...}}`, then one object per batch of
//! events, and, when the start revision is compacted, a final `canceled` result with
//! `compact_revision`. Events come from the store's history (see `Watcher`), so every
//! event after the start revision arrives once and in order.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use trireme_mvcc::{Event, EventKind};
use trireme_store::{StoreError, Watcher};

use crate::error::ApiError;
use crate::etcd::{Header, KeyValueJson};
use crate::json::{b64, de_i64, is_false, is_zero_u64, ser_u64, JsonBody};
use crate::ApiState;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateJson {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(with = "b64", alias = "rangeEnd")]
    range_end: Vec<u8>,
    #[serde(deserialize_with = "de_i64", alias = "startRevision")]
    start_revision: i64,
    #[serde(alias = "prevKv")]
    prev_kv: bool,
    #[serde(alias = "progressNotify")]
    progress_notify: bool,
    filters: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct WatchRequestJson {
    #[serde(alias = "createRequest")]
    create_request: Option<CreateJson>,
}

#[derive(Serialize)]
struct EventJson {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    kv: KeyValueJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyValueJson>,
}

#[derive(Serialize)]
struct WatchResultJson {
    header: Header,
    #[serde(serialize_with = "ser_u64")]
    watch_id: u64,
    #[serde(skip_serializing_if = "is_false")]
    created: bool,
    #[serde(skip_serializing_if = "is_false")]
    canceled: bool,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    compact_revision: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    cancel_reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<EventJson>,
}

fn line(s: &ApiState, revision: u64) -> WatchResultJson {
    WatchResultJson {
        header: s.header(revision),
        watch_id: 0,
        created: false,
        canceled: false,
        compact_revision: 0,
        cancel_reason: String::new(),
        events: Vec::new(),
    }
}

fn encode(result: WatchResultJson) -> Bytes {
    let mut v = serde_json::to_vec(&serde_json::json!({ "result": result })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn event_json(e: Event) -> EventJson {
    EventJson {
        kind: match e.kind {
            EventKind::Put => None,
            EventKind::Delete => Some("DELETE"),
        },
        kv: e.kv.into(),
        prev_kv: e.prev_kv.map(Into::into),
    }
}

enum Phase {
    Created(Watcher),
    Streaming(Watcher),
    Done,
}

pub async fn watch(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<WatchRequestJson>,
) -> Result<Response, ApiError> {
    let Some(c) = req.create_request else {
        return Err(ApiError::BadRequest(
            "a watch needs a create_request".into(),
        ));
    };
    if c.key.is_empty() {
        return Err(ApiError::BadRequest(
            "etcdserver: key is not provided".into(),
        ));
    }
    if c.start_revision < 0 {
        return Err(ApiError::BadRequest(
            "start_revision must not be negative".into(),
        ));
    }
    if c.progress_notify || !c.filters.is_empty() {
        return Err(ApiError::BadRequest(
            "progress_notify and filters are not supported".into(),
        ));
    }
    let watcher = s
        .store
        .watch(c.key, c.range_end, c.start_revision as u64, c.prev_kv);
    let stream =
        futures_util::stream::unfold((Phase::Created(watcher), s), |(phase, s)| async move {
            match phase {
                Phase::Done => None,
                Phase::Created(w) => {
                    let mut r = line(&s, 0);
                    r.created = true;
                    Some((
                        Ok::<_, std::convert::Infallible>(encode(r)),
                        (Phase::Streaming(w), s),
                    ))
                }
                Phase::Streaming(mut w) => match w.next().await {
                    Ok(events) => {
                        let revision = events.last().map(|e| e.kv.mod_revision).unwrap_or(0);
                        let mut r = line(&s, revision);
                        r.events = events.into_iter().map(event_json).collect();
                        Some((Ok(encode(r)), (Phase::Streaming(w), s)))
                    }
                    Err(StoreError::Compacted { compact_revision }) => {
                        let mut r = line(&s, 0);
                        r.canceled = true;
                        r.compact_revision = compact_revision;
                        r.cancel_reason =
                            "etcdserver: mvcc: required revision has been compacted".into();
                        Some((Ok(encode(r)), (Phase::Done, s)))
                    }
                    Err(e) => {
                        let mut r = line(&s, 0);
                        r.canceled = true;
                        r.cancel_reason = e.to_string();
                        Some((Ok(encode(r)), (Phase::Done, s)))
                    }
                },
            }
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}
