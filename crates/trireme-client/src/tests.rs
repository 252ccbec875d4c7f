//! Failover, Status errors and watch resumption against tiny local HTTP servers on
//! 127.0.0.1 (plain HTTP: the TLS path is covered by the process tests).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::*;

type Log = Arc<Mutex<Vec<String>>>;

/// Serves `router` on 127.0.0.1:0; returns its base URL.
async fn serve(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    format!("http://{addr}")
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A replica that answers every path with `code`, logging `tag` per request.
async fn replica(tag: &'static str, code: u16, retry_after: bool, log: Log) -> String {
    let handler = move || {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(tag.to_string());
            let mut headers = HeaderMap::new();
            if retry_after {
                headers.insert("retry-after", "1".parse().unwrap());
            }
            let code = StatusCode::from_u16(code).unwrap();
            let body = if code.is_success() {
                json!({"kind": "ConfigMap", "metadata": {"name": "x"}, "served_by": tag})
            } else {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": format!("{tag} says no"), "reason": if code == StatusCode::NOT_FOUND {"NotFound"} else {"ServiceUnavailable"},
                       "code": code.as_u16()})
            };
            (code, headers, axum::Json(body))
        }
    };
    serve(Router::new().fallback(handler)).await
}

fn cm() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        singular: "configmap".into(),
        short_names: vec!["cm".into()],
        namespaced: true,
    }
}

fn client(endpoints: Vec<String>, attempts: Option<usize>) -> Client {
    let mut c = ClientConfig::new(endpoints);
    c.max_attempts = attempts;
    c.backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(20);
    c.connect_timeout = Duration::from_secs(2);
    Client::new(c).unwrap()
}

#[tokio::test]
async fn fails_over_in_order_past_refused_and_unavailable_then_sticks() {
    let log: Log = Arc::default();
    let down = closed_port().await;
    let busy = replica("busy", 503, true, log.clone()).await;
    let good = replica("good", 200, false, log.clone()).await;
    let c = client(vec![down, busy, good.clone()], None);
    let obj = c.get(&cm(), Some("default"), "x").await.unwrap();
    assert_eq!(obj["served_by"], "good");
    assert_eq!(*log.lock().unwrap(), ["busy", "good"]);
    // The endpoint that answered is tried first next time.
    c.get(&cm(), None, "x").await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["busy", "good", "good"]);
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_error_is_reported() {
    let log: Log = Arc::default();
    let busy1 = replica("b1", 503, true, log.clone()).await;
    let busy2 = replica("b2", 503, true, log.clone()).await;
    let c = client(vec![busy1, busy2], Some(5));
    let e = c.get(&cm(), None, "x").await.unwrap_err();
    match &e {
        Error::Unavailable { attempts, last } => {
            assert_eq!(*attempts, 5);
            assert!(last.contains("b1 says no"), "{last}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*log.lock().unwrap(), ["b1", "b2", "b1", "b2", "b1"]);
}

#[tokio::test]
async fn a_status_is_an_api_error_and_is_not_failed_over() {
    let log: Log = Arc::default();
    let missing = replica("m", 404, false, log.clone()).await;
    let broken = replica("x", 500, false, log.clone()).await; // no Retry-After
    let good = replica("good", 200, false, log.clone()).await;
    let c = client(vec![missing, good.clone()], None);
    let e = c.get(&cm(), None, "x").await.unwrap_err();
    assert!(e.is_not_found());
    let s = e.status().unwrap();
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "m says no")
    );
    assert_eq!(e.to_string(), "Error from server (NotFound): m says no");
    // A 5xx without Retry-After is the server's answer, not a reason to fail over.
    let c = client(vec![broken, good], None);
    let e = c.get(&cm(), None, "x").await.unwrap_err();
    assert_eq!(e.status().unwrap().code, 500);
    assert_eq!(*log.lock().unwrap(), ["m", "x"]);
}

#[tokio::test]
async fn a_watch_resumes_from_the_last_resource_version_and_ends_on_error() {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let handler = |State(seen): State<Arc<Mutex<Vec<Option<String>>>>>,
                   Query(q): Query<std::collections::HashMap<String, String>>| async move {
        assert_eq!(q.get("watch").map(String::as_str), Some("1"));
        let rv = q.get("resourceVersion").cloned();
        seen.lock().unwrap().push(rv.clone());
        let body = match rv.as_deref() {
            None => concat!(
                "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"5\"}}}\n",
                "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"7\"}}}\n"
            ),
            Some("7") => concat!(
                "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"9\"}}}\n",
                "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"reason\":\"Expired\",\"code\":410,\"message\":\"too old\"}}\n"
            ),
            _ => "",
        };
        body.into_response()
    };
    let url = serve(
        Router::new()
            .route("/api/v1/configmaps", get(handler))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(vec![url], None);
    let mut w = c.watch(&cm(), None, WatchParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    let err = loop {
        match w.next().await {
            Ok(Some(ev)) => kinds.push((ev.kind, ev.resource_version().map(String::from))),
            Ok(None) => panic!("ended without the error"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        kinds,
        [
            (EventType::Added, Some("5".into())),
            (EventType::Modified, Some("7".into())),
            (EventType::Deleted, Some("9".into())),
        ]
    );
    assert_eq!(err.status().unwrap().reason, "Expired");
    assert_eq!(*seen.lock().unwrap(), [None, Some("7".to_string())]);
    assert!(w.next().await.unwrap().is_none());
}

#[tokio::test]
async fn the_member_api_reads_etcds_shapes_and_gateway_errors() {
    let router = Router::new()
        .route(
            "/v3/cluster/member/list",
            axum::routing::post(|| async {
                axum::Json(json!({"header": {}, "members": [
                    {"ID": "12", "name": "r1", "peerURLs": ["https://a:1"], "clientURLs": ["https://a:2"]},
                    {"ID": 13, "name": "r2", "peerURLs": ["https://b:1"], "isLearner": true}
                ]}))
            }),
        )
        .route(
            "/v3/cluster/member/add",
            axum::routing::post(|body: String| async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["name"], "r3");
                assert_eq!(v["peerURLs"], json!(["https://c:1"]));
                assert_eq!(v["isLearner"], true);
                axum::Json(json!({"header": {}, "member": {"ID": "14", "name": "r3", "peerURLs": ["https://c:1"], "isLearner": true}, "members": []}))
            }),
        )
        .route(
            "/v3/cluster/member/remove",
            axum::routing::post(|| async {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"error": "etcdserver: member not found", "code": 5, "message": "etcdserver: member not found"})),
                )
            }),
        );
    let c = client(vec![serve(router).await], None);
    let list = c.member_list().await.unwrap();
    assert_eq!(
        list,
        [
            ClusterMember {
                id: 12,
                name: "r1".into(),
                peer_urls: vec!["https://a:1".into()],
                client_urls: vec!["https://a:2".into()],
                is_learner: false
            },
            ClusterMember {
                id: 13,
                name: "r2".into(),
                peer_urls: vec!["https://b:1".into()],
                client_urls: vec![],
                is_learner: true
            }
        ]
    );
    let (added, _) = c
        .member_add("r3", &["https://c:1".to_string()], true)
        .await
        .unwrap();
    assert_eq!((added.id, added.is_learner), (14, true));
    match c.member_remove(99).await {
        Err(Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "etcdserver: member not found");
        }
        other => panic!("{other:?}"),
    }
}
