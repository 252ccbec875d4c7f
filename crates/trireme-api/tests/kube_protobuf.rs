//! kubectl 1.32's protobuf create bodies (`application/vnd.kubernetes.protobuf`, KUBE-API.md
//! §11): bodies built as client-go builds them (gogo emits every non-pointer field, zero or
//! not) are decoded to the JSON object kube-apiserver would have stored; malformed bodies
//! give a Status, never a panic. The last test runs the real kubectl's `create` generators
//! against the router served on a socket.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Value};
use tower::ServiceExt;
use trireme_api::app;

mod common;
use common::{fixture, Fixture};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .body(Body::from(body))
        .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    if status != StatusCode::NOT_FOUND || method != "GET" {
        // Answers stay JSON whatever the Accept prefers.
        let ct = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(ct, "application/json", "{method} {path}");
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
    )
}

async fn get(f: &Fixture, path: &str) -> Value {
    let (s, v) = call(f, "GET", path, Vec::new(), "application/json").await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    v
}

async fn ready(f: &Fixture) {
    trireme_api::kube::ensure_system_namespaces(&f.state.store)
        .await
        .unwrap();
}

/// `k8s\0` + runtime.Unknown, as client-go's protobuf serializer writes it.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

async fn post(f: &Fixture, path: &str, api_version: &str, kind: &str, raw: Vec<u8>) -> Value {
    let (s, v) = call(f, "POST", path, envelope(api_version, kind, raw), PROTOBUF).await;
    assert_eq!(s, StatusCode::CREATED, "POST {path}: {v}");
    v
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ObjectMeta as gogo writes it: every non-pointer field present, zero or not.
fn object_meta(name: &str, l: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time {
            seconds: Some(0),
            nanos: Some(0),
        }),
        labels: labels(l),
        ..Default::default()
    }
}

