//! Strategic merge patch through the router: kubectl's patch shapes on a Deployment,
//! the directives, ConfigMaps (SMP = merge patch), and malformed patches as Statuses.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{fixture, Fixture};

const SMP: &str = "application/strategic-merge-patch+json";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    body: Option<String>,
    content_type: &str,
) -> (StatusCode, Value) {
    common::send(
        f,
        method,
        path,
        body.map(Body::from).unwrap_or_else(Body::empty),
        content_type,
    )
    .await
}

async fn ready(f: &Fixture) {
    trireme_api::kube::ensure_system_namespaces(&f.state.store)
        .await
        .unwrap();
}

async fn create(f: &Fixture, coll: &str, obj: Value) {
    let (s, v) = call(f, "POST", coll, Some(obj.to_string()), "application/json").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// PATCHes with SMP, expects 200, and checks that what is stored (read back with GET)
/// is what the PATCH answered and carries no `$` key.
async fn smp(f: &Fixture, path: &str, patch: Value) -> Value {
    let (s, v) = call(f, "PATCH", path, Some(patch.to_string()), SMP).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, stored) = call(f, "GET", path, None, "application/json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stored, v);
    assert!(no_dollar(&stored), "a directive was stored: {stored}");
    stored
}

fn no_dollar(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| !k.starts_with('$') && no_dollar(v)),
        Value::Array(a) => a.iter().all(no_dollar),
        _ => true,
    }
}

fn assert_failure(s: StatusCode, v: &Value) {
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s}: {v}"
    );
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], s.as_u16(), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}, "finalizers": ["a.example/x", "b.example/y"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {
                        "name": "nginx",
                        "image": "nginx:1",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "sidecar", "image": "busybox:1", "args": ["sleep", "3600"]},
                ]},
            },
        },
    })
}

