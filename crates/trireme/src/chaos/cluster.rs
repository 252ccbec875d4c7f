//! The cluster under test: replica processes of this binary, each peer link through
//! a [`proxy`](super::proxy), certificates from `certs init`, and an HTTPS client.
//! Processes are started, stopped, paused and killed by PID, never by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::netns::{self, Network};
use super::ports;
use super::proxy::{self, Link, LinkMode};
use super::workload::Api;
use crate::certs::{self, CertPlan};

pub struct Replica {
    pub name: String,
    pub api: String,
    /// The peer URL the replica listens on (what `member add` is told).
    pub peer_url: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub replicas: Vec<Replica>,
    /// `links[i][j]`: replica i dialing replica j (None on the diagonal).
    pub links: Vec<Vec<Option<Arc<Link>>>>,
    /// `proxy_addr[i][j]`: where replica i dials replica j.
    proxy_addr: Vec<Vec<Option<SocketAddr>>>,
    pub http: reqwest::Client,
    /// The namespaces, when the replicas run in them.
    pub net: Option<Network>,
    /// Replicas whose link is down.
    isolated: Vec<usize>,
    /// Replicas run under Debian's `fiu-run -x`, so `fiu-ctrl` can make their fsyncs fail.
    pub fiu: bool,
    stop: watch::Sender<bool>,
}

/// True when `fiu-run` and `fiu-ctrl` (Debian's fiu-utils) are installed.
pub fn fiu_available() -> bool {
    ["fiu-run", "fiu-ctrl"].into_iter().all(netns::on_path)
}

/// A free loopback address for a replica to bind later (see [`ports`]).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from((
        [127, 0, 0, 1],
        ports::free_loopback_port()?,
    )))
}

/// Where the replicas' sockets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// Namespaces when this machine allows them (root, `ip`, `nft`), else loopback.
    Auto,
    /// Each replica in its own network namespace on a bridge; partitions are nftables
    /// drops, and a replica's link can be set down.
    Netns,
    /// Every replica on 127.0.0.1; partitions are done by the link proxies.
    Loopback,
}

/// Peer and API ports inside a namespace (each namespace has its own port space).
const NETNS_PEER_PORT: u16 = 2380;
const NETNS_API_PORT: u16 = 6443;

