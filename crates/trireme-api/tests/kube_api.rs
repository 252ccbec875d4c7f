//! The Kubernetes API through the router, without kubectl: every error gives the right
//! Status and code; optimistic concurrency; watches from compacted revisions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use trireme_api::app;

mod common;
use common::{fixture, Fixture};

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    body: Option<Value>,
    content_type: &str,
) -> (StatusCode, Value) {
    common::send(
        f,
        method,
        path,
        body.map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty),
        content_type,
    )
    .await
}

async fn json_call(
    f: &Fixture,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(f, method, path, body, "application/json").await
}

async fn ready(f: &Fixture) {
    trireme_api::kube::ensure_system_namespaces(&f.state.store)
        .await
        .unwrap();
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects_with_the_right_codes() {
    let f = fixture().await;
    ready(&f).await;
    let (s, v) = json_call(&f, "GET", &format!("{CMS}/nope"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_status(&v, 404, "NotFound");
    assert_eq!(v["message"], "configmaps \"nope\" not found");

    let (s, v) = json_call(&f, "POST", CMS, Some(cm("a"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["generation"], 1);
    assert!(v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let (s, v) = json_call(&f, "POST", CMS, Some(cm("a"))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_status(&v, 409, "AlreadyExists");

    let (s, v) = json_call(&f, "POST", CMS, Some(cm("Bad_Name"))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&v, 422, "Invalid");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");

    let (s, v) = json_call(&f, "POST", CMS, Some(json!({"metadata": {}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let (s, v) = json_call(
        &f,
        "POST",
        "/api/v1/namespaces/missing/configmaps",
        Some(cm("x")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "namespaces \"missing\" not found");

    let mut other_ns = cm("y");
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let (s, v) = json_call(&f, "POST", CMS, Some(other_ns)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_status(&v, 400, "BadRequest");

    let (s, v) = call(
        &f,
        "POST",
        CMS,
        Some(cm("z")),
        "application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_status(&v, 415, "UnsupportedMediaType");

    let (s, v) = call(
        &f,
        "PATCH",
        &format!("{CMS}/a"),
        Some(json!({})),
        "text/plain",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");

    let (s, v) = json_call(&f, "GET", "/api/v1/widgets", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_status(&v, 404, "NotFound");

    let (s, v) = json_call(&f, "PUT", CMS, Some(cm("a"))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_status(&v, 405, "MethodNotAllowed");

    let (s, v) = call(&f, "POST", CMS, None, "application/json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = json_call(
        &f,
        "GET",
        &format!("{CMS}?labelSelector=app%20in%20web"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_updates_with_the_same_resource_version_exactly_one_wins() {
    let f = fixture().await;
    ready(&f).await;
    let (_, created) = json_call(&f, "POST", CMS, Some(cm("race"))).await;
    let rv = created["metadata"]["resourceVersion"].clone();
    let update = |v: &str| {
        let mut o = created.clone();
        o["data"]["k"] = json!(v);
        o["metadata"]["resourceVersion"] = rv.clone();
        o
    };
    let path = format!("{CMS}/race");
    let (a, b) = tokio::join!(
        json_call(&f, "PUT", &path, Some(update("a"))),
        json_call(&f, "PUT", &path, Some(update("b")))
    );
    let codes = [a.0, b.0];
    assert_eq!(
        codes.iter().filter(|c| **c == StatusCode::OK).count(),
        1,
        "{codes:?}"
    );
    let loser = if a.0 == StatusCode::OK { b.1 } else { a.1 };
    assert_status(&loser, 409, "Conflict");
    // Without a resourceVersion the update is unconditional.
    let mut o = created.clone();
    o["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    o["data"]["k"] = json!("c");
    let (s, v) = json_call(&f, "PUT", &path, Some(o)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["metadata"]["uid"], created["metadata"]["uid"],
        "uid is immutable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_select_page_and_namespaces_cascade() {
    let f = fixture().await;
    ready(&f).await;
    for i in 0..5 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = json!({"n": if i % 2 == 0 { "even" } else { "odd" }});
        assert_eq!(
            json_call(&f, "POST", CMS, Some(o)).await.0,
            StatusCode::CREATED
        );
    }
    let (_, v) = json_call(&f, "GET", &format!("{CMS}?labelSelector=n%3Deven"), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert_eq!(v["kind"], "ConfigMapList");
    let (_, v) = json_call(
        &f,
        "GET",
        &format!("{CMS}?fieldSelector=metadata.name%3Dc1"),
        None,
    )
    .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // Paging: 2 + 2 + 1, all at the first page's revision.
    let mut names = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let path = if token.is_empty() {
            format!("{CMS}?limit=2")
        } else {
            format!("{CMS}?limit=2&continue={token}")
        };
        let (_, v) = json_call(&f, "GET", &path, None).await;
        names.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match v["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(names, vec!["c0", "c1", "c2", "c3", "c4"]);
    // A finalizer holds deletion until it is removed.
    let mut o = cm("held");
    o["metadata"]["finalizers"] = json!(["example.com/hold"]);
    json_call(&f, "POST", CMS, Some(o)).await;
    let (s, v) = json_call(&f, "DELETE", &format!("{CMS}/held"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].as_str().is_some(), "{v}");
    assert_eq!(
        json_call(&f, "GET", &format!("{CMS}/held"), None).await.0,
        StatusCode::OK
    );
    let (s, _) = call(
        &f,
        "PATCH",
        &format!("{CMS}/held"),
        Some(json!({"metadata": {"finalizers": null}})),
        "application/merge-patch+json",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json_call(&f, "GET", &format!("{CMS}/held"), None).await.0,
        StatusCode::NOT_FOUND
    );
    // Deleting a namespace deletes what is in it.
    json_call(
        &f,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "tmp"}})),
    )
    .await;
    json_call(
        &f,
        "POST",
        "/api/v1/namespaces/tmp/configmaps",
        Some(cm("inside")),
    )
    .await;
    assert_eq!(
        json_call(&f, "DELETE", "/api/v1/namespaces/tmp", None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, _) = json_call(&f, "GET", "/api/v1/namespaces/tmp/configmaps/inside", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_timeout_past_what_a_clock_holds_is_no_timeout() {
    let f = fixture().await;
    ready(&f).await;
    // u64::MAX seconds once overflowed the deadline and panicked the handler.
    let req = Request::get(format!("{CMS}?watch=1&timeoutSeconds={}", u64::MAX))
        .body(Body::empty())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), app(f.state.clone()).oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_gets_410_expired_as_an_error_event() {
    let f = fixture().await;
    ready(&f).await;
    let (_, a) = json_call(&f, "POST", CMS, Some(cm("w1"))).await;
    let rv: u64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    json_call(&f, "POST", CMS, Some(cm("w2"))).await;
    // A live watch from rv sees w2 ADDED and then w1 DELETED.
    let req = Request::get(format!(
        "{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=2"
    ))
    .body(Body::empty())
    .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    json_call(&f, "DELETE", &format!("{CMS}/w1"), None).await;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let events: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["object"]["metadata"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("ADDED".into(), "w2".into()),
            ("DELETED".into(), "w1".into())
        ]
    );

    let now = f.state.store.revision();
    f.state.store.compact(now).await.unwrap();
    let req = Request::get(format!("{CMS}?watch=1&resourceVersion={rv}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let event: Value = serde_json::from_slice(body.strip_suffix(b"\n").unwrap_or(&body)).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_status(&event["object"], 410, "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_need_a_live_namespace() {
    let f = fixture().await;
    ready(&f).await;
    let (s, v) = json_call(
        &f,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        Some(cm("a")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_status(&v, 404, "NotFound");
    // A namespace held by a finalizer is being terminated: nothing new goes in.
    let ns = json!({"metadata": {"name": "closing", "finalizers": ["example.com/hold"]}});
    let (s, _) = json_call(&f, "POST", "/api/v1/namespaces", Some(ns)).await;
    assert_eq!(s, StatusCode::CREATED);
    let path = "/api/v1/namespaces/closing/configmaps";
    assert_eq!(
        json_call(&f, "POST", path, Some(cm("before"))).await.0,
        StatusCode::CREATED
    );
    let (s, v) = json_call(&f, "DELETE", "/api/v1/namespaces/closing", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = json_call(&f, "POST", path, Some(cm("after"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_status(&v, 403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_preconditions_and_propagation() {
    let f = fixture().await;
    ready(&f).await;
    let owner = format!("{CMS}/owner");
    let (_, made) = json_call(&f, "POST", CMS, Some(cm("owner"))).await;
    let uid = made["metadata"]["uid"].as_str().unwrap().to_string();
    // A uid precondition that does not match: 409, and nothing happens.
    let opts =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-it"}});
    let (s, v) = json_call(&f, "DELETE", &owner, Some(opts)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_status(&v, 409, "Conflict");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("Precondition failed: UID in precondition: not-it"),
        "{v}"
    );
    // Bad options: 422 for bad values, 400 for bad types; nothing happens.
    for bad in [
        json!({"propagationPolicy": "Sideways"}),
        json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
    ] {
        let (s, v) = json_call(&f, "DELETE", &owner, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad} -> {v}");
        assert_status(&v, 422, "Invalid");
    }
    for bad in [
        json!({"orphanDependents": "yes"}),
        json!({"preconditions": {"uid": 7}}),
        json!({"preconditions": "uid"}),
    ] {
        let (s, v) = json_call(&f, "DELETE", &owner, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {v}");
        assert_status(&v, 400, "BadRequest");
    }
    let up = format!("{owner}?propagationPolicy=Up");
    assert_eq!(
        json_call(&f, "DELETE", &up, None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(json_call(&f, "GET", &owner, None).await.0, StatusCode::OK);
    // Orphan (with the right uid): the object is marked, with the finalizer the
    // garbage collector removes once the dependents are orphaned.
    let opts = json!({"propagationPolicy": "Orphan", "preconditions": {"uid": uid}});
    let (s, v) = json_call(&f, "DELETE", &owner, Some(opts)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["finalizers"], json!(["orphan"]), "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let rv = v["metadata"]["resourceVersion"].clone();
    // The same policy again (here from the query), or none, changes nothing.
    let again = format!("{owner}?propagationPolicy=Orphan");
    assert_eq!(
        json_call(&f, "DELETE", &again, None).await.1["metadata"]["resourceVersion"],
        rv
    );
    assert_eq!(
        json_call(&f, "DELETE", &owner, None).await.1["metadata"]["resourceVersion"],
        rv
    );
    // Another policy replaces the finalizer, as kube-apiserver does.
    let opts = json!({"propagationPolicy": "Foreground"});
    let (_, fg) = json_call(&f, "DELETE", &owner, Some(opts)).await;
    assert_eq!(
        fg["metadata"]["finalizers"],
        json!(["foregroundDeletion"]),
        "{fg}"
    );
    assert_eq!(
        fg["metadata"]["deletionTimestamp"],
        v["metadata"]["deletionTimestamp"]
    );
    // An explicit Background removes it, and with no finalizer left the object goes.
    let opts = json!({"propagationPolicy": "Background"});
    assert_eq!(
        json_call(&f, "DELETE", &owner, Some(opts)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        json_call(&f, "GET", &owner, None).await.0,
        StatusCode::NOT_FOUND
    );
    // The policy's finalizer already there (not last): nothing is rewritten.
    let mut two = cm("two");
    two["metadata"]["finalizers"] = json!(["foregroundDeletion", "example.com/hold"]);
    json_call(&f, "POST", CMS, Some(two)).await;
    let fg = json!({"propagationPolicy": "Foreground"});
    let (_, first) = json_call(&f, "DELETE", &format!("{CMS}/two"), Some(fg.clone())).await;
    let (_, again) = json_call(&f, "DELETE", &format!("{CMS}/two"), Some(fg)).await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    let order = json!(["foregroundDeletion", "example.com/hold"]);
    assert_eq!(again["metadata"]["finalizers"], order);
    // Another finalizer keeps a Background delete pending, without the GC's.
    let mut held = cm("held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    json_call(&f, "POST", CMS, Some(held)).await;
    let opts = json!({"propagationPolicy": "Background"});
    let (_, v) = json_call(&f, "DELETE", &format!("{CMS}/held"), Some(opts)).await;
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["example.com/hold"]),
        "{v}"
    );
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_checks_every_write_and_stores_none() {
    let f = fixture().await;
    ready(&f).await;
    let wet = format!("{CMS}/wet");
    // Create: answered as created, not stored; a bad one still fails.
    let dry = format!("{CMS}?dryRun=All");
    let (s, v) = json_call(&f, "POST", &dry, Some(cm("dry"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["name"], "dry");
    assert!(
        v["metadata"].get("resourceVersion").is_none(),
        "never stored: {v}"
    );
    let (s, _) = json_call(&f, "GET", &format!("{CMS}/dry"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = json_call(&f, "POST", &dry, Some(json!({"metadata": {}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Patch (kubectl diff) and update: the answer shows the change, the store keeps
    // the old object; a stale resourceVersion still conflicts.
    let (_, made) = json_call(&f, "POST", CMS, Some(cm("wet"))).await;
    let rv = made["metadata"]["resourceVersion"].clone();
    let patch = Some(json!({"data": {"k": "changed"}}));
    let merge = "application/merge-patch+json";
    let (s, v) = call(&f, "PATCH", &format!("{wet}?dryRun=All"), patch, merge).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["k"], "changed");
    assert_eq!(
        v["metadata"]["resourceVersion"], rv,
        "the version it still has"
    );
    let (_, stored) = json_call(&f, "GET", &wet, None).await;
    assert_eq!(stored["data"]["k"], "v");
    assert_eq!(stored["metadata"]["resourceVersion"], rv);
    let mut stale = made.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (s, _) = json_call(&f, "PUT", &format!("{wet}?dryRun=All"), Some(stale)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Delete: answered, not done; kubectl puts `dryRun` in the DeleteOptions body.
    let (s, _) = json_call(&f, "DELETE", &format!("{wet}?dryRun=All"), None).await;
    assert_eq!(s, StatusCode::OK);
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background", "dryRun": ["All"]});
    let (s, _) = json_call(&f, "DELETE", &wet, Some(opts)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json_call(&f, "DELETE", &wet, Some(json!({"dryRun": ["Some"]}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, stored) = json_call(&f, "GET", &wet, None).await;
    assert_eq!(stored["metadata"]["resourceVersion"], rv);
    // An unknown dryRun value is refused, not taken for a real write; reads ignore it.
    let (s, v) = json_call(&f, "DELETE", &format!("{wet}?dryRun=Maybe"), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = json_call(&f, "GET", &format!("{wet}?dryRun=Maybe"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_call(&f, "GET", &wet, None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_allows_bookmarks_ends_with_one_at_its_timeout() {
    let f = fixture().await;
    ready(&f).await;
    let (_, a) = json_call(&f, "POST", CMS, Some(cm("b1"))).await;
    let rv = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = |extra: &str| {
        let req = Request::get(format!(
            "{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=2{extra}"
        ))
        .body(Body::empty())
        .unwrap();
        app(f.state.clone()).oneshot(req)
    };
    let with = watch("&allowWatchBookmarks=true").await.unwrap();
    let without = watch("").await.unwrap();
    // A write the watch reports, then writes of another kind it does not.
    json_call(&f, "POST", CMS, Some(cm("b2"))).await;
    for i in 0..3 {
        let secret = json!({"metadata": {"name": format!("s{i}")}, "data": {}});
        json_call(
            &f,
            "POST",
            "/api/v1/namespaces/default/secrets",
            Some(secret),
        )
        .await;
    }
    let last_write = f.state.store.revision();
    let lines = |resp: axum::response::Response| async move {
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        String::from_utf8_lossy(&body)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let events = lines(with).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "BOOKMARK"], "{events:?}");
    let mark = &events[1]["object"];
    assert_eq!(
        (mark["kind"].as_str(), mark["apiVersion"].as_str()),
        (Some("ConfigMap"), Some("v1"))
    );
    // Everything up to the last write was sent: the later Secrets moved it on.
    let at: u64 = mark["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(at >= last_write, "{mark} before {last_write}");
    // Not asked for: none.
    let plain = lines(without).await;
    assert!(plain.iter().all(|e| e["type"] != "BOOKMARK"), "{plain:?}");
}
