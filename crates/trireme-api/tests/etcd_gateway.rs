//! The etcd v3 JSON gateway against a one-replica store, through the router (no socket).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::{fixture, send, Fixture};
use trireme_api::app;

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

async fn call(f: &Fixture, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    send(f, "POST", path, body.into(), "application/json").await
}

async fn post(f: &Fixture, path: &str, body: Value) -> (StatusCode, Value) {
    call(f, path, body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_range_txn_delete_speak_etcds_json() {
    let f = fixture().await;
    let (s, v) = post(
        &f,
        "/v3/kv/put",
        json!({"key": b64("foo"), "value": b64("bar")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rev = v["header"]["revision"].as_str().unwrap().to_string();
    assert_eq!(v["header"]["cluster_id"], "7");
    assert_eq!(v["header"]["member_id"], "1");

    let (s, v) = post(&f, "/v3/kv/range", json!({"key": b64("foo")})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["kvs"][0]["value"], b64("bar"));
    assert_eq!(v["kvs"][0]["mod_revision"], rev);
    assert_eq!(v["kvs"][0]["version"], "1");
    assert_eq!(v["count"], "1");

    // Prefix range, descending, limit; serializable.
    for k in ["p/a", "p/b", "p/c"] {
        post(&f, "/v3/kv/put", json!({"key": b64(k), "value": b64("x")})).await;
    }
    let (_, v) = post(
        &f,
        "/v3/kv/range",
        json!({"key": b64("p/"), "range_end": b64("p0"), "sort_order": "DESCEND", "limit": 2, "serializable": true}),
    )
    .await;
    let keys: Vec<_> = v["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].clone())
        .collect();
    assert_eq!(keys, vec![json!(b64("p/c")), json!(b64("p/b"))]);
    assert_eq!(v["more"], true);

    // Compare-and-swap on mod_revision.
    let cas = |rev: &str| {
        json!({
            "compare": [{"key": b64("foo"), "target": "MOD", "result": "EQUAL", "mod_revision": rev}],
            "success": [{"request_put": {"key": b64("foo"), "value": b64("new")}}],
            "failure": [{"request_range": {"key": b64("foo")}}]
        })
    };
    let (s, v) = post(&f, "/v3/kv/txn", cas(&rev)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["succeeded"], true);
    let (_, v) = post(&f, "/v3/kv/txn", cas(&rev)).await;
    assert!(v.get("succeeded").is_none(), "a stale compare fails: {v}");
    assert_eq!(
        v["responses"][0]["response_range"]["kvs"][0]["value"],
        b64("new")
    );

    let (s, v) = post(
        &f,
        "/v3/kv/deleterange",
        json!({"key": b64("p/"), "range_end": b64("p0"), "prev_kv": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["deleted"], "3");
    assert_eq!(v["prev_kvs"].as_array().unwrap().len(), 3);

    let (s, v) = post(&f, "/v3/maintenance/status", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["leader"], "1");
    assert!(v["raftIndex"].as_str().is_some() && v["dbSize"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let f = fixture().await;
    let before = f.state.store.revision();
    let huge =
        json!({"key": b64("big"), "value": STANDARD.encode(vec![b'x'; 100 * 1024])}).to_string();
    let (s, v) = call(&f, "/v3/kv/put", huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], 3, "etcd: INVALID_ARGUMENT, request is too large");
    let cases: Vec<(&str, String)> = vec![
        ("/v3/kv/put", "{\"key\": ".into()),
        ("/v3/kv/put", "[1,2".into()),
        ("/v3/kv/put", json!({"key": "not base64!!", "value": b64("x")}).to_string()),
        ("/v3/kv/put", json!({"key": b64("k"), "lease": "abc"}).to_string()),
        ("/v3/kv/put", json!({"value": b64("x")}).to_string()),
        ("/v3/kv/range", json!({"key": b64("k"), "sort_order": "SIDEWAYS"}).to_string()),
        ("/v3/kv/txn", json!({"success": [{"request_put": {"key": b64("a")}, "request_range": {"key": b64("a")}}]}).to_string()),
        ("/v3/kv/put", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        // Past etcd's maximum TTL (a TTL near i64::MAX once overflowed every replica's
        // lessor at apply).
        ("/v3/lease/grant", json!({"TTL": i64::MAX.to_string()}).to_string()),
    ];
    for (path, body) in cases {
        let (s, v) = call(&f, path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body:.60}: {v}");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(f.state.store.revision(), before, "nothing was stored");
    let (s, _) = post(
        &f,
        "/v3/kv/range",
        json!({"key": b64("k"), "revision": 1000}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a future revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version() {
    let f = fixture().await;
    for path in ["/livez", "/readyz", "/version"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let resp = app(f.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_streams_every_event_from_its_start_revision() {
    let f = fixture().await;
    let (_, v) = post(
        &f,
        "/v3/kv/put",
        json!({"key": b64("w/a"), "value": b64("1")}),
    )
    .await;
    let first: u64 = v["header"]["revision"].as_str().unwrap().parse().unwrap();
    post(
        &f,
        "/v3/kv/put",
        json!({"key": b64("w/b"), "value": b64("2")}),
    )
    .await;
    post(&f, "/v3/kv/deleterange", json!({"key": b64("w/a")})).await;
    post(
        &f,
        "/v3/kv/put",
        json!({"key": b64("other"), "value": b64("x")}),
    )
    .await;
    let body = json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "start_revision": first.to_string()}});
    let req = Request::post("/v3/watch")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("events arrive");
        let frame = frame.unwrap().unwrap();
        text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        while let Some(i) = text.find('\n') {
            let line: Value = serde_json::from_str(&text[..i]).unwrap();
            text.drain(..=i);
            if let Some(es) = line["result"]["events"].as_array() {
                events.extend(es.iter().cloned());
            }
        }
    }
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("PUT").to_string(),
                e["kv"]["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("PUT".into(), b64("w/a")),
            ("PUT".into(), b64("w/b")),
            ("DELETE".into(), b64("w/a"))
        ]
    );
    // Compacted start: the stream says so and ends.
    let (_, v) = post(
        &f,
        "/v3/kv/put",
        json!({"key": b64("w/c"), "value": b64("3")}),
    )
    .await;
    let now = v["header"]["revision"].as_str().unwrap().to_string();
    let (s, _) = post(&f, "/v3/kv/compaction", json!({"revision": now})).await;
    assert_eq!(s, StatusCode::OK);
    let body = json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "start_revision": first.to_string()}});
    let (s, v) = call(&f, "/v3/watch", body.to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let text = v
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string());
    assert!(
        text.contains("\"canceled\":true") && text.contains("compact_revision"),
        "{text}"
    );
}
