//! Replica configuration: a TOML file parsed raw (serde), command-line overrides, then
//! validated into [`ReplicaConfig`]. Every error names the field or the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem: the daemon prints it on one line and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The longest `api.compaction_interval_s`: 30 days.
const MAX_COMPACTION_INTERVAL_S: u64 = 30 * 24 * 3600;

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub zone: Option<String>,
    /// Joins an existing cluster (added with a membership change) instead of founding one.
    #[serde(default)]
    pub join: bool,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub peer: RawListen,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub raft: RawRaft,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Names the cluster; a data directory of another cluster is refused.
    pub token: Option<String>,
    /// Founding members: name = peer URL (`https://host:port`).
    #[serde(default)]
    pub initial: BTreeMap<String, String>,
    /// Where this replica dials some members, whatever the member table says: name =
    /// URL (a proxy, a NAT address).
    #[serde(default)]
    pub dial: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub listen: Option<String>,
    pub advertise: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<String>,
    pub advertise: Option<String>,
    /// A plain-HTTP listener for local benchmarks.
    pub insecure_http: Option<String>,
    pub max_request_bytes: Option<usize>,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Time a client has to send a request's headers (slow clients are closed).
    pub header_read_timeout_ms: Option<u64>,
    /// Open API connections per listener; more are closed at once.
    pub max_connections: Option<usize>,
    /// Seconds between history compactions, kube-apiserver's
    /// `--etcd-compaction-interval` (300 by default; 0 turns them off).
    pub compaction_interval_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: Option<PathBuf>,
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    pub api_cert: Option<PathBuf>,
    pub api_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRaft {
    pub tick_ms: Option<u64>,
    pub election_ticks: Option<usize>,
    pub heartbeat_ticks: Option<usize>,
    pub snapshot_threshold: Option<u64>,
    pub compaction_margin: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `RUST_LOG`-style filter, e.g. `info,trireme_raft=debug`.
    pub filter: Option<String>,
    /// `text` or `json`.
    pub format: Option<String>,
}

/// Command-line flags that override the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Replica name (overrides `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Peer listen address (overrides `peer.listen`).
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// API listen address (overrides `api.listen`).
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Also serve the API over plain HTTP on this address (for local benchmarks).
    #[arg(long)]
    pub insecure_http: Option<String>,
    /// Log filter (overrides `log.filter`; `RUST_LOG` overrides both).
    #[arg(long)]
    pub log_filter: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

impl RawConfig {
    /// Reads `path`; relative paths in it are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config {}: {e}", path.display())))?;
        let mut raw: RawConfig = toml::from_str(&text).map_err(|e| {
            err(format!(
                "invalid config {}: {}",
                path.display(),
                one_line(&e.to_string())
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        raw.rebase(base);
        Ok(raw)
    }

    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(v) = p {
                if v.is_relative() {
                    *v = base.join(&*v);
                }
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.tls.ca);
        fix(&mut self.tls.peer_cert);
        fix(&mut self.tls.peer_key);
        fix(&mut self.tls.api_cert);
        fix(&mut self.tls.api_key);
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.name {
            self.name = Some(v.clone());
        }
        if let Some(v) = &o.data_dir {
            self.data_dir = Some(v.clone());
        }
        if let Some(v) = &o.peer_listen {
            self.peer.listen = Some(v.clone());
        }
        if let Some(v) = &o.api_listen {
            self.api.listen = Some(v.clone());
        }
        if let Some(v) = &o.insecure_http {
            self.api.insecure_http = Some(v.clone());
        }
        if let Some(v) = &o.log_filter {
            self.log.filter = Some(v.clone());
        }
        if let Some(v) = &o.log_format {
            self.log.format = Some(v.clone());
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub zone: Option<String>,
    pub join: bool,
    pub cluster_token: String,
    /// Founding members, name -> peer URL.
    pub initial_cluster: BTreeMap<String, String>,
    /// Dial overrides, name -> peer URL: used instead of the member table's URL.
    pub dial: BTreeMap<String, String>,
    pub peer_listen: SocketAddr,
    pub peer_advertise: String,
    pub api_listen: SocketAddr,
    pub api_advertise: String,
    pub insecure_http: Option<SocketAddr>,
    pub max_request_bytes: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Between history compactions; `None`: never.
    pub compaction_interval: Option<Duration>,
    pub ca: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    pub api_cert: PathBuf,
    pub api_key: PathBuf,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_threshold: u64,
    pub compaction_margin: u64,
    pub request_timeout: Duration,
    pub log_filter: String,
    pub log_format: LogFormat,
}

fn addr(field: &str, v: Option<&String>) -> Result<SocketAddr, ConfigError> {
    let v = v.ok_or_else(|| err(format!("config: `{field}` is required")))?;
    v.parse().map_err(|e| {
        err(format!(
            "config: `{field}` = {v:?} is not an address like 127.0.0.1:6443: {e}"
        ))
    })
}

fn required_path(field: &str, v: &Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    v.clone()
        .ok_or_else(|| err(format!("config: `{field}` is required")))
}

/// `https://host:port` -> checks the shape.
pub fn check_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        err(format!(
            "config: `{field}` = {url:?} must start with https://"
        ))
    })?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| err(format!("config: `{field}` = {url:?} needs a port")))?;
    if host.is_empty() || port.parse::<u16>().is_err() || port == "0" {
        return Err(err(format!(
            "config: `{field}` = {url:?} is not https://host:port"
        )));
    }
    Ok(())
}

