//! `trireme dev-cluster`: certificates, configs and N replicas as child processes of
//! this binary, on loopback, in one command. The directory is reused on the next run
//! (same certificates, same data); Ctrl-C or SIGTERM stops every child and waits.
//!
//! Fixed layout (scripts depend on it), with `D` = `--dir` and `P` = `--base-port`:
//! replica i (1-based) serves its API on 127.0.0.1:P+i-1, its peer port on
//! 127.0.0.1:P+100+i-1 and, with `--insecure-http`, plain HTTP on 127.0.0.1:P+200+i-1;
//! `D/replica-i.toml`, `D/kubeconfig`, `D/pki/`, `D/data/replica-i/`, `D/replica-i.log`.
//! Once there is a leader, one `trireme controller` runs too (log `D/controller.log`;
//! started again if it exits, as a supervisor would), unless `--no-controller`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::certs::{self, CertPlan};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct DevClusterArgs {
    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    pub replicas: u16,
    /// Directory for certificates, configs, data and logs (reused on the next run).
    #[arg(long, default_value = "trireme-dev")]
    pub dir: PathBuf,
    /// Replica i serves its API on BASE+i-1 and its peer port on BASE+100+i-1.
    #[arg(long, default_value_t = 6443)]
    pub base_port: u16,
    /// Also serve plain HTTP on BASE+200+i-1 (local benchmarks).
    #[arg(long)]
    pub insecure_http: bool,
    /// Do not run `trireme controller` beside the replicas (benchmarks; or to run
    /// controllers yourself).
    #[arg(long)]
    pub no_controller: bool,
}

pub fn replica_name(i: u16) -> String {
    format!("replica-{i}")
}

/// The config file of replica `i`, paths relative to the dev directory.
pub fn replica_toml(args: &DevClusterArgs, i: u16) -> String {
    let p = args.base_port;
    let initial: Vec<String> = (1..=args.replicas)
        .map(|j| {
            format!(
                "{} = \"https://127.0.0.1:{}\"",
                replica_name(j),
                p + 100 + j - 1
            )
        })
        .collect();
    let name = replica_name(i);
    let insecure = if args.insecure_http {
        format!("insecure_http = \"127.0.0.1:{}\"\n", p + 200 + i - 1)
    } else {
        String::new()
    };
    format!(
        "# Written by `trireme dev-cluster`; run by hand with `trireme replica --config {name}.toml`.
name = \"{name}\"
data_dir = \"data/{name}\"

[cluster]
token = \"trireme-dev\"
initial = {{ {initial} }}

[peer]
listen = \"127.0.0.1:{peer}\"

[api]
listen = \"127.0.0.1:{api}\"
{insecure}
[tls]
ca = \"pki/ca.crt\"
peer_cert = \"pki/{name}-peer.crt\"
peer_key = \"pki/{name}-peer.key\"
api_cert = \"pki/{name}-api.crt\"
api_key = \"pki/{name}-api.key\"
",
        initial = initial.join(", "),
        peer = p + 100 + i - 1,
        api = p + i - 1,
    )
}

/// Certificates (once), configs and kubeconfig (every run).
pub fn prepare(args: &DevClusterArgs) -> anyhow::Result<()> {
    if args.replicas == 0 || args.replicas > 50 {
        bail!("--replicas must be between 1 and 50");
    }
    if u32::from(args.base_port) + 200 + u32::from(args.replicas) > 65535 {
        bail!(
            "--base-port {} leaves no room for {} replicas",
            args.base_port,
            args.replicas
        );
    }
    let pki = args.dir.join("pki");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    if !pki.join("ca.crt").exists() {
        certs::init(&CertPlan {
            out: pki.clone(),
            replicas: (1..=args.replicas)
                .map(|i| (replica_name(i), "127.0.0.1".to_string()))
                .collect(),
            api_sans: vec!["localhost".into()],
            peer_sans: vec![],
            server: format!("https://127.0.0.1:{}", args.base_port),
            force: false,
        })?;
    }
    for i in 1..=args.replicas {
        let cert = pki.join(format!("{}-api.crt", replica_name(i)));
        if !cert.exists() {
            bail!(
                "{} is missing: the directory was made for fewer replicas; remove {} to start afresh",
                cert.display(),
                args.dir.display()
            );
        }
        certs::write_file(
            &args.dir.join(format!("{}.toml", replica_name(i))),
            replica_toml(args, i).as_bytes(),
            false,
        )?;
    }
    let read = |n: &str| {
        std::fs::read_to_string(pki.join(n))
            .with_context(|| format!("read {}", pki.join(n).display()))
    };
    let kubeconfig = certs::kubeconfig(
        &format!("https://127.0.0.1:{}", args.base_port),
        &read("ca.crt")?,
        &read("admin.crt")?,
        &read("admin.key")?,
    );
    certs::write_file(&args.dir.join("kubeconfig"), kubeconfig.as_bytes(), true)?;
    Ok(())
}

struct Replica {
    name: String,
    child: Child,
    log: PathBuf,
}

pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    prepare(&args)?;
    let exe = std::env::current_exe().context("locate the trireme binary")?;
    let mut replicas = Vec::new();
    for i in 1..=args.replicas {
        let name = replica_name(i);
        let mut cmd = Command::new(&exe);
        cmd.arg("replica")
            .arg("--config")
            .arg(args.dir.join(format!("{name}.toml")));
        let log = args.dir.join(format!("{name}.log"));
        replicas.push(spawn_logged(name, cmd, log)?);
    }
    let mut controller = None;
    let result = supervise(&args, &exe, &mut replicas, &mut controller).await;
    // The controller first, while the replicas can still take its Lease release.
    stop_all(controller.as_mut_slice());
    stop_all(&mut replicas);
    result
}

/// Starts `cmd` with its output appended to `log`.
fn spawn_logged(name: String, mut cmd: Command, log: PathBuf) -> anyhow::Result<Replica> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {name}"))?;
    Ok(Replica { name, child, log })
}

/// `trireme controller` against every replica, logging to `D/controller.log`.
fn spawn_controller(
    args: &DevClusterArgs,
    exe: &Path,
    endpoints: &[String],
) -> anyhow::Result<Replica> {
    let mut cmd = Command::new(exe);
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(args.dir.join("kubeconfig"))
        .arg("--endpoints")
        .arg(endpoints.join(","));
    spawn_logged(
        "the controller".into(),
        cmd,
        args.dir.join("controller.log"),
    )
}

/// Starts the controller again if it exited (it exits when it loses its Lease, e.g.
/// while a majority of replicas is down); fails if it could not start at all.
fn keep_controller(
    args: &DevClusterArgs,
    exe: &Path,
    endpoints: &[String],
    controller: &mut Option<Replica>,
) -> anyhow::Result<()> {
    if let Some(c) = controller {
        let Some(status) = c.child.try_wait()? else {
            return Ok(());
        };
        if status.code() == Some(2) {
            // Its configuration (written here) is bad: starting it again would fail
            // the same way, every half second.
            bail!(
                "the controller cannot start ({status}); end of {}:\n{}",
                c.log.display(),
                log_tail(&c.log, 5)
            );
        }
        eprintln!(
            "controller exited ({status}); starting it again (log {})",
            c.log.display()
        );
    }
    *controller = Some(spawn_controller(args, exe, endpoints)?);
    Ok(())
}

async fn supervise(
    args: &DevClusterArgs,
    exe: &Path,
    replicas: &mut [Replica],
    controller: &mut Option<Replica>,
) -> anyhow::Result<()> {
    let client = Client::from_pki(&args.dir.join("pki"))?;
    let endpoints: Vec<String> = (1..=args.replicas)
        .map(|i| format!("https://127.0.0.1:{}", args.base_port + i - 1))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        check_children(replicas)?;
        if let Some(l) = client.find_leader(&endpoints).await {
            break l;
        }
        if Instant::now() > deadline {
            bail!(
                "no leader after 60 s; see the logs in {}",
                args.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "trireme dev cluster: {} replicas, leader {}",
        args.replicas, leader
    );
    for (i, e) in endpoints.iter().enumerate() {
        let extra = if args.insecure_http {
            format!(
                "  (plain HTTP: http://127.0.0.1:{})",
                args.base_port + 200 + i as u16
            )
        } else {
            String::new()
        };
        println!(
            "  {}: API {e}  peer https://127.0.0.1:{}{extra}",
            replica_name(i as u16 + 1),
            args.base_port + 100 + i as u16
        );
    }
    let kubeconfig = args.dir.join("kubeconfig");
    println!("kubeconfig: {}", kubeconfig.display());
    if !args.no_controller {
        keep_controller(args, exe, &endpoints, controller)?;
        println!(
            "controller: trireme controller (garbage collector), log {}",
            args.dir.join("controller.log").display()
        );
    }
    println!("configs, logs and data: {}", args.dir.display());
    let pki = args.dir.join("pki");
    println!("try:");
    println!(
        "  curl --cacert {p}/ca.crt --cert {p}/admin.crt --key {p}/admin.key {e}/v3/kv/put -d '{{\"key\":\"Zm9v\",\"value\":\"YmFy\"}}'",
        p = pki.display(),
        e = endpoints[0]
    );
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={e} --cacert {p}/ca.crt --cert {p}/admin.crt --key {p}/admin.key get foo",
        p = pki.display(),
        e = endpoints.join(",")
    );
    println!(
        "  kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );
    println!("Ctrl-C stops the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                check_children(replicas)?;
                if !args.no_controller {
                    keep_controller(args, exe, &endpoints, controller)?;
                }
            }
        }
    }
}

/// Fails if a replica exited on its own, quoting the end of its log.
fn check_children(replicas: &mut [Replica]) -> anyhow::Result<()> {
    for r in replicas.iter_mut() {
        if let Some(status) = r.child.try_wait()? {
            let tail = log_tail(&r.log, 10);
            bail!(
                "{} exited ({status}); end of {}:\n{tail}",
                r.name,
                r.log.display()
            );
        }
    }
    Ok(())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGTERM to every child we started (by PID), then wait; SIGKILL after 20 s.
fn stop_all(replicas: &mut [Replica]) {
    for r in replicas.iter() {
        if let Ok(pid) = i32::try_from(r.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for r in replicas.iter_mut() {
        loop {
            match r.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("{} did not stop in time; killing it", r.name);
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
