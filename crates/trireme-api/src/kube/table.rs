//! Server-side `Table`s for `kubectl get`: the columns kube-apiserver prints per kind.

use serde_json::{json, Map, Value};

use super::meta::{age, meta_str};
use super::resources::Resource;

/// True when the client asked for a Table (`Accept: application/json;as=Table;...`).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|a| a.contains("as=Table") && a.contains("g=meta.k8s.io"))
}

fn column(name: &str, kind: &str, format: &str, priority: u8) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

fn columns(res: &Resource) -> Vec<Value> {
    let name = column("Name", "string", "name", 0);
    let age = column("Age", "string", "", 0);
    match res.plural {
        "configmaps" => vec![name, column("Data", "integer", "", 0), age],
        "secrets" => vec![
            name,
            column("Type", "string", "", 0),
            column("Data", "integer", "", 0),
            age,
        ],
        "namespaces" => vec![name, column("Status", "string", "", 0), age],
        "leases" => vec![name, column("Holder", "string", "", 0), age],
        _ => vec![name, age],
    }
}

fn len_of(obj: &Map<String, Value>, field: &str) -> usize {
    obj.get(field)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn cells(res: &Resource, obj: &Map<String, Value>) -> Vec<Value> {
    let name = json!(meta_str(obj, "name").unwrap_or(""));
    let age = json!(meta_str(obj, "creationTimestamp")
        .map(age)
        .unwrap_or_else(|| "<unknown>".into()));
    match res.plural {
        "configmaps" => vec![
            name,
            json!(len_of(obj, "data") + len_of(obj, "binaryData")),
            age,
        ],
        "secrets" => vec![
            name,
            obj.get("type").cloned().unwrap_or(json!("Opaque")),
            json!(len_of(obj, "data")),
            age,
        ],
        "namespaces" => {
            let phase = obj
                .get("status")
                .and_then(|s| s.get("phase"))
                .cloned()
                .unwrap_or(json!("Active"));
            vec![name, phase, age]
        }
        "leases" => {
            let holder = obj
                .get("spec")
                .and_then(|s| s.get("holderIdentity"))
                .cloned()
                .unwrap_or(json!(""));
            vec![name, holder, age]
        }
        _ => vec![name, age],
    }
}

/// A Table of `items`; each row carries the object's metadata as PartialObjectMetadata.
pub fn table(
    res: &Resource,
    items: &[Map<String, Value>],
    resource_version: u64,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            json!({
                "cells": cells(res, obj),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
                }
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}
