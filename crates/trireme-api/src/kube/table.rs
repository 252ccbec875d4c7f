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
    let s = |n: &str| column(n, "string", "", 0);
    let wide = |n: &str| column(n, "string", "", 1);
    match res.plural {
        "configmaps" => vec![name, column("Data", "integer", "", 0), age],
        "secrets" => vec![name, s("Type"), column("Data", "integer", "", 0), age],
        "namespaces" => vec![name, s("Status"), age],
        "leases" => vec![name, s("Holder"), age],
        "pods" => vec![
            name,
            s("Ready"),
            s("Status"),
            column("Restarts", "string", "", 0),
            age,
            wide("IP"),
            wide("Node"),
        ],
        "deployments" => vec![
            name,
            s("Ready"),
            column("Up-to-date", "integer", "", 0),
            column("Available", "integer", "", 0),
            age,
            wide("Containers"),
            wide("Images"),
            wide("Selector"),
        ],
        "replicasets" => vec![
            name,
            column("Desired", "integer", "", 0),
            column("Current", "integer", "", 0),
            column("Ready", "integer", "", 0),
            age,
        ],
        "services" => vec![
            name,
            s("Type"),
            s("Cluster-IP"),
            s("External-IP"),
            s("Port(s)"),
            age,
            wide("Selector"),
        ],
        "endpoints" => vec![name, s("Endpoints"), age],
        "nodes" => vec![name, s("Status"), s("Roles"), age, s("Version")],
        "events" => vec![
            s("Last Seen"),
            s("Type"),
            s("Reason"),
            s("Object"),
            s("Message"),
        ],
        "customresourcedefinitions" => vec![name, column("Created At", "date", "", 0)],
        _ => vec![name, age],
    }
}

fn len_of(obj: &Map<String, Value>, field: &str) -> usize {
    obj.get(field)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn at<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = obj.get(path[0])?;
    for p in &path[1..] {
        v = v.get(p)?;
    }
    Some(v)
}

fn text(obj: &Map<String, Value>, path: &[&str], default: &str) -> Value {
    json!(at(obj, path).and_then(Value::as_str).unwrap_or(default))
}

fn int(obj: &Map<String, Value>, path: &[&str]) -> i64 {
    at(obj, path).and_then(Value::as_i64).unwrap_or(0)
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

fn selector(obj: &Map<String, Value>, path: &[&str]) -> String {
    let labels = at(obj, path).and_then(Value::as_object);
    let pairs: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
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
            text(obj, &["type"], "Opaque"),
            json!(len_of(obj, "data")),
            age,
        ],
        "namespaces" => vec![name, text(obj, &["status", "phase"], "Active"), age],
        "leases" => vec![name, text(obj, &["spec", "holderIdentity"], ""), age],
        "pods" => {
            let statuses = at(obj, &["status", "containerStatuses"]).and_then(Value::as_array);
            let total = at(obj, &["spec", "containers"])
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c["ready"].as_bool() == Some(true))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum()
            });
            vec![
                name,
                json!(format!("{ready}/{total}")),
                text(obj, &["status", "phase"], "Pending"),
                json!(restarts.to_string()),
                age,
                text(obj, &["status", "podIP"], "<none>"),
                text(obj, &["spec", "nodeName"], "<none>"),
            ]
        }
        "deployments" => {
            let containers =
                at(obj, &["spec", "template", "spec", "containers"]).and_then(Value::as_array);
            let names = joined(
                containers
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str()),
            );
            let images = joined(
                containers
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["image"].as_str()),
            );
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, &["status", "readyReplicas"]),
                    at(obj, &["spec", "replicas"])
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(int(obj, &["status", "updatedReplicas"])),
                json!(int(obj, &["status", "availableReplicas"])),
                age,
                json!(names),
                json!(images),
                json!(selector(obj, &["spec", "selector", "matchLabels"])),
            ]
        }
        "replicasets" => vec![
            name,
            json!(int(obj, &["spec", "replicas"])),
            json!(int(obj, &["status", "replicas"])),
            json!(int(obj, &["status", "readyReplicas"])),
            age,
        ],
        "services" => {
            let ports = at(obj, &["spec", "ports"]).and_then(Value::as_array);
            let ports: Vec<String> = ports
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["port"].as_i64().unwrap_or(0),
                        p["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect();
            vec![
                name,
                text(obj, &["spec", "type"], "ClusterIP"),
                text(obj, &["spec", "clusterIP"], "<none>"),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                age,
                json!(selector(obj, &["spec", "selector"])),
            ]
        }
        "endpoints" => {
            let subsets = obj.get("subsets").and_then(Value::as_array);
            let mut eps = Vec::new();
            for s in subsets.into_iter().flatten() {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    for p in s["ports"].as_array().into_iter().flatten() {
                        eps.push(format!(
                            "{}:{}",
                            a["ip"].as_str().unwrap_or(""),
                            p["port"].as_i64().unwrap_or(0)
                        ));
                    }
                }
            }
            vec![
                name,
                json!(if eps.is_empty() {
                    "<none>".to_string()
                } else {
                    eps.join(",")
                }),
                age,
            ]
        }
        "nodes" => {
            let ready = at(obj, &["status", "conditions"])
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            vec![
                name,
                json!(ready),
                json!("<none>"),
                age,
                text(obj, &["status", "nodeInfo", "kubeletVersion"], ""),
            ]
        }
        "events" => {
            let last = at(obj, &["lastTimestamp"])
                .or_else(|| at(obj, &["eventTime"]))
                .and_then(Value::as_str);
            let object = format!(
                "{}/{}",
                at(obj, &["involvedObject", "kind"])
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_lowercase(),
                at(obj, &["involvedObject", "name"])
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            vec![
                json!(last
                    .map(super::meta::age)
                    .unwrap_or_else(|| "<unknown>".into())),
                text(obj, &["type"], ""),
                text(obj, &["reason"], ""),
                json!(object),
                text(obj, &["message"], ""),
            ]
        }
        "customresourcedefinitions" => vec![
            name,
            json!(meta_str(obj, "creationTimestamp").unwrap_or("")),
        ],
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
