//! Real replica processes for system tests: certificates from `trireme certs init`,
//! configs on free loopback ports, processes started and killed by PID, and a small
//! HTTPS client for the etcd-shaped API. Every wait is bounded.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_trireme");

#[path = "../../crates/trireme/src/chaos/ports.rs"]
mod ports;

/// A free port on 127.0.0.1 for a replica started later: below the kernel's ephemeral
/// range and never handed out twice (see `ports`, shared with the chaos harness).
pub fn free_port() -> u16 {
    ports::free_loopback_port().unwrap()
}

pub struct Member {
    pub name: String,
    pub api: String,
    pub api_port: u16,
    pub peer_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub http: reqwest::Client,
}

impl Cluster {
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Certificates, configs for `n` replicas; nothing started.
    pub fn prepare(n: usize) -> Cluster {
        Cluster::prepare_with_joiners(n, n)
    }

    /// Certificates and configs for `n` replicas of which the first `founders` found
    /// the cluster (`cluster.initial` lists only them); the others have `join = true`
    /// (add them with the member API before starting them). Nothing started.
    pub fn prepare_with_joiners(n: usize, founders: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        // The founders' certificates with the CA, the joiners' from that CA later, as
        // an operator adds a replica.
        let mut init = Command::new(BIN);
        init.args(["certs", "init", "--out"]).arg(&pki);
        for i in 1..=founders {
            init.args(["--replica", &format!("replica-{i}=127.0.0.1")]);
        }
        let mut commands = vec![init];
        for i in founders + 1..=n {
            let mut add = Command::new(BIN);
            add.args(["certs", "add", "--dir"]).arg(&pki);
            add.args(["--replica", &format!("replica-{i}=127.0.0.1")]);
            commands.push(add);
        }
        for mut cmd in commands {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .take(founders)
            .enumerate()
            .map(|(i, (_, peer))| format!("replica-{} = \"https://127.0.0.1:{peer}\"", i + 1))
            .collect();
        let mut members = Vec::new();
        for (i, (api_port, peer_port)) in ports.iter().enumerate() {
            let name = format!("replica-{}", i + 1);
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "name = \"{name}\"\ndata_dir = \"data/{name}\"\nzone = \"zone-{zone}\"\n{join}\
                     [cluster]\ntoken = \"system-test\"\ninitial = {{ {initial} }}\n\
                     [peer]\nlisten = \"127.0.0.1:{peer_port}\"\n\
                     [api]\nlisten = \"127.0.0.1:{api_port}\"\nmax_request_bytes = 65536\n\
                     [tls]\nca = \"pki/ca.crt\"\npeer_cert = \"pki/{name}-peer.crt\"\npeer_key = \"pki/{name}-peer.key\"\n\
                     api_cert = \"pki/{name}-api.crt\"\napi_key = \"pki/{name}-api.key\"\n\
                     [raft]\ntick_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 2\n\
                     [log]\nfilter = \"info\"\n",
                    initial = initial.join(", "),
                    zone = i + 1,
                    join = if i >= founders { "join = true\n" } else { "" },
                ),
            )
            .unwrap();
            members.push(Member {
                api: format!("https://127.0.0.1:{api_port}"),
                log: dir.path().join(format!("{name}.log")),
                name,
                api_port: *api_port,
                peer_port: *peer_port,
                config,
                child: None,
            });
        }
        let http = client(&pki);
        Cluster { dir, members, http }
    }

    /// Prepares and starts `n` replicas, and waits for a leader.
    pub async fn start(n: usize) -> Cluster {
        let mut c = Cluster::prepare(n);
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_leader(&(0..n).collect::<Vec<_>>()).await;
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("replica")
            .arg("--config")
            .arg(&m.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        m.child = Some(child);
    }

    /// SIGKILL by PID, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by PID; waits (bounded) and returns the exit code.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut c = self.members[i].child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = wait_child(&mut c, Duration::from_secs(20));
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status.and_then(|s| s.code())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        self.call(i, "/v3/maintenance/status", json!({}))
            .await
            .ok()
            .map(|(_, v)| v)
    }

    /// Waits until every listed replica reports the same non-zero leader; returns
    /// the index of the leader among `members`.
    pub async fn wait_leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for i in among {
                leaders.push(
                    self.status(*i)
                        .await
                        .and_then(|s| s["leader"].as_str().map(String::from)),
                );
            }
            if let Some(Some(l)) = leaders.first() {
                if l != "0" && leaders.iter().all(|x| x.as_deref() == Some(l)) {
                    for i in among {
                        let s = self.status(*i).await.unwrap();
                        if s["header"]["member_id"].as_str() == Some(l) {
                            return *i;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {among:?}: {leaders:?}\n{}",
                self.log(among[0])
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn call(&self, i: usize, path: &str, body: Value) -> reqwest::Result<(u16, Value)> {
        self.call_raw(i, path, body.to_string()).await
    }

    pub async fn call_raw(
        &self,
        i: usize,
        path: &str,
        body: String,
    ) -> reqwest::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.members[i].api))
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Put with retries on 5xx (a leader change); returns the revision.
    pub async fn put(&self, i: usize, key: &str, value: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .call(
                    i,
                    "/v3/kv/put",
                    json!({"key": b64(key), "value": b64(value)}),
                )
                .await
            {
                Ok((200, v)) => return v["header"]["revision"].as_str().unwrap().parse().unwrap(),
                Ok((s, v)) if s >= 500 => eprintln!("put {key} on {i}: {s} {v}"),
                Ok((s, v)) => panic!("put {key} on {i}: {s} {v}"),
                Err(e) => eprintln!("put {key} on {i}: {e}"),
            }
            assert!(Instant::now() < deadline, "put {key} never succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Linearizable get with retries on 5xx: (value, mod_revision) or None.
    pub async fn get(&self, i: usize, key: &str) -> Option<(String, u64)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.call(i, "/v3/kv/range", json!({"key": b64(key)})).await {
                Ok((200, v)) => {
                    return v["kvs"].as_array().and_then(|kvs| kvs.first()).map(|kv| {
                        let value = String::from_utf8(
                            STANDARD.decode(kv["value"].as_str().unwrap_or("")).unwrap(),
                        )
                        .unwrap();
                        (value, kv["mod_revision"].as_str().unwrap().parse().unwrap())
                    })
                }
                Ok((s, v)) if s >= 500 => eprintln!("get {key} on {i}: {s} {v}"),
                Ok((s, v)) => panic!("get {key} on {i}: {s} {v}"),
                Err(e) => eprintln!("get {key} on {i}: {e}"),
            }
            assert!(Instant::now() < deadline, "get {key} never succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Waits up to `limit` for a child to exit; None if it still runs (it is left so).
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end with `stdin` as its input, killed (by PID) and failing the
/// test if it runs longer than `limit`.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&str>,
    limit: Duration,
) -> std::process::Output {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    // Written from a thread, so a child that does not read its input still meets the
    // limit; one that exits first closes the pipe (the write error is its business).
    let mut input = child.stdin.take().unwrap();
    let text = stdin.unwrap_or_default().to_string();
    std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

pub fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

/// An HTTPS client trusting the cluster CA and presenting the admin certificate.
pub fn client(pki: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt")).unwrap()).unwrap();
    let mut id = std::fs::read(pki.join("admin.crt")).unwrap();
    id.extend(std::fs::read(pki.join("admin.key")).unwrap());
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&id).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Cluster {
    /// Adds `lines` (TOML `key = value` lines) to the `[api]` section of replica `i`'s
    /// config; call before `spawn`.
    pub fn add_api_config(&self, i: usize, lines: &str) {
        let path = &self.members[i].config;
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.contains("[api]\n"),
            "no [api] section in {}",
            path.display()
        );
        let lines = lines.trim_end();
        std::fs::write(
            path,
            text.replacen("[api]\n", &format!("[api]\n{lines}\n"), 1),
        )
        .unwrap();
    }
}

impl Cluster {
    /// The peer URL replica `i` listens on.
    pub fn peer_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.members[i].peer_port)
    }

    /// Adds `lines` to the `[raft]` section of replica `i`'s config; call before
    /// `spawn`.
    pub fn add_raft_config(&self, i: usize, lines: &str) {
        let path = &self.members[i].config;
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.contains("[raft]\n"),
            "no [raft] section in {}",
            path.display()
        );
        let lines = lines.trim_end();
        std::fs::write(
            path,
            text.replacen("[raft]\n", &format!("[raft]\n{lines}\n"), 1),
        )
        .unwrap();
    }

    /// Makes replica `i` join an existing cluster (`join = true`) from now on.
    pub fn set_join(&self, i: usize) {
        let path = &self.members[i].config;
        let text = std::fs::read_to_string(path).unwrap();
        if !text.contains("join = true") {
            std::fs::write(path, format!("join = true\n{text}")).unwrap();
        }
    }

    /// Replica `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("data").join(&self.members[i].name)
    }

    /// Waits (bounded) for replica `i`'s process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<i32> {
        let status = wait_child(self.members[i].child.as_mut()?, limit)?;
        self.members[i].child = None;
        status.code()
    }
}
