//! Manifests: YAML or JSON, one or more documents, `kind: List` expanded; and the JSON
//! merge patch (RFC 7386) `apply` uses to tell "unchanged" from "configured".

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Every object in `text`: YAML documents separated by `---`, or a JSON value (or a
/// stream of them). Empty documents are skipped; a `List` (or `*List` with `items`)
/// gives its items.
pub fn parse_manifests(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            docs.push(v.map_err(|e| Error::Manifest(format!("invalid JSON: {e}")))?);
        }
    } else {
        for d in serde_yaml_ng::Deserializer::from_str(text) {
            let v =
                Value::deserialize(d).map_err(|e| Error::Manifest(format!("invalid YAML: {e}")))?;
            docs.push(v);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        expand(d, &mut out)?;
    }
    Ok(out)
}

fn expand(v: Value, out: &mut Vec<Value>) -> Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => items.into_iter().try_for_each(|i| expand(i, out)),
        Value::Object(mut m) => {
            let is_list = m
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.get("items").is_some_and(Value::is_array);
            if is_list {
                if let Some(Value::Array(items)) = m.remove("items") {
                    return items.into_iter().try_for_each(|i| expand(i, out));
                }
            }
            out.push(Value::Object(m));
            Ok(())
        }
        other => Err(Error::Manifest(format!(
            "a manifest must be an object, not {other}"
        ))),
    }
}

/// RFC 7386 merge of `patch` into `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_json_multi_document_and_lists() {
        let y = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {kind: ConfigMap, metadata: {name: b}}\n- {kind: Secret, metadata: {name: c}}\n";
        let docs = parse_manifests(y).unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let j = "{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\"}}\n{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"y\"}}";
        assert_eq!(parse_manifests(j).unwrap().len(), 2);
        assert!(parse_manifests("a: [1, 2").is_err());
        assert!(parse_manifests("- 1\n- 2\n").is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
