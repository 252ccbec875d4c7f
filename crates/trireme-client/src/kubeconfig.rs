//! The kubeconfig subset Trireme writes (`trireme certs init`) and kubectl reads:
//! clusters with `server` and `certificate-authority[-data]`, users with
//! `client-certificate[-data]` and `client-key[-data]`, contexts, `current-context`.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: RawCluster,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: RawUser,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: RawContext,
}

#[derive(Debug, Default, Deserialize)]
struct RawCluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawUser {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawContext {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// What a client needs from a kubeconfig's current context, files already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    /// The cluster's server URL.
    pub server: String,
    /// PEM of the CA that signs the servers' certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate (chain).
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM of the client key.
    pub client_key_pem: Option<Vec<u8>>,
    /// The context's default namespace.
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// Reads and parses the file; relative file references are relative to it.
    pub fn load(path: &Path) -> Result<Kubeconfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Kubeconfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Kubeconfig::parse(&text, &base).map_err(|message| Error::Kubeconfig {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses kubeconfig YAML; `base` is the directory file references are relative to.
    pub fn parse(text: &str, base: &Path) -> Result<Kubeconfig, String> {
        let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let context = match &raw.current_context {
            Some(name) if !name.is_empty() => Some(
                raw.contexts
                    .into_iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| format!("current-context {name:?} is not among the contexts"))?
                    .context,
            ),
            _ => raw.contexts.into_iter().next().map(|c| c.context),
        };
        let (cluster_name, user_name, namespace) = match context {
            Some(c) => (Some(c.cluster), c.user, c.namespace),
            None => (None, None, None),
        };
        let clusters = raw.clusters.into_iter().map(|c| (c.name, c.cluster));
        let cluster = pick(clusters, cluster_name.as_deref(), "cluster")?
            .ok_or_else(|| "no cluster".to_string())?;
        let users = raw.users.into_iter().map(|u| (u.name, u.user));
        let user = pick(users, user_name.as_deref(), "user")?.unwrap_or_default();
        let server = cluster
            .server
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "the cluster has no server".to_string())?;
        Ok(Kubeconfig {
            server: server.trim_end_matches('/').to_string(),
            ca_pem: material(
                cluster.ca_data,
                cluster.ca_file,
                base,
                "certificate-authority",
            )?,
            client_cert_pem: material(user.cert_data, user.cert_file, base, "client-certificate")?,
            client_key_pem: material(user.key_data, user.key_file, base, "client-key")?,
            namespace: namespace.filter(|n| !n.is_empty()),
        })
    }
}

/// The entry called `name`, or the only/first one when no name is given.
fn pick<T>(
    mut items: impl Iterator<Item = (String, T)>,
    name: Option<&str>,
    what: &str,
) -> Result<Option<T>, String> {
    match name {
        Some(n) => items
            .find(|(name, _)| name == n)
            .map(|(_, t)| Some(t))
            .ok_or_else(|| format!("{what} {n:?} is not defined")),
        None => Ok(items.next().map(|(_, t)| t)),
    }
}

/// `*-data` (base64) wins over the file reference.
fn material(
    data: Option<String>,
    file: Option<String>,
    base: &Path,
    field: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        let compact: String = d.split_whitespace().collect();
        return STANDARD
            .decode(compact.as_bytes())
            .map(Some)
            .map_err(|e| format!("{field}-data is not valid base64: {e}"));
    }
    if let Some(f) = file.filter(|f| !f.is_empty()) {
        let p = PathBuf::from(&f);
        let p = if p.is_absolute() { p } else { base.join(p) };
        return std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("{field} {}: {e}", p.display()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The shape `trireme certs init` writes.
    fn generated(server: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: trireme
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: trireme
  context:
    cluster: trireme
    user: admin
current-context: trireme
",
            ca = STANDARD.encode("CA PEM"),
            cert = STANDARD.encode("CERT PEM"),
            key = STANDARD.encode("KEY PEM"),
        )
    }

    #[test]
    fn reads_what_certs_init_writes() {
        let k = Kubeconfig::parse(&generated("https://127.0.0.1:6443/"), Path::new("/")).unwrap();
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.ca_pem.as_deref(), Some(&b"CA PEM"[..]));
        assert_eq!(k.client_cert_pem.as_deref(), Some(&b"CERT PEM"[..]));
        assert_eq!(k.client_key_pem.as_deref(), Some(&b"KEY PEM"[..]));
        assert_eq!(k.namespace, None);
    }

    #[test]
    fn current_context_picks_cluster_user_and_namespace_and_files_are_relative() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "FILE CA").unwrap();
        let text = "
clusters:
- name: a
  cluster: {server: 'https://a:1'}
- name: b
  cluster:
    server: https://b:2
    certificate-authority: ca.crt
users:
- name: u
  user: {client-key-data: S0VZ}
contexts:
- name: ca
  context: {cluster: a}
- name: cb
  context: {cluster: b, user: u, namespace: team}
current-context: cb
";
        let k = Kubeconfig::parse(text, dir.path()).unwrap();
        assert_eq!(k.server, "https://b:2");
        assert_eq!(k.ca_pem.as_deref(), Some(&b"FILE CA"[..]));
        assert_eq!(k.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        assert_eq!(k.client_cert_pem, None);
        assert_eq!(k.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn bad_kubeconfigs_are_errors_not_panics() {
        let e =
            Kubeconfig::parse("current-context: x\ncontexts: []\n", Path::new("/")).unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
        let e = Kubeconfig::parse("clusters: []\n", Path::new("/")).unwrap_err();
        assert!(e.contains("no cluster"), "{e}");
        let e = Kubeconfig::parse(
            &generated("https://x").replace(&STANDARD.encode("CA PEM"), "not*base64"),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("certificate-authority-data"), "{e}");
        assert!(Kubeconfig::parse("[not, a, map", Path::new("/")).is_err());
        let missing = Kubeconfig::load(Path::new("/nonexistent/kubeconfig")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/kubeconfig"));
    }
}
