//! The cluster under test: replica processes of this binary, each peer link through
//! a [`proxy`](super::proxy), certificates from `certs init`, and an HTTPS client.
//! Processes are started, stopped, paused and killed by PID, never by name.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::proxy::{self, Link, LinkMode};
use super::workload::Api;
use crate::certs::{self, CertPlan};

pub struct Replica {
    pub name: String,
    pub api: String,
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
    pub http: reqwest::Client,
    /// Replicas run under Debian's `fiu-run -x`, so `fiu-ctrl` can make their fsyncs fail.
    pub fiu: bool,
    stop: watch::Sender<bool>,
}

/// True when `fiu-run` and `fiu-ctrl` (Debian's fiu-utils) are installed.
pub fn fiu_available() -> bool {
    ["fiu-run", "fiu-ctrl"].iter().all(|c| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(c).is_file()))
            .unwrap_or(false)
    })
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Cluster {
    /// Certificates, proxies and configs for `n` replicas under `dir`; nothing runs yet.
    pub async fn prepare(dir: &Path, n: usize, exe: &Path) -> anyhow::Result<Cluster> {
        let _ = exe;
        std::fs::create_dir_all(dir)?;
        let pki = dir.join("pki");
        if !pki.join("ca.crt").exists() {
            certs::init(&CertPlan {
                out: pki.clone(),
                replicas: (1..=n)
                    .map(|i| (format!("replica-{i}"), "127.0.0.1".to_string()))
                    .collect(),
                api_sans: vec![],
                server: "https://127.0.0.1:6443".into(),
                force: false,
            })?;
        }
        // The proxies bind first and keep their ports; only then are the replicas'
        // ports picked (bound and released), so the OS cannot hand a replica's port to
        // a proxy between the pick and the replica's own bind.
        let mut proxy_listeners: Vec<Vec<Option<tokio::net::TcpListener>>> = Vec::new();
        for _ in 0..n {
            let mut row = Vec::new();
            for _ in 0..n {
                row.push(Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?));
            }
            proxy_listeners.push(row);
        }
        let peers: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?;
        let apis: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?;
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
            let text = format!(
                "name = \"{name}\"\ndata_dir = \"data/{name}\"\n\
                 [cluster]\ntoken = \"chaos\"\ninitial = {{ {initial} }}\n\
                 [peer]\nlisten = \"{peer}\"\n\
                 [api]\nlisten = \"{api}\"\n\
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
            http,
            fiu: fiu_available(),
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
        let mut cmd = if self.fiu {
            let mut c = Command::new("fiu-run");
            c.arg("-x").arg(exe);
            c
        } else {
            Command::new(exe)
        };
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

    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn cut(&self, a: &[usize], b: &[usize]) {
        for x in a {
            for y in b {
                self.set_link(*x, *y, LinkMode::Blackhole);
                self.set_link(*y, *x, LinkMode::Blackhole);
            }
        }
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

    /// Kills every process we started and stops the proxies.
    pub fn shutdown(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        let _ = self.stop.send(true);
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
