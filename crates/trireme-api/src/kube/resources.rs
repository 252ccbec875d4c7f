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
    }
}

pub const RESOURCES: &[Resource] = &[
    r(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        &["ns"],
        false,
        "namespaces",
    ),
    r(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        true,
        "configmaps",
    ),
    r(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        &[],
        true,
        "secrets",
    ),
    r(
        "",
        "v1",
        "Service",
        "services",
        "service",
        &["svc"],
        true,
        "services/specs",
    ),
    r(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        &["ep"],
        true,
        "services/endpoints",
    ),
    r("", "v1", "Pod", "pods", "pod", &["po"], true, "pods"),
    r("", "v1", "Node", "nodes", "node", &["no"], false, "minions"),
    r(
        "",
        "v1",
        "Event",
        "events",
        "event",
        &["ev"],
        true,
        "events",
    ),
    r(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        &["sa"],
        true,
        "serviceaccounts",
    ),
    r(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        &[],
        true,
        "leases",
    ),
    r(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        true,
        "deployments",
    ),
    r(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
        "replicasets",
    ),
];

/// The namespaces that exist from cluster start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn namespaces() -> &'static Resource {
    &RESOURCES[0]
}

/// The API groups besides core, each with its one version, in table order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
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
        let cm = find("", "v1", "configmaps").unwrap_or(&RESOURCES[1]);
        assert_eq!(cm.key(Some("ns"), "x"), "/registry/configmaps/ns/x");
        let ns = namespaces();
        assert_eq!(ns.key(None, "x"), "/registry/namespaces/x");
        let svc = find("", "v1", "services").unwrap_or(&RESOURCES[3]);
        assert_eq!(svc.key(Some("a"), "b"), "/registry/services/specs/a/b");
        let node = find("", "v1", "nodes").unwrap_or(&RESOURCES[6]);
        assert_eq!(node.key(Some("ignored"), "n1"), "/registry/minions/n1");
        let lease = find("coordination.k8s.io", "v1", "leases").unwrap_or(&RESOURCES[9]);
        assert_eq!(
            lease.key(Some("kube-system"), "l"),
            "/registry/leases/kube-system/l"
        );
        assert_eq!(
            groups(),
            vec![("coordination.k8s.io", "v1"), ("apps", "v1")]
        );
    }
}