fn containers(d: &Value) -> &Vec<Value> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_set_image_keeps_the_other_container_and_untouched_fields() {
    let f = fixture().await;
    ready(&f).await;
    create(&f, DEPLOYS, deployment("web")).await;
    let path = format!("{DEPLOYS}/web");
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],"containers":[{"image":"nginx:2","name":"nginx"}]}}}}),
    )
    .await;
    let cs = containers(&d);
    assert_eq!(cs.len(), 2, "{d}");
    assert_eq!(cs[0]["name"], "nginx");
    assert_eq!(cs[0]["image"], "nginx:2");
    assert_eq!(
        cs[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(
        cs[1],
        json!({"name": "sidecar", "image": "busybox:1", "args": ["sleep", "3600"]})
    );
    // The rest of the object is untouched.
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));

    // kubectl set image on both containers: both lists in $setElementOrder.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],"containers":[{"image":"busybox:2","name":"sidecar"}]}}}}),
    )
    .await;
    let cs = containers(&d);
    assert_eq!(cs[0]["image"], "nginx:2");
    assert_eq!(cs[1]["image"], "busybox:2");
    assert_eq!(cs[1]["args"], json!(["sleep", "3600"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_merges_by_name_and_containers_delete_by_key() {
    let f = fixture().await;
    ready(&f).await;
    create(&f, DEPLOYS, deployment("web")).await;
    let path = format!("{DEPLOYS}/web");

    // kubectl set env shape: changes B, adds C, deletes A.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx",
            "$setElementOrder/env":[{"name":"B"},{"name":"C"}],
            "env":[{"name":"B","value":"20"},{"name":"C","value":"3"},{"$patch":"delete","name":"A"}]}]}}}}),
    )
    .await;
    let cs = containers(&d);
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(cs[0]["image"], "nginx:1");
    assert_eq!(cs.len(), 2);

    // A port merges into the existing one by containerPort.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","ports":[{"containerPort":80,"name":"http"}]}]}}}}),
    )
    .await;
    assert_eq!(
        containers(&d)[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
    );

    // $patch: delete of a container.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}),
    )
    .await;
    let cs = containers(&d);
    assert_eq!(cs.len(), 1, "{d}");
    assert_eq!(cs[0]["name"], "nginx");

    // A list without a merge key (args) is replaced; a new container is added.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:3","args":["true"]}]}}}}),
    )
    .await;
    let cs = containers(&d);
    assert_eq!(cs.len(), 2, "{d}");
    assert!(cs
        .iter()
        .any(|c| c["name"] == "nginx" && c["image"] == "nginx:1"));
    assert!(cs
        .iter()
        .any(|c| c["name"] == "sidecar" && c["args"] == json!(["true"])));

    // $patch: replace on the containers list.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"spec":{"containers":[{"$patch":"replace"},{"name":"only","image":"x:1"}]}}}}),
    )
    .await;
    assert_eq!(
        containers(&d),
        &vec![json!({"name": "only", "image": "x:1"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_retain_keys_and_map_directives() {
    let f = fixture().await;
    ready(&f).await;
    create(&f, DEPLOYS, deployment("web")).await;
    let path = format!("{DEPLOYS}/web");

    // Finalizers merge as a set...
    let d = smp(
        &f,
        &path,
        json!({"metadata":{"finalizers":["b.example/y","c.example/z"]}}),
    )
    .await;
    let fins = d["metadata"]["finalizers"].as_array().unwrap();
    assert_eq!(fins.len(), 3, "{d}");
    for want in ["a.example/x", "b.example/y", "c.example/z"] {
        assert!(fins.iter().any(|v| v == want), "{d}");
    }
    // ...and lose members through $deleteFromPrimitiveList.
    let d = smp(
        &f,
        &path,
        json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a.example/x","c.example/z"]}}),
    )
    .await;
    assert_eq!(d["metadata"]["finalizers"], json!(["b.example/y"]));

    // $retainKeys (kubectl apply's shape for a Deployment strategy).
    let d = smp(
        &f,
        &path,
        json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":null}}}),
    )
    .await;
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));

    // $patch: replace and delete on maps.
    let d = smp(
        &f,
        &path,
        json!({"spec":{"template":{"metadata":{"labels":{"$patch":"replace","app":"web","tier":"fe"}}}}}),
    )
    .await;
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web", "tier": "fe"})
    );
    let d = smp(&f, &path, json!({"spec":{"strategy":{"$patch":"delete"}}})).await;
    assert!(d["spec"].get("strategy").is_none(), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_strategic_merge_patch_is_a_merge_patch() {
    let f = fixture().await;
    ready(&f).await;
    create(
        &f,
        CMS,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}},
               "data": {"k": "v", "gone": "x"}}),
    )
    .await;
    let d = smp(
        &f,
        &format!("{CMS}/c"),
        json!({"metadata":{"labels":{"b":"2"}},"data":{"gone":null,"new":"y"}}),
    )
    .await;
    assert_eq!(d["data"], json!({"k": "v", "new": "y"}));
    assert_eq!(d["metadata"]["labels"], json!({"a": "1", "b": "2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_strategic_merge_patches_are_statuses() {
    let f = fixture().await;
    ready(&f).await;
    create(&f, DEPLOYS, deployment("web")).await;
    let path = format!("{DEPLOYS}/web");
    let (_, before) = call(&f, "GET", &path, None, "application/json").await;
    for body in [
        "not json".to_string(),
        "[1,2]".to_string(),
        "\"x\"".to_string(),
        json!({"$patch": "delete"}).to_string(),
        json!({"spec": {"$patch": 7}}).to_string(),
        json!({"spec": {"strategy": {"$retainKeys": "type"}}}).to_string(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}).to_string(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a.example/x"}}).to_string(),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "nginx"}}}}}).to_string(),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}).to_string(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "$patch": "bogus"}]}}}}).to_string(),
        json!({"spec": {"template": {"spec": {"containers": ["nginx"]}}}}).to_string(),
        json!({"spec": {"$unknownDirective": 1}}).to_string(),
    ] {
        let (s, v) = call(&f, "PATCH", &path, Some(body.clone()), SMP).await;
        assert_failure(s, &v);
    }
    let (_, after) = call(&f, "GET", &path, None, "application/json").await;
    assert_eq!(before, after, "a failed patch changed the object");
}
