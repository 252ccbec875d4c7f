//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`, `/apis/{g}`) and the
//! minimal OpenAPI v2 document kubectl needs before `apply -f`, `create -f`, `replace`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::resources::{Registry, Resource};
use super::status::KubeError;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn api_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
    }))
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(json!({}));
    json!({"name": group, "versions": gvs, "preferredVersion": preferred})
}

pub fn api_groups(registry: &Registry) -> Json<Value> {
    let groups: Vec<Value> = registry
        .groups()
        .into_iter()
        .map(|(g, v)| group_json(g, &v))
        .collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub fn api_group(registry: &Registry, group: &str) -> Result<Json<Value>, KubeError> {
    let (g, v) = registry
        .groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .ok_or_else(KubeError::no_route)?;
    let mut body = group_json(g, &v);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(Json(body))
}

fn resource_json(r: &Resource) -> Value {
    json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "shortNames": r.short_names,
    })
}

/// `/api/v1` (`group` "") or `/apis/{group}/{version}`.
pub fn resource_list(
    registry: &Registry,
    group: &str,
    version: &str,
) -> Result<Json<Value>, KubeError> {
    let resources: Vec<Value> = registry
        .all
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| resource_json(r))
        .collect();
    if resources.is_empty() {
        return Err(KubeError::no_route());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(Json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

/// `Document{swagger: "2.0"}` in protobuf: with no definitions kubectl finds no schema
/// and skips client-side validation. (The `@` spelling must not be used as a response
/// Content-Type: Go's mime parser rejects it.)
pub fn openapi_v2() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )],
        vec![0x0a, 0x03, b'2', b'.', b'0'],
    )
        .into_response()
}