/// DNS-1123-like replica names (the member table's rule): they become certificate
/// names and member ids.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    trireme_store::check_name(name).map_err(|_| {
        err(format!(
            "config: `{field}` = {name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
        ))
    })
}

impl RawConfig {
    pub fn validate(self) -> Result<ReplicaConfig, ConfigError> {
        let name = self
            .name
            .clone()
            .ok_or_else(|| err("config: `name` is required"))?;
        check_name("name", &name)?;
        let data_dir = required_path("data_dir", &self.data_dir)?;
        let peer_listen = addr("peer.listen", self.peer.listen.as_ref())?;
        let api_listen = addr("api.listen", self.api.listen.as_ref())?;
        let peer_advertise = self
            .peer
            .advertise
            .clone()
            .unwrap_or_else(|| format!("https://{peer_listen}"));
        check_url("peer.advertise", &peer_advertise)?;
        let api_advertise = self
            .api
            .advertise
            .clone()
            .unwrap_or_else(|| format!("https://{api_listen}"));
        check_url("api.advertise", &api_advertise)?;
        let insecure_http = match &self.api.insecure_http {
            Some(v) => Some(addr("api.insecure_http", Some(v))?),
            None => None,
        };
        if self.cluster.initial.is_empty() && !self.join {
            return Err(err("config: `cluster.initial` must list the founding members (name = \"https://host:port\")"));
        }
        for (n, url) in &self.cluster.initial {
            check_name(&format!("cluster.initial.{n}"), n)?;
            check_url(&format!("cluster.initial.{n}"), url)?;
        }
        for (n, url) in &self.cluster.dial {
            check_name(&format!("cluster.dial.{n}"), n)?;
            check_url(&format!("cluster.dial.{n}"), url)?;
        }
        if !self.join && !self.cluster.initial.contains_key(&name) {
            return Err(err(format!(
                "config: `cluster.initial` does not list this replica {name:?} (set `join = true` to join an existing cluster)"
            )));
        }
        let max_request_bytes = self.api.max_request_bytes.unwrap_or(1536 * 1024);
        if max_request_bytes < 1024 {
            return Err(err("config: `api.max_request_bytes` must be at least 1024"));
        }
        let api_timeout = |field: &str, v: Option<u64>| match v {
            None => Ok(Duration::from_secs(10)),
            Some(ms) if (1..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(err(format!(
                "config: `{field}` = {ms} must be between 1 and 3600000 (milliseconds)"
            ))),
        };
        let tls_handshake_timeout = api_timeout(
            "api.tls_handshake_timeout_ms",
            self.api.tls_handshake_timeout_ms,
        )?;
        let header_read_timeout = api_timeout(
            "api.header_read_timeout_ms",
            self.api.header_read_timeout_ms,
        )?;
        let max_connections = self.api.max_connections.unwrap_or(10_000);
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(err(format!(
                "config: `api.max_connections` = {max_connections} must be between 1 and 1000000"
            )));
        }
        let compaction_interval = match self.api.compaction_interval_s.unwrap_or(300) {
            0 => None,
            s if s <= MAX_COMPACTION_INTERVAL_S => Some(Duration::from_secs(s)),
            s => {
                return Err(err(format!(
                    "config: `api.compaction_interval_s` = {s} must be at most {MAX_COMPACTION_INTERVAL_S} (30 days; 0 turns compaction off)"
                )))
            }
        };
        let tick_ms = self.raft.tick_ms.unwrap_or(100);
        let election_ticks = self.raft.election_ticks.unwrap_or(10);
        let heartbeat_ticks = self.raft.heartbeat_ticks.unwrap_or(1);
        if tick_ms == 0 || heartbeat_ticks == 0 || election_ticks <= heartbeat_ticks {
            return Err(err(
                "config: `raft.tick_ms` and `raft.heartbeat_ticks` must be > 0 and `raft.election_ticks` > `raft.heartbeat_ticks`",
            ));
        }
        let log_format = match self.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(err(format!(
                    "config: `log.format` = {other:?} must be \"text\" or \"json\""
                )))
            }
        };
        Ok(ReplicaConfig {
            ca: required_path("tls.ca", &self.tls.ca)?,
            peer_cert: required_path("tls.peer_cert", &self.tls.peer_cert)?,
            peer_key: required_path("tls.peer_key", &self.tls.peer_key)?,
            api_cert: required_path("tls.api_cert", &self.tls.api_cert)?,
            api_key: required_path("tls.api_key", &self.tls.api_key)?,
            name,
            data_dir,
            zone: self.zone,
            join: self.join,
            cluster_token: self.cluster.token.unwrap_or_else(|| "trireme".into()),
            initial_cluster: self.cluster.initial,
            dial: self.cluster.dial,
            peer_listen,
            peer_advertise,
            api_listen,
            api_advertise,
            insecure_http,
            max_request_bytes,
            tls_handshake_timeout,
            header_read_timeout,
            max_connections,
            compaction_interval,
            tick: Duration::from_millis(tick_ms),
            election_ticks,
            heartbeat_ticks,
            snapshot_threshold: self.raft.snapshot_threshold.unwrap_or(10_000),
            compaction_margin: self.raft.compaction_margin.unwrap_or(5_000),
            request_timeout: Duration::from_millis(self.raft.request_timeout_ms.unwrap_or(5_000)),
            log_filter: self.log.filter.unwrap_or_else(|| "info".into()),
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
name = "replica-1"
data_dir = "data/replica-1"
[cluster]
token = "t"
initial = { replica-1 = "https://127.0.0.1:7001", replica-2 = "https://127.0.0.1:7002" }
[peer]
listen = "127.0.0.1:7001"
[api]
listen = "127.0.0.1:6443"
[tls]
ca = "pki/ca.crt"
peer_cert = "pki/replica-1-peer.crt"
peer_key = "pki/replica-1-peer.key"
api_cert = "pki/replica-1-api.crt"
api_key = "pki/replica-1-api.key"
"#;

    fn parse(text: &str) -> Result<ReplicaConfig, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        raw.rebase(Path::new("/etc/trireme"));
        raw.validate()
    }

    #[test]
    fn a_good_config_resolves_paths_relative_to_the_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/trireme/data/replica-1"));
        assert_eq!(c.ca, PathBuf::from("/etc/trireme/pki/ca.crt"));
        assert_eq!(c.peer_advertise, "https://127.0.0.1:7001");
        assert_eq!(c.max_request_bytes, 1536 * 1024);
        let d = trireme_api::ServeLimits::default();
        assert_eq!(c.tls_handshake_timeout, d.tls_handshake_timeout);
        assert_eq!(c.header_read_timeout, d.header_read_timeout);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.compaction_interval, Some(Duration::from_secs(300)));
    }

    #[test]
    fn the_compaction_interval_is_read_and_checked() {
        let with = |extra: &str| GOOD.replace("[tls]", &format!("{extra}\n[tls]"));
        let c = parse(&with("compaction_interval_s = 60")).unwrap();
        assert_eq!(c.compaction_interval, Some(Duration::from_secs(60)));
        let c = parse(&with("compaction_interval_s = 0")).unwrap();
        assert_eq!(c.compaction_interval, None);
        let e = parse(&with("compaction_interval_s = 100000000"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`api.compaction_interval_s`"), "{e}");
    }

    #[test]
    fn api_limits_are_read_and_checked() {
        let with = |extra: &str| GOOD.replace("[tls]", &format!("{extra}\n[tls]"));
        let c = parse(&with(
            "tls_handshake_timeout_ms = 1000\nheader_read_timeout_ms = 2000\nmax_connections = 100",
        ))
        .unwrap();
        assert_eq!(c.tls_handshake_timeout, Duration::from_millis(1000));
        assert_eq!(c.header_read_timeout, Duration::from_millis(2000));
        assert_eq!(c.max_connections, 100);
        for (extra, want) in [
            (
                "tls_handshake_timeout_ms = 0",
                "`api.tls_handshake_timeout_ms`",
            ),
            ("header_read_timeout_ms = 0", "`api.header_read_timeout_ms`"),
            ("max_connections = 0", "`api.max_connections`"),
            ("max_connections = 100000000", "`api.max_connections`"),
        ] {
            let e = parse(&with(extra)).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("name = \"replica-1\"\n", ""), "`name`"),
            (
                GOOD.replace("listen = \"127.0.0.1:6443\"", "listen = \"nowhere\""),
                "`api.listen`",
            ),
            (
                GOOD.replace("https://127.0.0.1:7002", "http://127.0.0.1:7002"),
                "cluster.initial.replica-2",
            ),
            (
                GOOD.replace("replica-1 = ", "other = "),
                "does not list this replica",
            ),
            (GOOD.replace("ca = \"pki/ca.crt\"\n", ""), "`tls.ca`"),
            (
                format!("{GOOD}\n[raft]\nelection_ticks = 1\n"),
                "raft.election_ticks",
            ),
            (format!("{GOOD}\nbogus = 1\n"), "unknown field"),
            (
                GOOD.replace("name = \"replica-1\"", "name = \"Replica_1\""),
                "`name`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn the_example_configs_in_the_repository_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        for i in 1..=3 {
            let path = root.join(format!("replica-{i}.toml"));
            let c = RawConfig::load(&path).unwrap().validate().unwrap();
            assert_eq!(c.name, format!("replica-{i}"));
            assert_eq!(c.initial_cluster.len(), 3);
            assert!(c.peer_cert.ends_with(format!("pki/replica-{i}-peer.crt")));
        }
    }
}
