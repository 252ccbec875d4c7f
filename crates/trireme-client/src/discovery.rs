//! Resource discovery: the `APIResourceList`s of `/api/v1` and `/apis/{g}/{v}`, and
//! resolving what a user types (`cm`, `configmap`, `configmaps`, `ConfigMap`,
//! `leases.coordination.k8s.io`) or what a manifest says (`apiVersion` + `kind`).

use serde_json::Value;

use crate::error::{Error, Result};

/// One kind of object the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResource {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
}

impl ApiResource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The path of the collection (`ns` None: across all namespaces) or of one object.
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            p.push_str("/namespaces/");
            p.push_str(&encode_segment(ns));
        }
        p.push('/');
        p.push_str(&self.plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(&encode_segment(n));
        }
        p
    }

    /// How `kubectl get -o name` names an object: `configmap/x`, `lease.coordination.k8s.io/x`.
    pub fn object_name(&self, name: &str) -> String {
        let kind = self.kind.to_ascii_lowercase();
        if self.group.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}.{}/{name}", self.group)
        }
    }
}

/// Percent-encodes one path segment (names are DNS-1123, but never trust input).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Everything discovery listed, core group first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub resources: Vec<ApiResource>,
}

impl Discovery {
    /// Builds from `APIResourceList` documents (`/api/v1` first, then each group's
    /// preferred version). Subresources (`pods/status`) are skipped.
    pub fn from_lists<'a>(lists: impl IntoIterator<Item = &'a Value>) -> Result<Discovery> {
        let mut resources = Vec::new();
        for list in lists {
            let gv = list
                .get("groupVersion")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Decode {
                    endpoint: "discovery".into(),
                    message: "an APIResourceList without groupVersion".into(),
                })?;
            let (group, version) = match gv.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", gv),
            };
            let items = list
                .get("resources")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for r in items {
                let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                let plural = s("name");
                let kind = s("kind");
                if plural.is_empty() || plural.contains('/') || kind.is_empty() {
                    continue;
                }
                let mut singular = s("singularName");
                if singular.is_empty() {
                    singular = kind.to_ascii_lowercase();
                }
                resources.push(ApiResource {
                    group: group.to_string(),
                    version: version.to_string(),
                    kind,
                    plural,
                    singular,
                    short_names: r
                        .get("shortNames")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                    namespaced: r
                        .get("namespaced")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
        }
        Ok(Discovery { resources })
    }

    /// What a user typed: plural, singular, short name or kind (any case), optionally
    /// qualified by group (`leases.coordination.k8s.io`) or group and version
    /// (`leases.v1.coordination.k8s.io`). The core group wins a tie, as in kubectl.
    pub fn resolve(&self, input: &str) -> Result<&ApiResource> {
        let lower = input.to_ascii_lowercase();
        let names = |r: &ApiResource, n: &str| {
            r.plural == n
                || r.singular == n
                || r.kind.to_ascii_lowercase() == n
                || r.short_names.iter().any(|s| s == n)
        };
        if let Some(r) = self.resources.iter().find(|r| names(r, &lower)) {
            return Ok(r);
        }
        if let Some((name, rest)) = lower.split_once('.') {
            let found = self.resources.iter().find(|r| {
                names(r, name) && (r.group == rest || format!("{}.{}", r.version, r.group) == rest)
            });
            if let Some(r) = found {
                return Ok(r);
            }
        }
        Err(Error::UnknownResource(input.to_string()))
    }

    /// What a manifest names: `apiVersion` (`v1`, `apps/v1`) and `kind`.
    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Result<&ApiResource> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .ok_or_else(|| {
                Error::UnknownResource(if api_version.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind} in {api_version}")
                })
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    /// Trimmed copies of what a replica answers at `/api/v1` and
    /// `/apis/coordination.k8s.io/v1`.
    fn canned() -> Discovery {
        let core = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get"], "shortNames": ["ns"]},
            {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["get"], "shortNames": ["cm"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get"], "shortNames": ["po"]},
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
        ]});
        let coord = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1", "resources": [
            {"name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease", "verbs": ["get"], "shortNames": []},
        ]});
        Discovery::from_lists([&core, &coord]).unwrap()
    }

    #[test]
    fn every_spelling_of_a_resource_resolves() {
        let d = canned();
        assert_eq!(d.resources.len(), 4, "subresources are skipped");
        for input in ["cm", "configmap", "configmaps", "ConfigMap", "CONFIGMAPS"] {
            let r = d.resolve(input).unwrap();
            assert_eq!(
                (r.group.as_str(), r.plural.as_str()),
                ("", "configmaps"),
                "{input}"
            );
            assert!(r.namespaced);
        }
        let lease = d.resolve("leases.coordination.k8s.io").unwrap();
        assert_eq!(lease.api_version(), "coordination.k8s.io/v1");
        assert_eq!(d.resolve("lease.v1.coordination.k8s.io").unwrap(), lease);
        assert_eq!(d.resolve("Lease").unwrap(), lease);
        assert!(!d.resolve("ns").unwrap().namespaced);
        let e = d.resolve("frobs").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server doesn't have a resource type \"frobs\""
        );
    }

    #[test]
    fn manifests_resolve_by_api_version_and_kind() {
        let d = canned();
        assert_eq!(
            d.resolve_kind("v1", "ConfigMap").unwrap().plural,
            "configmaps"
        );
        assert_eq!(
            d.resolve_kind("coordination.k8s.io/v1", "Lease")
                .unwrap()
                .plural,
            "leases"
        );
        assert!(d.resolve_kind("v2", "ConfigMap").is_err());
        assert!(d.resolve_kind("apps/v1", "Lease").is_err());
    }

    #[test]
    fn paths_and_names() {
        let d = canned();
        let cm = d.resolve("cm").unwrap();
        assert_eq!(
            cm.path(Some("demo"), Some("x")),
            "/api/v1/namespaces/demo/configmaps/x"
        );
        assert_eq!(cm.path(None, None), "/api/v1/configmaps");
        assert_eq!(
            cm.path(Some("a b"), Some("x/y")),
            "/api/v1/namespaces/a%20b/configmaps/x%2Fy"
        );
        let ns = d.resolve("ns").unwrap();
        assert_eq!(
            ns.path(Some("ignored"), Some("demo")),
            "/api/v1/namespaces/demo"
        );
        let lease = d.resolve("lease").unwrap();
        assert_eq!(
            lease.path(Some("kube-system"), None),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
        );
        assert_eq!(lease.object_name("l"), "lease.coordination.k8s.io/l");
        assert_eq!(cm.object_name("x"), "configmap/x");
    }
}