fn assert_created(v: &Value, name: &str) {
    assert_eq!(v["metadata"]["name"], name, "{v}");
    assert_eq!(v["metadata"]["generation"], 1, "{v}");
    assert!(
        v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{v}"
    );
    assert!(v["metadata"]["resourceVersion"].as_str().is_some(), "{v}");
    for zero in ["generateName", "selfLink"] {
        assert!(v["metadata"].get(zero).is_none(), "{zero} in {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_secret_namespace_serviceaccount() {
    let f = fixture().await;
    ready(&f).await;

    // ConfigMap: data, binaryData, labels.
    let cm = core::ConfigMap {
        metadata: Some(object_meta("cfg", &[("app", "web"), ("tier", "front")])),
        data: labels(&[("a", "1"), ("b", "two")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255])].into(),
        immutable: None,
    };
    let v = post(
        &f,
        "/api/v1/namespaces/default/configmaps",
        "v1",
        "ConfigMap",
        cm.encode_to_vec(),
    )
    .await;
    assert_created(&v, "cfg");
    let v = get(&f, "/api/v1/namespaces/default/configmaps/cfg").await;
    assert_eq!(v["kind"], "ConfigMap");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(
        v["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    assert_eq!(v["data"], json!({"a": "1", "b": "two"}));
    assert_eq!(v["binaryData"], json!({"bin": "AAEC/w=="}));
    assert!(v.get("immutable").is_none(), "{v}");
    // creationTimestamp is the server's, not the zero time the client sent.
    assert!(v["metadata"]["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.starts_with("20")));

    // Secret: bytes data as base64, type, stringData merged by the server, immutable=false kept.
    let secret = core::Secret {
        metadata: Some(object_meta("creds", &[])),
        data: [("user".to_string(), b"admin".to_vec())].into(),
        string_data: labels(&[("pass", "s3cr3t")]),
        r#type: s("kubernetes.io/basic-auth"),
        immutable: Some(false),
    };
    post(
        &f,
        "/api/v1/namespaces/default/secrets",
        "v1",
        "Secret",
        secret.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/api/v1/namespaces/default/secrets/creds").await;
    assert_eq!(v["type"], "kubernetes.io/basic-auth");
    assert_eq!(v["data"], json!({"user": "YWRtaW4=", "pass": "czNjcjN0"}));
    assert!(v.get("stringData").is_none(), "{v}");
    assert_eq!(v["immutable"], false);
    // kubectl create secret generic sends type "": the server defaults Opaque.
    let plain = core::Secret {
        metadata: Some(object_meta("plain", &[])),
        data: [("k".to_string(), vec![])].into(),
        r#type: s(""),
        ..Default::default()
    };
    post(
        &f,
        "/api/v1/namespaces/default/secrets",
        "v1",
        "Secret",
        plain.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/api/v1/namespaces/default/secrets/plain").await;
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["data"], json!({"k": ""}));

    // Namespace: cluster-scoped; spec and status are the server's.
    let ns = core::Namespace {
        metadata: Some(object_meta("team-a", &[("owner", "me")])),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: s(""),
            conditions: vec![],
        }),
    };
    post(
        &f,
        "/api/v1/namespaces",
        "v1",
        "Namespace",
        ns.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/api/v1/namespaces/team-a").await;
    assert_eq!(v["kind"], "Namespace");
    assert_eq!(v["status"]["phase"], "Active");
    assert_eq!(v["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        v["metadata"]["labels"],
        json!({"owner": "me", "kubernetes.io/metadata.name": "team-a"})
    );
    assert!(v["metadata"].get("namespace").is_none(), "{v}");

    // ServiceAccount in the new namespace.
    let sa = core::ServiceAccount {
        metadata: Some(object_meta("robot", &[])),
        image_pull_secrets: vec![core::LocalObjectReference { name: s("regcred") }],
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    post(
        &f,
        "/api/v1/namespaces/team-a/serviceaccounts",
        "v1",
        "ServiceAccount",
        sa.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/api/v1/namespaces/team-a/serviceaccounts/robot").await;
    assert_eq!(v["kind"], "ServiceAccount");
    assert_eq!(v["metadata"]["namespace"], "team-a");
    assert_eq!(v["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(v["automountServiceAccountToken"], false);
    assert!(v.get("secrets").is_none(), "{v}");

    // Lease (client-go leader election): pointer fields and MicroTimes.
    let lease = coordination::Lease {
        metadata: Some(object_meta("leader", &[])),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("node-1_abc"),
            lease_duration_seconds: Some(15),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(1_795_505_183),
                nanos: Some(345_719_000),
            }),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_795_505_190),
                nanos: Some(0),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    post(
        &f,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "coordination.k8s.io/v1",
        "Lease",
        lease.encode_to_vec(),
    )
    .await;
    let v = get(
        &f,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
    )
    .await;
    assert_eq!(
        v["spec"],
        json!({
            "holderIdentity": "node-1_abc",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-11-24T07:26:23.345719Z",
            "renewTime": "2026-11-24T07:26:30.000000Z",
            "leaseTransitions": 0,
        })
    );

    // PUT with a protobuf body (client-go updates use it too).
    let mut cm2 = cm.clone();
    cm2.data.insert("c".into(), "3".into());
    let (st, v) = call(
        &f,
        "PUT",
        "/api/v1/namespaces/default/configmaps/cfg",
        envelope("v1", "ConfigMap", cm2.encode_to_vec()),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({"a": "1", "b": "two", "c": "3"}));
}

/// A container as gogo writes it (the fields `kubectl create deployment` leaves unset are
/// present with zero values).
fn container(name: &str, image: &str) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        working_dir: s(""),
        resources: Some(core::ResourceRequirements::default()),
        termination_message_path: s(""),
        termination_message_policy: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

fn pod_spec(containers: Vec<core::Container>) -> core::PodSpec {
    core::PodSpec {
        containers,
        restart_policy: s(""),
        dns_policy: s(""),
        service_account_name: s(""),
        service_account: s(""),
        node_name: s(""),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        hostname: s(""),
        subdomain: s(""),
        scheduler_name: s(""),
        priority_class_name: s(""),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_deployment() {
    let f = fixture().await;
    ready(&f).await;

    // Service as `kubectl create service clusterip web --tcp=80:8080,443:https`.
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        app_protocol: None,
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
    };
    let svc = core::Service {
        metadata: Some(object_meta("web", &[("app", "web")])),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "80-8080",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "443-https",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("https"),
                    },
                ),
            ],
            selector: labels(&[("app", "web")]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            load_balancer_ip: s(""),
            external_name: s(""),
            external_traffic_policy: s(""),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    post(
        &f,
        "/api/v1/namespaces/default/services",
        "v1",
        "Service",
        svc.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/api/v1/namespaces/default/services/web").await;
    assert_eq!(v["kind"], "Service");
    assert_eq!(
        v["spec"],
        json!({
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP",
        })
    );
    assert_eq!(v["status"], json!({"loadBalancer": {}}));

    // Deployment as `kubectl create deployment web --image=nginx --replicas=2 --port=80
    // -- nginx -g 'daemon off;'` (plus env, which `kubectl set env` would add).
    let mut c = container("nginx", "nginx:1.27");
    c.command = vec!["nginx".into()];
    c.args = vec!["-g".into(), "daemon off;".into()];
    c.ports = vec![core::ContainerPort {
        name: s(""),
        host_port: Some(0),
        container_port: Some(80),
        protocol: s(""),
        host_ip: s(""),
    }];
    c.env = vec![core::EnvVar {
        name: s("MODE"),
        value: s("prod"),
        value_from: None,
    }];
    let dep = apps::Deployment {
        metadata: Some(object_meta("web", &[("app", "web")])),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(object_meta("", &[("app", "web")])),
                spec: Some(pod_spec(vec![c])),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s(""),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            ..Default::default()
        }),
    };
    post(
        &f,
        "/apis/apps/v1/namespaces/default/deployments",
        "apps/v1",
        "Deployment",
        dep.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(v["kind"], "Deployment");
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        v["spec"],
        json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "command": ["nginx"],
                    "args": ["-g", "daemon off;"],
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {},
                }]},
            },
            "strategy": {},
        })
    );
    assert_eq!(v["status"], json!({}));

    // Pointer fields keep their zero values: replicas 0, a rolling update with intstr values.
    let mut dep0 = dep.clone();
    dep0.metadata = Some(object_meta("zero", &[]));
    if let Some(spec) = dep0.spec.as_mut() {
        spec.replicas = Some(0);
        spec.revision_history_limit = Some(0);
        spec.strategy = Some(apps::DeploymentStrategy {
            r#type: s("RollingUpdate"),
            rolling_update: Some(apps::RollingUpdateDeployment {
                max_unavailable: Some(IntOrString {
                    r#type: Some(1),
                    int_val: Some(0),
                    str_val: s("25%"),
                }),
                max_surge: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(0),
                    str_val: s(""),
                }),
            }),
        });
    }
    post(
        &f,
        "/apis/apps/v1/namespaces/default/deployments",
        "apps/v1",
        "Deployment",
        dep0.encode_to_vec(),
    )
    .await;
    let v = get(&f, "/apis/apps/v1/namespaces/default/deployments/zero").await;
    assert_eq!(v["spec"]["replicas"], 0);
    assert_eq!(v["spec"]["revisionHistoryLimit"], 0);
    assert_eq!(
        v["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 0}})
    );
}

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_status_errors() {
    let f = fixture().await;
    ready(&f).await;
    const CMS: &str = "/api/v1/namespaces/default/configmaps";
    let good = envelope(
        "v1",
        "ConfigMap",
        core::ConfigMap {
            metadata: Some(object_meta("ok", &[])),
            data: labels(&[("k", "v")]),
            ..Default::default()
        }
        .encode_to_vec(),
    );

    // Truncated anywhere inside the envelope or the object: 400, never a panic.
    for cut in [5, 8, good.len() / 2, good.len() - 1] {
        let (st, v) = call(&f, "POST", CMS, good[..cut].to_vec(), PROTOBUF).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "cut {cut}: {v}");
        assert_status(&v, 400, "BadRequest");
    }
    // Garbage after the magic.
    let mut garbage = b"k8s\0".to_vec();
    garbage.extend([0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0x80]);
    let (st, v) = call(&f, "POST", CMS, garbage, PROTOBUF).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_status(&v, 400, "BadRequest");
    // A valid envelope whose raw object is garbage.
    let (st, v) = call(
        &f,
        "POST",
        CMS,
        envelope("v1", "ConfigMap", vec![0x12, 0x05, 0x0a]),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_status(&v, 400, "BadRequest");
    // A map entry whose value is not valid UTF-8.
    let mut bad_utf8 = vec![0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, 0xff];
    bad_utf8.splice(0..0, [0x0a, 0x03, 0x0a, 0x01, b'u']);
    let (st, v) = call(
        &f,
        "POST",
        CMS,
        envelope("v1", "ConfigMap", bad_utf8),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Wrong magic (e.g. JSON with the protobuf Content-Type): 415.
    let (st, v) = call(
        &f,
        "POST",
        CMS,
        br#"{"metadata":{"name":"j"}}"#.to_vec(),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert_status(&v, 415, "UnsupportedMediaType");
    let (st, v) = call(&f, "POST", CMS, Vec::new(), PROTOBUF).await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");

    // A kind this server cannot decode from protobuf: 415.
    let (st, v) = call(
        &f,
        "POST",
        CMS,
        envelope("batch/v1", "Job", vec![]),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert_status(&v, 415, "UnsupportedMediaType");
    // A field this server does not map (a probe) is refused, not dropped.
    let mut c = container("c", "busybox");
    c.liveness_probe = Some(core::Probe::default());
    let pod_dep = apps::Deployment {
        metadata: Some(object_meta("probe", &[])),
        spec: Some(apps::DeploymentSpec {
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(pod_spec(vec![c])),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let (st, v) = call(
        &f,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        envelope("apps/v1", "Deployment", pod_dep.encode_to_vec()),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("Container"), "{v}");
    // The envelope's kind must match the URL's.
    let (st, v) = call(
        &f,
        "POST",
        "/api/v1/namespaces/default/secrets",
        good.clone(),
        PROTOBUF,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Mutated bodies (every byte position, pseudo-random values): a Status every time.
    let mut seed: u32 = 12345;
    for i in 0..good.len() * 4 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let mut body = good.clone();
        let at = 4 + i % (good.len() - 4);
        body[at] = (seed >> 16) as u8;
        if i % 3 == 0 {
            body.truncate(at + 1);
        }
        let (st, v) = call(&f, "POST", CMS, body, PROTOBUF).await;
        assert!(
            [
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                StatusCode::UNPROCESSABLE_ENTITY,
            ]
            .contains(&st),
            "{st}: {v}"
        );
        if st != StatusCode::CREATED {
            assert_eq!(v["kind"], "Status", "{v}");
        } else {
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            let (st, _) = call(&f, "DELETE", &format!("{CMS}/{name}"), Vec::new(), "").await;
            assert_eq!(st, StatusCode::OK);
        }
    }

    // Nothing of the above was stored; the good body still works.
    let (st, v) = call(&f, "GET", CMS, Vec::new(), "application/json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"], json!([]), "{v}");
    let (st, v) = call(&f, "POST", CMS, good, PROTOBUF).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"], json!({"k": "v"}));
}

/// The real kubectl 1.32 `create` generators against the router on a socket, checking with
/// `-v=8` that each request really went out as protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_create_generators() {
    // kubectl is on the machine image; scripts/test.sh installs Debian's otherwise. A
    // missing kubectl fails the test rather than skipping it.
    const KUBECTL: &str = "kubectl";
    let f = fixture().await;
    ready(&f).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(f.state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let kubeconfig = kubeconfig.clone();
        let home = dir.path().to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(KUBECTL)
                    .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "-v=8"])
                    .arg("--cache-dir")
                    .arg(home.join("cache"))
                    .args(args)
                    .env("HOME", &home)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let cases: &[&'static [&'static str]] = &[
        &["create", "namespace", "pb"],
        &[
            "-n",
            "pb",
            "create",
            "configmap",
            "x",
            "--from-literal=a=1",
            "--from-literal=b=two",
        ],
        &[
            "-n",
            "pb",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=user=admin",
        ],
        &["-n", "pb", "create", "serviceaccount", "robot"],
        &[
            "-n",
            "pb",
            "create",
            "service",
            "clusterip",
            "websvc",
            "--tcp=80:8080",
        ],
        &[
            "-n",
            "pb",
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "--port=80",
        ],
        &[
            "-n",
            "pb",
            "create",
            "deployment",
            "cmd",
            "--image=busybox",
            "--",
            "sleep",
            "3600",
        ],
    ];
    for args in cases {
        let out = run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?}: {stdout}\n{stderr}");
        assert!(stdout.contains("created"), "kubectl {args:?}: {stdout}");
        assert!(
            stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "kubectl {args:?} did not send protobuf:\n{stderr}"
        );
    }

    let v = get(&f, "/api/v1/namespaces/pb").await;
    assert_eq!(v["status"]["phase"], "Active");
    let v = get(&f, "/api/v1/namespaces/pb/configmaps/x").await;
    assert_eq!(v["data"], json!({"a": "1", "b": "two"}));
    let v = get(&f, "/api/v1/namespaces/pb/secrets/s").await;
    assert_eq!(v["data"], json!({"user": "YWRtaW4="}));
    assert_eq!(v["type"], "Opaque");
    let v = get(&f, "/api/v1/namespaces/pb/serviceaccounts/robot").await;
    assert_eq!(v["metadata"]["namespace"], "pb");
    let v = get(&f, "/api/v1/namespaces/pb/services/websvc").await;
    assert_eq!(v["spec"]["type"], "ClusterIP");
    assert_eq!(v["spec"]["selector"], json!({"app": "websvc"}));
    assert_eq!(
        v["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}])
    );
    let v = get(&f, "/apis/apps/v1/namespaces/pb/deployments/web").await;
    assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(
        v["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        v["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    let c = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "nginx");
    assert_eq!(c["image"], "nginx");
    assert_eq!(c["ports"], json!([{"containerPort": 80}]));
    let v = get(&f, "/apis/apps/v1/namespaces/pb/deployments/cmd").await;
    assert_eq!(v["spec"]["replicas"], 1);
    let c = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox");
    assert_eq!(c["command"], json!(["sleep", "3600"]));

    // A second create of the same name: kubectl prints the AlreadyExists Status.
    let out = run(&["-n", "pb", "create", "configmap", "x", "--from-literal=a=2"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");

    server.abort();
}
