//! The kinds the API serves: one table entry per kind (group, version, kind, plural,
//! short names, scope, where it lives in the store). Adding a kind is one entry.

/// One kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// The store prefix under `/registry/`, as kube-apiserver lays it out.
    pub storage: &'static str,
    /// Defined by a CustomResourceDefinition (schemaless JSON; no strategic merge).
    pub custom: bool,
}

#[allow(clippy::too_many_arguments)] // one table row, read column by column
const fn r(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    storage: &'static str,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        short_names,
        namespaced,
        storage,
        custom: false,
    }
}

#[rustfmt::skip]
pub const RESOURCES: &[Resource] = &[
    //  group, version, kind, plural, singular, short names, namespaced, storage prefix
    r("", "v1", "Namespace", "namespaces", "namespace", &["ns"], false, "namespaces"),
    r("", "v1", "ConfigMap", "configmaps", "configmap", &["cm"], true, "configmaps"),
    r("", "v1", "Secret", "secrets", "secret", &[], true, "secrets"),
    r("", "v1", "Service", "services", "service", &["svc"], true, "services/specs"),
    r("", "v1", "Endpoints", "endpoints", "endpoints", &["ep"], true, "services/endpoints"),
    r("", "v1", "Pod", "pods", "pod", &["po"], true, "pods"),
    r("", "v1", "Node", "nodes", "node", &["no"], false, "minions"),
    r("", "v1", "Event", "events", "event", &["ev"], true, "events"),
    r("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", &["sa"], true, "serviceaccounts"),
    r("coordination.k8s.io", "v1", "Lease", "leases", "lease", &[], true, "leases"),
    r("apps", "v1", "Deployment", "deployments", "deployment", &["deploy"], true, "deployments"),
    r("apps", "v1", "ReplicaSet", "replicasets", "replicaset", &["rs"], true, "replicasets"),
    r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
      "customresourcedefinition", &["crd", "crds"], false, "apiextensions.k8s.io/customresourcedefinitions"),
];

/// The CustomResourceDefinition kind.
pub fn crds() -> &'static Resource {
    &RESOURCES[RESOURCES.len() - 1]
}

/// The namespaces that exist from cluster start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn namespaces() -> &'static Resource {
    &RESOURCES[0]
}

/// Every kind served right now: the built-in table plus the kinds of the stored
/// CustomResourceDefinitions (read from this replica's state at each request, so a
/// new CRD is served as soon as it is applied here).
pub struct Registry {
    pub all: Vec<&'static Resource>,
}

impl Registry {
    pub fn load(store: &trireme_store::KvStore) -> Registry {
        let mut all: Vec<&'static Resource> = RESOURCES.iter().collect();
        let prefix = crds().prefix(None);
        let req = trireme_mvcc::RangeRequest {
            key: prefix.clone().into_bytes(),
            range_end: trireme_mvcc::prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        if let Ok(r) = store.range_local(&req) {
            for kv in r.kvs {
                if let Ok(crd) = serde_json::from_slice::<serde_json::Value>(&kv.value) {
                    all.extend(custom_resources(&crd));
                }
            }
        }
        Registry { all }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.all
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Named groups with their versions (preferred first), in table order.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for r in &self.all {
            if r.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version);
                    }
                }
                None => out.push((r.group, vec![r.version])),
            }
        }
        out
    }
}

/// Interned strings and resources of CRDs: each distinct definition is leaked once
/// (bounded by the number of distinct CRDs ever seen), so that every kind is a
/// `&'static Resource` like the built-in ones.
fn intern(s: &str) -> &'static str {
    static STRINGS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut strings = STRINGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = strings.iter().find(|x| **x == s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    strings.push(leaked);
    leaked
}

fn intern_resource(r: Resource) -> &'static Resource {
    static RESOURCES_SEEN: std::sync::Mutex<Vec<&'static Resource>> =
        std::sync::Mutex::new(Vec::new());
    let mut seen = RESOURCES_SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = seen.iter().find(|x| ***x == r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    seen.push(leaked);
    leaked
}

/// The served versions of one CRD object as resources.
pub fn custom_resources(crd: &serde_json::Value) -> Vec<&'static Resource> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec["names"]["plural"].as_str(),
        spec["names"]["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = spec["names"]["singular"]
        .as_str()
        .unwrap_or(&kind.to_ascii_lowercase())
        .to_string();
    let short: Vec<&'static str> = spec["names"]["shortNames"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).map(intern).collect())
        .unwrap_or_default();
    let short_names: &'static [&'static str] = intern_slice(short);
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let storage = intern(&format!("{group}/{plural}"));
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| {
            intern_resource(Resource {
                group: intern(group),
                version: intern(version),
                kind: intern(kind),
                plural: intern(plural),
                singular: intern(&singular),
                short_names,
                namespaced,
                storage,
                custom: true,
            })
        })
        .collect()
}

fn intern_slice(v: Vec<&'static str>) -> &'static [&'static str] {
    static SLICES: std::sync::Mutex<Vec<&'static [&'static str]>> =
        std::sync::Mutex::new(Vec::new());
    let mut slices = SLICES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = slices.iter().find(|x| **x == v.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(v.into_boxed_slice());
    slices.push(leaked);
    leaked
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/registry/<storage>/<ns>/<name>` or `/registry/<storage>/<name>`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/{name}", self.storage),
            _ => format!("/registry/{}/{name}", self.storage),
        }
    }

    /// The prefix holding every object of this kind (in `namespace` if given).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.storage),
            _ => format!("/registry/{}/", self.storage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kube_apiserver_layout() {
        let cm = &RESOURCES[1];
        assert_eq!(cm.key(Some("ns"), "x"), "/registry/configmaps/ns/x");
        let ns = namespaces();
        assert_eq!(ns.key(None, "x"), "/registry/namespaces/x");
        let svc = &RESOURCES[3];
        assert_eq!(svc.key(Some("a"), "b"), "/registry/services/specs/a/b");
        let node = &RESOURCES[6];
        assert_eq!(node.key(Some("ignored"), "n1"), "/registry/minions/n1");
        let lease = &RESOURCES[9];
        assert_eq!(
            lease.key(Some("kube-system"), "l"),
            "/registry/leases/kube-system/l"
        );
        let crd = serde_json::json!({"spec": {"group": "example.com", "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced", "versions": [{"name": "v1", "served": true}, {"name": "v2", "served": false}]}});
        let custom = custom_resources(&crd);
        assert_eq!(custom.len(), 1);
        assert_eq!(
            custom[0].key(Some("ns"), "w"),
            "/registry/example.com/widgets/ns/w"
        );
        assert_eq!(custom[0].short_names, &["wd"]);
        assert!(custom[0].custom && custom[0].namespaced);
        assert!(
            std::ptr::eq(custom[0], custom_resources(&crd)[0]),
            "interned once"
        );
    }
}
