//! `trireme certs init`: a cluster CA, per replica a peer certificate (serverAuth and
//! clientAuth) and an API serving certificate, an admin client certificate, and a
//! kubeconfig with the CA and the admin credentials embedded. `trireme certs add`:
//! the same replica certificates from an existing CA, for a replica added later.
//! Keys are written 0600; nothing is overwritten without `force`.

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

/// Parses `NAME=HOST`; NAME must be a valid member name (it becomes the peer
/// certificate's CN, which must match the member's name).
pub fn parse_replica(s: &str) -> Result<(String, String), String> {
    let (name, host) = s
        .split_once('=')
        .ok_or_else(|| format!("--replica {s:?} must be NAME=HOST"))?;
    if name.is_empty() || host.is_empty() {
        return Err(format!("--replica {s:?} must be NAME=HOST"));
    }
    trireme_store::check_name(name).map_err(|e| e.to_string())?;
    Ok((name.to_string(), host.to_string()))
}

/// Refuses (before anything is written) when one of `names` exists in `dir` and
/// `force` is off.
fn refuse_existing(dir: &Path, names: &[String], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        anyhow::bail!(
            "{} already exists; use --force to overwrite",
            existing.display()
        );
    }
    Ok(())
}

/// The names of each replica's certificate and key files.
fn replica_files(replicas: &[(String, String)]) -> Vec<String> {
    let mut names = Vec::new();
    for (name, _) in replicas {
        for suffix in ["peer.crt", "peer.key", "api.crt", "api.key"] {
            names.push(format!("{name}-{suffix}"));
        }
    }
    names
}

/// Each replica's peer certificate (its host and `peer_sans`) and API certificate (its
/// host and `api_sans`), issued by `ca`.
fn issue_replicas(
    ca: &pki::Ca,
    replicas: &[(String, String)],
    api_sans: &[String],
    peer_sans: &[String],
) -> anyhow::Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for (name, host) in replicas {
        let mut peer_hosts = vec![host.clone()];
        peer_hosts.extend(peer_sans.iter().cloned());
        let peer = pki::issue_peer(ca, name, &peer_hosts)?;
        let mut sans = vec![host.clone()];
        sans.extend(api_sans.iter().cloned());
        let api = pki::issue_api_server(ca, name, &sans)?;
        for (suffix, bytes, private) in [
            ("peer.crt", peer.cert_pem, false),
            ("peer.key", peer.key_pem, true),
            ("api.crt", api.cert_pem, false),
            ("api.key", api.key_pem, true),
        ] {
            outputs.push(Output {
                name: format!("{name}-{suffix}"),
                bytes: bytes.into(),
                private,
            });
        }
    }
    Ok(outputs)
}

fn write_all(dir: &Path, outputs: Vec<Output>) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for o in outputs {
        let path = dir.join(&o.name);
        write_file(&path, &o.bytes, o.private)?;
        written.push(path);
    }
    Ok(written)
}

/// What `certs add` issues: replica certificates from the CA in `dir`.
#[derive(Debug, Clone)]
pub struct AddPlan {
    /// Holds `ca.crt` and `ca.key`; the new files go there too.
    pub dir: PathBuf,
    pub replicas: Vec<(String, String)>,
    pub api_sans: Vec<String>,
    pub force: bool,
}

/// Issues peer and API certificates for `plan.replicas` from the existing cluster CA.
/// Refuses (writing nothing) if a file exists and `force` is off.
pub fn add(plan: &AddPlan) -> anyhow::Result<Vec<PathBuf>> {
    if plan.replicas.is_empty() {
        anyhow::bail!("at least one --replica NAME=HOST is required");
    }
    let read = |name: &str| {
        let path = plan.dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read the cluster CA's {}: {e}", path.display()))
    };
    let ca = pki::Ca::from_pem(&read("ca.crt")?, &read("ca.key")?)?;
    refuse_existing(&plan.dir, &replica_files(&plan.replicas), plan.force)?;
    let outputs = issue_replicas(&ca, &plan.replicas, &plan.api_sans, &[])?;
    write_all(&plan.dir, outputs)
}

/// Issues everything in the plan and writes it. Refuses (writing nothing) if a file
/// exists and `force` is off.
pub fn init(plan: &CertPlan) -> anyhow::Result<Vec<PathBuf>> {
    if plan.replicas.is_empty() {
        anyhow::bail!("at least one --replica NAME=HOST is required");
    }
    let mut names: Vec<String> = ["ca.crt", "ca.key", "admin.crt", "admin.key", "kubeconfig"]
        .map(String::from)
        .into();
    names.extend(replica_files(&plan.replicas));
    refuse_existing(&plan.out, &names, plan.force)?;
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
    outputs.extend(issue_replicas(
        &ca,
        &plan.replicas,
        &plan.api_sans,
        &plan.peer_sans,
    )?);
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

    write_all(&plan.out, outputs)
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
    fn add_issues_a_new_replica_from_the_existing_ca_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let plan = AddPlan {
            dir: pki.clone(),
            replicas: vec![("replica-4".into(), "10.0.0.4".into())],
            api_sans: vec![],
            force: false,
        };
        let e = format!("{:#}", add(&plan).unwrap_err());
        assert!(
            e.contains("cannot read the cluster CA") && e.contains("ca.crt"),
            "{e}"
        );
        init(&CertPlan {
            out: pki.clone(),
            replicas: vec![("replica-1".into(), "10.0.0.1".into())],
            api_sans: vec![],
            peer_sans: vec![],
            server: "https://10.0.0.1:6443".into(),
            force: false,
        })
        .unwrap();
        let ca_before = std::fs::read(pki.join("ca.crt")).unwrap();
        let written = add(&plan).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, replica_files(&plan.replicas));
        for p in &written {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let private = p.extension().is_some_and(|e| e == "key");
            assert_eq!(mode, if private { 0o600 } else { 0o644 }, "{}", p.display());
        }
        assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca_before);
        // A second run refuses; with --force it issues again.
        let e = add(&plan).unwrap_err().to_string();
        assert!(
            e.contains("replica-4-peer.crt") && e.contains("--force"),
            "{e}"
        );
        add(&AddPlan {
            force: true,
            ..plan.clone()
        })
        .unwrap();
        // Another CA's key is refused before anything is written.
        let other = pki::generate_ca("another CA").unwrap();
        std::fs::write(pki.join("ca.key"), other.key_pem()).unwrap();
        let peer_before = std::fs::read(pki.join("replica-4-peer.crt")).unwrap();
        let e = add(&AddPlan {
            force: true,
            ..plan
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not the key of the CA certificate"), "{e}");
        assert_eq!(
            std::fs::read(pki.join("replica-4-peer.crt")).unwrap(),
            peer_before
        );
    }

    #[test]
    fn replica_flags_parse() {
        assert_eq!(
            parse_replica("a=1.2.3.4").unwrap(),
            ("a".into(), "1.2.3.4".into())
        );
        assert!(parse_replica("a").is_err());
        assert!(parse_replica("=x").is_err());
        let e = parse_replica("Replica_1=1.2.3.4").unwrap_err();
        assert!(e.contains("Replica_1"), "{e}");
    }
}