impl Cluster {
    /// Certificates, proxies, namespaces (with [`NetMode::Netns`]) and configs for `n`
    /// replicas under `dir`; nothing runs yet.
    pub async fn prepare(dir: &Path, n: usize, mode: NetMode) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let net = match mode {
            NetMode::Loopback => None,
            NetMode::Netns => Some(Network::create(n)?),
            NetMode::Auto => match netns::unavailable() {
                None => Some(Network::create(n)?),
                Some(why) => {
                    println!("chaos: replicas on loopback ({why})");
                    None
                }
            },
        };
        // Replicas listen on their own address in a namespace, or on loopback; the
        // proxies listen where the harness is (the bridge address, or loopback).
        let (proxy_host, replica_hosts): (String, Vec<String>) = match &net {
            Some(net) => (
                net.host_addr().to_string(),
                (0..n).map(|i| net.replica_addr(i).to_string()).collect(),
            ),
            None => ("127.0.0.1".into(), vec!["127.0.0.1".into(); n]),
        };
        let pki = dir.join("pki");
        certs::init(&CertPlan {
            out: pki.clone(),
            replicas: (1..=n)
                .map(|i| (format!("replica-{i}"), replica_hosts[i - 1].clone()))
                .collect(),
            api_sans: vec![],
            // Peers dial each other through the proxies: the dialed address is the
            // proxy's.
            peer_sans: vec![proxy_host.clone()],
            server: format!("https://{}:6443", replica_hosts[0]),
            force: true,
        })?;
        // The proxies bind first and keep their ports; only then are the replicas'
        // ports picked (bound and released), so the OS cannot hand a replica's port to
        // a proxy between the pick and the replica's own bind.
        let mut proxy_listeners: Vec<Vec<Option<tokio::net::TcpListener>>> = Vec::new();
        for _ in 0..n {
            let mut row = Vec::new();
            for _ in 0..n {
                row.push(Some(
                    tokio::net::TcpListener::bind((proxy_host.as_str(), 0)).await?,
                ));
            }
            proxy_listeners.push(row);
        }
        let (peers, apis): (Vec<SocketAddr>, Vec<SocketAddr>) = match &net {
            Some(net) => (0..n)
                .map(|i| {
                    let ip = std::net::IpAddr::V4(net.replica_addr(i));
                    (
                        SocketAddr::new(ip, NETNS_PEER_PORT),
                        SocketAddr::new(ip, NETNS_API_PORT),
                    )
                })
                .unzip(),
            None => (
                (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?,
                (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?,
            ),
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut links = vec![vec![None; n]; n];
        let mut proxy_addr = vec![vec![None; n]; n];
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let Some(listener) = proxy_listeners[i][j].take() else {
                        continue;
                    };
                    let (link, addr) = proxy::start(listener, peers[j], stop_rx.clone())?;
                    links[i][j] = Some(link);
                    proxy_addr[i][j] = Some(addr);
                }
            }
        }
        let mut replicas = Vec::new();
        for i in 0..n {
            let name = format!("replica-{}", i + 1);
            let initial: Vec<String> = (0..n)
                .map(|j| {
                    let addr = if i == j {
                        peers[j]
                    } else {
                        proxy_addr[i][j].unwrap_or(peers[j])
                    };
                    format!("replica-{} = \"https://{addr}\"", j + 1)
                })
                .collect();
            let config = dir.join(format!("{name}.toml"));
            // No periodic compaction: the checker reads the whole history from revision 1.
            let text = format!(
                "name = \"{name}\"\ndata_dir = \"data/{name}\"\n\
                 [cluster]\ntoken = \"chaos\"\ninitial = {{ {initial} }}\ndial = {{ {initial} }}\n\
                 [peer]\nlisten = \"{peer}\"\n\
                 [api]\nlisten = \"{api}\"\ncompaction_interval_s = 0\n\
                 [tls]\nca = \"pki/ca.crt\"\npeer_cert = \"pki/{name}-peer.crt\"\npeer_key = \"pki/{name}-peer.key\"\n\
                 api_cert = \"pki/{name}-api.crt\"\napi_key = \"pki/{name}-api.key\"\n\
                 [raft]\ntick_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 2\nsnapshot_threshold = 2000\ncompaction_margin = 500\nrequest_timeout_ms = 3000\n\
                 [log]\nfilter = \"info\"\n",
                initial = initial.join(", "),
                peer = peers[i],
                api = apis[i],
            );
            certs::write_file(&config, text.as_bytes(), false)?;
            replicas.push(Replica {
                api: format!("https://{}", apis[i]),
                peer_url: format!("https://{}", peers[i]),
                log: dir.join(format!("{name}.log")),
                name,
                config,
                child: None,
                paused: false,
            });
        }
        let http = http_client(&pki)?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            replicas,
            links,
            proxy_addr,
            http,
            fiu: fiu_available(),
            net,
            isolated: Vec::new(),
            stop,
        })
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn start(&mut self, i: usize, exe: &Path) -> anyhow::Result<()> {
        let r = &mut self.replicas[i];
        if r.child.is_some() {
            return Ok(());
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)?;
        // `ip netns exec` and `fiu-run` both exec what follows, so the child's PID is
        // the replica's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(net) = &self.net {
            argv.extend(["ip", "netns", "exec", net.namespace(i)].map(Into::into));
        }
        if self.fiu {
            argv.extend(["fiu-run", "-x"].map(Into::into));
        }
        argv.push(exe.as_os_str().to_owned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let child = cmd
            .arg("replica")
            .arg("--config")
            .arg(&r.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", r.name))?;
        r.child = Some(child);
        r.paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: Signal) {
        if let Some(c) = &self.replicas[i].child {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Makes every fsync of replica `i` fail with EIO from now on (libfiu).
    pub fn fail_fsync(&self, i: usize) -> anyhow::Result<()> {
        let Some(c) = &self.replicas[i].child else {
            bail!("replica {i} is not running")
        };
        let out = Command::new("fiu-ctrl")
            .args(["-c", "enable name=posix/io/sync/fdatasync,failinfo=5"])
            .args(["-c", "enable name=posix/io/sync/fsync,failinfo=5"])
            .arg(c.id().to_string())
            .output()
            .context("run fiu-ctrl")?;
        if !out.status.success() {
            bail!(
                "fiu-ctrl failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The exit status of replica `i` if it has exited (and reaps it).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let r = &mut self.replicas[i];
        let status = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        if let Some(c) = r.child.take() {
            remove_fiu_fifos(c.id());
        }
        Some(status)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, i: usize) {
        if self.replicas[i].paused {
            self.signal(i, Signal::SIGCONT);
        }
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
            remove_fiu_fifos(c.id());
        }
        self.replicas[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
        self.replicas[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        if self.replicas[i].paused {
            self.signal(i, Signal::SIGCONT);
            self.replicas[i].paused = false;
        }
    }

    /// A replica (not in `expected`) that exited on its own: its log's last lines.
    pub fn crashed(&mut self, expected: &[usize]) -> Option<String> {
        for (i, r) in self.replicas.iter_mut().enumerate() {
            if expected.contains(&i) {
                continue;
            }
            if let Some(c) = &mut r.child {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Some(format!(
                        "{} exited ({status}):\n{}",
                        r.name,
                        tail.join("\n")
                    ));
                }
            }
        }
        None
    }

    pub fn set_link(&self, from: usize, to: usize, mode: LinkMode) {
        if let Some(Some(l)) = self.links.get(from).and_then(|row| row.get(to)) {
            l.set(mode);
        }
    }

    /// Cuts both directions between every member of `a` and every member of `b`: with
    /// namespaces, nftables in each replica's namespace drops the packets of the links'
    /// proxy ports (connections stall); on loopback the proxies blackhole the links.
    pub fn cut(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    let port = self.proxy_addr[from][to].map(|p| p.port());
                    match (&mut self.net, port) {
                        (Some(net), Some(port)) => net.block(from, port)?,
                        _ => self.set_link(from, to, LinkMode::Blackhole),
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets replica `i`'s network link down: it loses peers and clients alike. Needs
    /// namespaces.
    pub fn isolate(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(net) = &self.net else {
            bail!("isolating a replica needs network namespaces")
        };
        net.set_link(i, false)?;
        self.isolated.push(i);
        Ok(())
    }

    /// Undoes every network fault: proxies pass, no drop rules, every link up.
    pub fn heal_network(&mut self) -> anyhow::Result<()> {
        self.set_all_links(LinkMode::Pass);
        if let Some(net) = &mut self.net {
            net.unblock_all()?;
            for i in self.isolated.drain(..) {
                net.set_link(i, true)?;
            }
        }
        Ok(())
    }

    pub fn set_all_links(&self, mode: LinkMode) {
        for i in 0..self.len() {
            for j in 0..self.len() {
                self.set_link(i, j, mode);
            }
        }
    }

    /// The endpoints, for clients and watchers.
    pub fn api(&self) -> Api {
        Api {
            http: self.http.clone(),
            endpoints: self.replicas.iter().map(|r| r.api.clone()).collect(),
        }
    }

    pub async fn call(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.api().call(i, path, body, timeout).await
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        match self
            .call(
                i,
                "/v3/maintenance/status",
                &json!({}),
                Duration::from_secs(2),
            )
            .await
        {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Index of the replica every running replica agrees is the leader.
    pub async fn leader(&self) -> Option<usize> {
        let mut leader = None;
        for i in 0..self.len() {
            let s = self.status(i).await?;
            let l = s["leader"].as_str()?.to_string();
            if l == "0" || leader.as_ref().is_some_and(|x: &String| *x != l) {
                return None;
            }
            leader = Some(l);
        }
        let leader = leader?;
        for i in 0..self.len() {
            if self.status(i).await?["header"]["member_id"].as_str() == Some(leader.as_str()) {
                return Some(i);
            }
        }
        None
    }

    /// True when the replica answers `/readyz` with 200 (knows a leader, applied what it
    /// knows to be committed).
    pub async fn ready(&self, i: usize) -> bool {
        let url = format!("{}/readyz", self.replicas[i].api);
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().as_u16() == 200)
    }

    /// Waits until all replicas agree on a leader and are ready; with `quiescent`
    /// (no writes in flight) also until they have applied the same index.
    pub async fn wait_settled(&self, limit: Duration, quiescent: bool) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.leader().await {
                let mut ok = true;
                for i in 0..self.len() {
                    ok &= self.ready(i).await;
                }
                if ok && quiescent {
                    let mut applied = Vec::new();
                    for i in 0..self.len() {
                        applied.push(
                            self.status(i)
                                .await
                                .and_then(|s| s["raftAppliedIndex"].as_str().map(String::from)),
                        );
                    }
                    ok = applied.iter().all(|a| a.is_some() && *a == applied[0]);
                }
                if ok {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                let mut states = Vec::new();
                for i in 0..self.len() {
                    let s = self.status(i).await;
                    states.push(format!(
                        "replica-{}: leader {} applied {} ready {}",
                        i + 1,
                        s.as_ref()
                            .and_then(|s| s["leader"].as_str().map(String::from))
                            .unwrap_or("?".into()),
                        s.as_ref()
                            .and_then(|s| s["raftAppliedIndex"].as_str().map(String::from))
                            .unwrap_or("?".into()),
                        self.ready(i).await
                    ));
                }
                bail!(
                    "the cluster did not settle within {limit:?}: {}",
                    states.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a membership request (`/v3/cluster/member/*`) on any running replica but
    /// `except`, until one answers 200 or `limit` passes; returns the answer.
    async fn member_call(
        &self,
        path: &str,
        body: &Value,
        except: usize,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no replica to ask");
        loop {
            for i in 0..self.len() {
                let r = &self.replicas[i];
                if i == except || r.child.is_none() || r.paused {
                    continue;
                }
                match self.call(i, path, body, Duration::from_secs(5)).await {
                    Ok((200, v)) => return Ok(v),
                    Ok((code, v)) => last = format!("HTTP {code}: {v}"),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                bail!("{path}: no success within {limit:?}; last answer: {last}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Replica `i` as the member list shows it: (ID, is learner), or `None` when it is
    /// not a member.
    pub async fn member(&self, i: usize, except: usize) -> anyhow::Result<Option<(String, bool)>> {
        let v = self
            .member_call(
                "/v3/cluster/member/list",
                &json!({}),
                except,
                Duration::from_secs(30),
            )
            .await?;
        let name = &self.replicas[i].name;
        let found = v["members"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m["name"].as_str() == Some(name.as_str()))
        });
        Ok(found.map(|m| {
            let id = match &m["ID"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, m["isLearner"].as_bool().unwrap_or(false))
        }))
    }

    /// Removes replica `i` (already killed) from the cluster, wipes its data directory
    /// and adds it back as a learner under the same name; it is started with
    /// `join = true` and catches up from the leader (by snapshot if the log was
    /// compacted past it). Every step is checked against the member list before it is
    /// (re)tried, so a request that timed out but took effect is not repeated.
    pub async fn replace_member(&mut self, i: usize, exe: &Path) -> anyhow::Result<()> {
        let limit = Duration::from_secs(30);
        let deadline = Instant::now() + limit;
        while let Some((id, _)) = self.member(i, i).await? {
            if Instant::now() > deadline {
                bail!(
                    "{} is still a member after {limit:?}",
                    self.replicas[i].name
                );
            }
            let body = json!({ "ID": id });
            if let Err(e) = self
                .member_call(
                    "/v3/cluster/member/remove",
                    &body,
                    i,
                    Duration::from_secs(5),
                )
                .await
            {
                tracing::debug!("member remove: {e:#}");
            }
        }
        let data = self.dir.join("data").join(&self.replicas[i].name);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("wipe {}", data.display())),
        }
        let deadline = Instant::now() + limit;
        while self.member(i, i).await?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "{} was not added back within {limit:?}",
                    self.replicas[i].name
                );
            }
            let body = json!({
                "name": self.replicas[i].name,
                "peerURLs": [self.replicas[i].peer_url],
                "isLearner": true,
            });
            if let Err(e) = self
                .member_call("/v3/cluster/member/add", &body, i, Duration::from_secs(5))
                .await
            {
                tracing::debug!("member add: {e:#}");
            }
        }
        let config = std::fs::read_to_string(&self.replicas[i].config)?;
        if !config.starts_with("join = true\n") {
            std::fs::write(&self.replicas[i].config, format!("join = true\n{config}"))?;
        }
        self.start(i, exe)
    }

    /// Promotes replica `i` (a learner) once it has caught up, retrying while the
    /// leader says it is not in sync yet.
    pub async fn promote_member(&self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.member(i, i).await? {
                Some((_, false)) => return Ok(()),
                Some((id, true)) => {
                    let body = json!({ "ID": id });
                    if let Err(e) = self
                        .member_call(
                            "/v3/cluster/member/promote",
                            &body,
                            i,
                            Duration::from_secs(2),
                        )
                        .await
                    {
                        tracing::debug!("member promote: {e:#}");
                    }
                }
                None => bail!(
                    "{} is not a member: nothing to promote",
                    self.replicas[i].name
                ),
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not promoted within {limit:?}",
                    self.replicas[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills every process we started, stops the proxies and removes the namespaces.
    pub fn shutdown(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        let _ = self.stop.send(true);
        self.net = None;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `fiu-run -x` leaves its control FIFOs behind in the temp dir.
fn remove_fiu_fifos(pid: u32) {
    for suffix in ["in", "out"] {
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("fiu-ctrl-{pid}.{suffix}")));
    }
}

pub fn http_client(pki: &Path) -> anyhow::Result<reqwest::Client> {
    let read = |n: &str| {
        std::fs::read(pki.join(n)).with_context(|| format!("read {}", pki.join(n).display()))
    };
    let ca = reqwest::Certificate::from_pem(&read("ca.crt")?)?;
    let mut id = read("admin.crt")?;
    id.extend(read("admin.key")?);
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&id)?)
        .pool_max_idle_per_host(16)
        .connect_timeout(Duration::from_secs(1))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ports_are_distinct_and_outside_the_ephemeral_range() {
        let low = ports::ephemeral_low();
        let mut seen = Vec::new();
        for _ in 0..50 {
            let port = free_addr().expect("a free port").port();
            assert!(!seen.contains(&port), "port {port} handed out twice");
            if low > 21_000 {
                assert!(
                    port < low,
                    "port {port} inside the ephemeral range from {low}"
                );
            }
            seen.push(port);
        }
    }
}
