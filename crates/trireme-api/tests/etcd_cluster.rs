//! The etcd v3 JSON gateway's member API against a one-replica store, through the
//! router (no socket): etcd's shapes, Trireme's required `name`, errors with their
//! HTTP codes, and the gateway's authentication.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use trireme_api::{app, ClientIdentity};
use trireme_raft::member_id;

mod common;
use common::{fixture, send, Fixture};

async fn post(f: &Fixture, path: &str, body: Value) -> (StatusCode, Value) {
    send(
        f,
        "POST",
        path,
        Body::from(body.to_string()),
        "application/json",
    )
    .await
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_add_promote_remove_speak_etcds_json() {
    let f = fixture().await;
    f.state
        .store
        .member_publish(
            "replica-1",
            vec!["https://127.0.0.1:7001".into()],
            vec!["https://127.0.0.1:6443".into()],
        )
        .await
        .unwrap();
    let (s, v) = post(&f, "/v3/cluster/member/list", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["header"]["member_id"], "1");
    assert_eq!(
        v["members"],
        json!([{
            "ID": "1",
            "name": "replica-1",
            "peerURLs": ["https://127.0.0.1:7001"],
            "clientURLs": ["https://127.0.0.1:6443"]
        }])
    );
    let (s, v) = post(&f, "/v3/cluster/member/list", json!({"serializable": true})).await;
    assert_eq!(
        (s, names(&v)),
        (StatusCode::OK, vec!["replica-1".to_string()])
    );

    let (s, v) = post(
        &f,
        "/v3/cluster/member/add",
        json!({"peerURLs": ["https://127.0.0.1:7002"], "isLearner": true, "name": "replica-2"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id2 = member_id("replica-2").to_string();
    assert_eq!(
        v["member"],
        json!({"ID": id2, "name": "replica-2", "peerURLs": ["https://127.0.0.1:7002"], "isLearner": true})
    );
    assert_eq!(names(&v), ["replica-1", "replica-2"]);

    // Adding it again: 409, in the gateway's error shape.
    let (s, v) = post(
        &f,
        "/v3/cluster/member/add",
        json!({"peerURLs": ["https://127.0.0.1:7009"], "isLearner": true, "name": "replica-2"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], 6);
    assert!(
        v["message"].as_str().unwrap().contains("already exist"),
        "{v}"
    );

    // The learner never runs: it is not in sync, so it cannot be promoted.
    let (s, v) = post(&f, "/v3/cluster/member/promote", json!({"ID": id2})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], 9);
    assert_eq!(
        v["message"],
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    // A voter is no learner.
    let (s, v) = post(&f, "/v3/cluster/member/promote", json!({"ID": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["message"],
        "etcdserver: can only promote a learner member"
    );

    let (s, v) = post(&f, "/v3/cluster/member/remove", json!({"ID": id2})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(names(&v), ["replica-1"]);
    let (s, v) = post(&f, "/v3/cluster/member/remove", json!({"ID": id2})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["message"], "etcdserver: member not found");
    let (s, v) = post(&f, "/v3/cluster/member/remove", json!({"ID": "1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the last voter stays: {v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("last voting member"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_member_requests_get_400_with_a_clear_message() {
    let f = fixture().await;
    let (s, v) = post(
        &f,
        "/v3/cluster/member/add",
        json!({"peerURLs": ["https://127.0.0.1:7002"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("name is required"),
        "{v}"
    );
    let cases = [
        (
            "/v3/cluster/member/add",
            json!({"name": "replica-2"}),
            "peerURLs",
        ),
        (
            "/v3/cluster/member/add",
            json!({"name": "replica-2", "peerURLs": ["http://127.0.0.1:7002"]}),
            "URLs are invalid",
        ),
        (
            "/v3/cluster/member/add",
            json!({"name": "Replica_2", "peerURLs": ["https://127.0.0.1:7002"]}),
            "invalid member name",
        ),
        (
            "/v3/cluster/member/add",
            json!({"name": "replica-2", "peerURLs": "https://127.0.0.1:7002"}),
            "malformed JSON",
        ),
        ("/v3/cluster/member/remove", json!({}), "ID is required"),
        (
            "/v3/cluster/member/remove",
            json!({"ID": "x"}),
            "malformed JSON",
        ),
        (
            "/v3/cluster/member/promote",
            json!({"ID": -3}),
            "malformed JSON",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = post(&f, path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(want),
            "{path} {body}: {v}"
        );
    }
    let (_, v) = post(&f, "/v3/cluster/member/list", json!({})).await;
    assert_eq!(
        v["members"].as_array().unwrap().len(),
        1,
        "nothing added: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_api_needs_a_client_certificate_like_the_rest_of_the_gateway() {
    let f = fixture().await;
    for path in [
        "/v3/cluster/member/list",
        "/v3/cluster/member/add",
        "/v3/cluster/member/remove",
        "/v3/cluster/member/promote",
    ] {
        let mut req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        req.extensions_mut().insert(ClientIdentity::Anonymous);
        let resp = app(f.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}
