//! `trireme certs init`: a cluster CA, per replica a peer certificate (serverAuth and
//! clientAuth) and an API serving certificate, an admin client certificate, and a
//! kubeconfig with the CA and the admin credentials embedded. Keys are written 0600;
//! nothing is overwritten without `force`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use trireme_transport::pki;

/// What to issue.
#[derive(Debug, Clone)]
pub struct CertPlan {
    pub out: PathBuf,
    /// (replica name, host or IP it is reached at).
    pub replicas: Vec<(String, String)>,
    /// Extra names or IPs on every API certificate (a load balancer).
    pub api_sans: Vec<String>,
    /// Extra names or IPs on every peer certificate (an address peers dial through,
    /// such as the chaos harness's link proxies).
    pub peer_sans: Vec<String>,
    /// The kubeconfig's server URL.
    pub server: String,
    pub force: bool,
}

/// A file to write: name, contents, private or not.
struct Output {
    name: String,
    bytes: Vec<u8>,
    private: bool,
}

/// Parses `NAME=HOST`.
pub fn parse_replica(s: &str) -> Result<(String, String), String> {
    let (name, host) = s
        .split_once('=')
        .ok_or_else(|| format!("--replica {s:?} must be NAME=HOST"))?;
    if name.is_empty() || host.is_empty() {
        return Err(format!("--replica {s:?} must be NAME=HOST"));
    }
    Ok((name.to_string(), host.to_string()))
}

/// Issues everything in the plan and writes it. Refuses (writing nothing) if a file
/// exists and `force` is off.
pub fn init(plan: &CertPlan) -> anyhow::Result<Vec<PathBuf>> {
    if plan.replicas.is_empty() {
        anyhow::bail!("at least one --replica NAME=HOST is required");
    }
    let mut names = Vec::new();
    names.extend(["ca.crt", "ca.key", "admin.crt", "admin.key", "kubeconfig"].map(String::from));
    for (name, _) in &plan.replicas {
        for suffix in ["peer.crt", "peer.key", "api.crt", "api.key"] {
            names.push(format!("{name}-{suffix}"));
        }
    }
    if !plan.force {
        if let Some(existing) = names.iter().map(|n| plan.out.join(n)).find(|p| p.exists()) {
            anyhow::bail!(
                "{} already exists; use --force to overwrite",
                existing.display()
            );
        }
    }
    let ca = pki::generate_ca("trireme cluster CA")?;
    let mut outputs = vec![
        Output {
            name: "ca.crt".into(),
            bytes: ca.cert_pem().into(),
            private: false,
        },
        Output {
            name: "ca.key".into(),
            bytes: ca.key_pem().into(),
            private: true,
        },
    ];
    for (name, host) in &plan.replicas {
        let mut peer_sans = vec![host.clone()];
        peer_sans.extend(plan.peer_sans.iter().cloned());
        let peer = pki::issue_peer(&ca, name, &peer_sans)?;
        let mut sans = vec![host.clone()];
        sans.extend(plan.api_sans.iter().cloned());
        let api = pki::issue_api_server(&ca, name, &sans)?;
        outputs.push(Output {
            name: format!("{name}-peer.crt"),
            bytes: peer.cert_pem.into(),
            private: false,
        });
        outputs.push(Output {
            name: format!("{name}-peer.key"),
            bytes: peer.key_pem.into(),
            private: true,
        });
        outputs.push(Output {
            name: format!("{name}-api.crt"),
            bytes: api.cert_pem.into(),
            private: false,
        });
        outputs.push(Output {
            name: format!("{name}-api.key"),
            bytes: api.key_pem.into(),
            private: true,
        });
    }
    let admin = pki::issue_client(&ca, "admin", &["system:masters".to_string()])?;
    let kubeconfig = kubeconfig(&plan.server, ca.cert_pem(), &admin.cert_pem, &admin.key_pem);
    outputs.push(Output {
        name: "admin.crt".into(),
        bytes: admin.cert_pem.into(),
        private: false,
    });
    outputs.push(Output {
        name: "admin.key".into(),
        bytes: admin.key_pem.into(),
        private: true,
    });
    outputs.push(Output {
        name: "kubeconfig".into(),
        bytes: kubeconfig.into(),
        private: true,
    });

    std::fs::create_dir_all(&plan.out)?;
    let mut written = Vec::new();
    for o in outputs {
        let path = plan.out.join(&o.name);
        write_file(&path, &o.bytes, o.private)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes a file, 0600 when private, replacing what is there.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let mode = if private { 0o600 } else { 0o644 };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// A kubeconfig for `server` with the CA and the client credentials embedded.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
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
        ca = STANDARD.encode(ca_pem),
        cert = STANDARD.encode(cert_pem),
        key = STANDARD.encode(key_pem),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_writes_every_file_keys_private_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let plan = CertPlan {
            out: dir.path().join("pki"),
            replicas: vec![
                ("replica-1".into(), "127.0.0.1".into()),
                ("replica-2".into(), "127.0.0.1".into()),
            ],
            api_sans: vec!["lb.example".into()],
            peer_sans: vec![],
            server: "https://lb.example:6443".into(),
            force: false,
        };
        let written = init(&plan).unwrap();
        assert_eq!(written.len(), 5 + 8);
        for p in &written {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".key") || name == "kubeconfig" {
                assert_eq!(mode, 0o600, "{name}");
            }
        }
        let before = std::fs::read(plan.out.join("ca.crt")).unwrap();
        let e = init(&plan).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(plan.out.join("ca.crt")).unwrap(), before);
        let forced = CertPlan {
            force: true,
            ..plan.clone()
        };
        init(&forced).unwrap();
        assert_ne!(std::fs::read(plan.out.join("ca.crt")).unwrap(), before);
        let kc = std::fs::read_to_string(plan.out.join("kubeconfig")).unwrap();
        assert!(kc.contains("server: https://lb.example:6443"));
    }

    #[test]
    fn replica_flags_parse() {
        assert_eq!(
            parse_replica("a=1.2.3.4").unwrap(),
            ("a".into(), "1.2.3.4".into())
        );
        assert!(parse_replica("a").is_err());
        assert!(parse_replica("=x").is_err());
    }
}
