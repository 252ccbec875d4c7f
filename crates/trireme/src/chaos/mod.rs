//! `trireme chaos`: a real cluster of replica processes under faults, with recorded
//! client traffic and watches, judged by `trireme-check` at the end.
//!
//! Layout: `cluster` (processes, proxies, client), `proxy` (per-link TCP proxy),
//! `workload` (clients, watchers, the recorder), `nemesis` (faults and heals), `ports`
//! (free loopback ports, shared with the process tests).
//! Every cycle and every wait is bounded; on success, failure or Ctrl-C the processes
//! it started are killed by PID and the proxies stop.

mod cluster;
mod nemesis;
mod netns;
mod ports;
mod proxy;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use trireme_check::{
    check_convergence, check_lost_writes, check_per_key, check_revisions, check_watch, Budget,
    CheckResult, History, KeyRange, ReplicaState, Summary, WatchEnd, WatchRecord,
};

use cluster::Cluster;
pub use cluster::NetMode;
pub use nemesis::Nemesis;
use workload::{Recorder, WatchLog, KEY_PREFIX, KEY_RANGE_END};

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Nemesis cycles to run (ignored when --duration is given).
    #[arg(long, default_value_t = 10)]
    pub cycles: u32,
    /// Run cycles for this long instead (e.g. 90s, 30m, 1h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Faults to draw from: kill, kill-leader, pause, pause-leader, partition-leader,
    /// split, bridge, isolate, delay, drop, blackhole, snapshot, fsync, member-replace;
    /// groups partition, netem, all. Each is used once per round (shuffled); every
    /// third cycle combines two.
    #[arg(long, default_value = "all", value_parser = parse_nemeses)]
    pub nemesis: NemesisList,
    /// Seed for the choice of faults, victims and operations.
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Clients pinned to each replica (two more roam over all replicas).
    #[arg(long, default_value_t = 2)]
    pub clients_per_replica: usize,
    /// Keys the workload touches.
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Working directory (certificates, data, logs, reports); default: a new
    /// directory under the system temp dir, removed after a clean run.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory even after a clean run.
    #[arg(long)]
    pub keep: bool,
    /// Where replicas run: each in its own network namespace on a bridge (needs root,
    /// iproute2 and nftables), on loopback, or namespaces when possible.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    pub net: NetMode,
}

/// The faults a run draws from.
#[derive(Debug, Clone)]
pub struct NemesisList(pub Vec<Nemesis>);

fn parse_nemeses(s: &str) -> Result<NemesisList, String> {
    Nemesis::parse_list(s).map(NemesisList)
}

/// `500ms`, `90s`, `30m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let scale = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("invalid duration {s:?}: use ms, s, m or h")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// The outcome of a run.
pub struct Report {
    pub cycles: u32,
    pub summary: Summary,
    pub dir: PathBuf,
}

impl Report {
    pub fn line(&self) -> String {
        format!("cycles {}, {}", self.cycles, self.summary)
    }
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
    if args.replicas < 3 {
        bail!("--replicas must be at least 3");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("trireme-chaos-{}-{seed}", std::process::id())),
    };
    let exe = std::env::current_exe().context("locate the trireme binary")?;
    println!(
        "chaos: seed {seed}, {} replicas, dir {}",
        args.replicas,
        dir.display()
    );
    let mut c = Cluster::prepare(&dir, args.replicas, args.net).await?;
    let mut args = args;
    if let Some(net) = &c.net {
        println!(
            "chaos: replicas in network namespaces {}..{} on 10.77.x.0/24 (harness at {})",
            net.namespace(0),
            net.namespace(c.len() - 1),
            net.host_addr()
        );
    }
    if args.nemesis.0.contains(&Nemesis::Isolate) && c.net.is_none() {
        args.nemesis.0.retain(|n| *n != Nemesis::Isolate);
        if args.nemesis.0.is_empty() {
            bail!("the isolate nemesis needs network namespaces (root, iproute2, nftables)");
        }
        println!("isolate nemesis skipped: no network namespaces");
    }
    if args.nemesis.0.contains(&Nemesis::FsyncFailure) && !c.fiu {
        args.nemesis.0.retain(|n| *n != Nemesis::FsyncFailure);
        if args.nemesis.0.is_empty() {
            bail!("the fsync nemesis needs fiu-run and fiu-ctrl (Debian's fiu-utils)");
        }
        println!("fsync nemesis skipped: fiu-run and fiu-ctrl are not installed");
    }
    for i in 0..c.len() {
        c.start(i, &exe)?;
    }
    let result = tokio::select! {
        r = drive(&args, seed, &mut c, &exe) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    c.shutdown();
    drop(c);
    let report = result?;
    if report.summary.is_clean() && !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

async fn drive(
    args: &ChaosArgs,
    seed: u64,
    c: &mut Cluster,
    exe: &std::path::Path,
) -> anyhow::Result<Report> {
    let mut rng = StdRng::seed_from_u64(seed);
    c.wait_settled(Duration::from_secs(60), true).await?;
    let api = c.api();
    let rec = Recorder::new();
    let (stop_tx, stop) = watch::channel(false);
    let keys: Vec<String> = (0..args.keys).map(|i| format!("{KEY_PREFIX}{i}")).collect();
    let mut clients = Vec::new();
    let pinned = c.len() * args.clients_per_replica;
    for id in 0..pinned + 2 {
        let home = (id < pinned).then(|| id % c.len());
        clients.push(tokio::spawn(workload::client(
            api.clone(),
            id as u64,
            home,
            keys.clone(),
            Arc::clone(&rec),
            rng.gen(),
            stop.clone(),
        )));
    }
    let (watch_stop_tx, watch_stop) = watch::channel(false);
    let mut watchers = Vec::new();
    for i in 0..c.len() {
        let log = Arc::new(Mutex::new(WatchLog::default()));
        watchers.push((
            Arc::clone(&log),
            tokio::spawn(workload::watcher(api.clone(), i, log, watch_stop.clone())),
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let mut cycles = 0u32;
    let mut schedule = nemesis::Schedule::new(args.nemesis.0.clone());
    loop {
        let more = match args.duration {
            Some(d) => started.elapsed() < d,
            None => cycles < args.cycles,
        };
        if !more {
            break;
        }
        cycles += 1;
        let faults = schedule.next(&mut rng);
        let name = nemesis::names(&faults);
        let leader = tokio::time::timeout(Duration::from_secs(3), c.leader())
            .await
            .ok()
            .flatten();
        let injected = nemesis::inject_all(c, &faults, leader, &mut rng, exe)
            .await
            .with_context(|| format!("cycle {cycles} ({name}): injecting"))?;
        let hold = faults.iter().map(|n| n.hold()).max().unwrap_or_default();
        let hold_until = Instant::now() + hold;
        while Instant::now() < hold_until {
            if let Some(crash) = c.crashed(&injected.fsync_failed) {
                bail!("cycle {cycles} ({name}): a replica crashed: {crash}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for v in &injected.fsync_failed {
            // Fail-stop: the replica whose fsync failed must be gone, with an error.
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(s) = c.exited(*v) {
                    break s;
                }
                if Instant::now() > deadline {
                    bail!(
                        "cycle {cycles} (fsync): replica {} kept running after its fsync failed",
                        v + 1
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if status.success() {
                bail!(
                    "cycle {cycles} (fsync): replica {} exited 0 after its fsync failed",
                    v + 1
                );
            }
        }
        nemesis::heal(c, &injected, exe)
            .await
            .with_context(|| format!("cycle {cycles} ({name}): healing"))?;
        c.wait_settled(Duration::from_secs(60), false)
            .await
            .with_context(|| format!("cycle {cycles} ({name}): after the heal"))?;
        if let Some(crash) = c.crashed(&[]) {
            bail!("cycle {cycles} ({name}): a replica crashed: {crash}");
        }
        println!(
            "cycle {cycles}: {name:<24} healed; {} operations recorded",
            rec.count()
        );
    }

    let _ = stop_tx.send(true);
    for t in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let leader = c.wait_settled(Duration::from_secs(60), true).await?;
    let status = c.status(leader).await.context("leader status")?;
    let final_revision: u64 = status["header"]["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);

    // The final state of every key, read linearizably after the heal.
    let mut final_state = BTreeMap::new();
    for k in &keys {
        let body = json!({"key": base64_encode(k)});
        let mut value = None;
        for _ in 0..50 {
            if let Ok((200, v)) = c
                .call(leader, "/v3/kv/range", &body, Duration::from_secs(3))
                .await
            {
                value = Some(v["kvs"].as_array().and_then(|kvs| kvs.first()).map(|kv| {
                    (
                        String::from_utf8_lossy(&base64_decode(kv["value"].as_str().unwrap_or("")))
                            .into_owned(),
                        kv["mod_revision"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                    )
                }));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        final_state.insert(
            k.clone(),
            value.with_context(|| format!("final read of {k}"))?,
        );
    }

    // Watchers: wait until each has caught up through the final revision.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let behind = watchers.iter().any(|(log, _)| {
            let l = log.lock().unwrap_or_else(|p| p.into_inner());
            l.compacted.is_none() && l.next <= final_revision
        });
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = watch_stop_tx.send(true);
    for (_, t) in &mut watchers {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let authoritative = workload::read_history(&api, leader, final_revision).await?;

    // Judge.
    let history = History::new(rec.take()).context("recorded history")?;
    let failed = rec.failed.load(std::sync::atomic::Ordering::Relaxed);
    let mut summary = Summary::new(&history, failed);
    let per_key = check_per_key(&history, &Budget::default());
    summary.record_linearizability(&per_key);
    let lost = check_lost_writes(&history, &final_state);
    summary.record_lost_writes(&lost);
    let revisions = check_revisions(&history);
    summary.record_revisions(&revisions);
    let mut watch_violations = Vec::new();
    for (i, (log, _)) in watchers.iter().enumerate() {
        let l = log.lock().unwrap_or_else(|p| p.into_inner());
        let record = WatchRecord {
            watcher: i as u64,
            range: KeyRange::Range {
                start: KEY_PREFIX.into(),
                end: Some(KEY_RANGE_END.into()),
            },
            start_revision: 1,
            received: l.received.clone(),
            end: match l.compacted {
                Some(compact_revision) => WatchEnd::Compacted { compact_revision },
                None => WatchEnd::CaughtUp {
                    through_revision: final_revision,
                },
            },
        };
        watch_violations.extend(check_watch(&authoritative, &record));
    }
    summary.record_watch(&watch_violations);
    let mut replicas = Vec::new();
    for i in 0..c.len() {
        let (_, v) = c
            .call(
                i,
                "/v3/maintenance/hashkv",
                &json!({}),
                Duration::from_secs(5),
            )
            .await
            .with_context(|| format!("hash of replica {i}"))?;
        replicas.push(ReplicaState {
            replica: i as u64,
            revision: v["header"]["revision"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            hash: v["hash"].as_u64().unwrap_or(0),
        });
    }
    let divergences = check_convergence(&replicas);
    summary.record_convergence(&divergences);

    if !summary.is_clean() {
        let mut report = String::new();
        for (key, r) in &per_key {
            match r {
                CheckResult::Violation(v) => {
                    report.push_str(&format!("linearizability violation on {key}:\n{v}\n"))
                }
                CheckResult::Unknown => {
                    report.push_str(&format!("linearizability undecided on {key}\n"))
                }
                CheckResult::Linearizable => {}
            }
        }
        for l in &lost {
            report.push_str(&format!("lost: {l}\n"));
        }
        for r in &revisions {
            report.push_str(&format!("revisions: {r}\n"));
        }
        for w in &watch_violations {
            report.push_str(&format!("watch: {w}\n"));
        }
        for d in &divergences {
            report.push_str(&format!("convergence: {d}\n"));
        }
        std::fs::write(c.dir.join("violations.txt"), &report)?;
        let minimal: Vec<_> = per_key
            .values()
            .filter_map(|r| match r {
                CheckResult::Violation(v) => Some(v.ops.clone()),
                _ => None,
            })
            .collect();
        std::fs::write(
            c.dir.join("minimal-history.json"),
            serde_json::to_string_pretty(&minimal)?,
        )?;
        std::fs::write(c.dir.join("history.json"), history.to_json()?)?;
        println!(
            "violations written to {}",
            c.dir.join("violations.txt").display()
        );
    }
    Ok(Report {
        cycles,
        summary,
        dir: c.dir.clone(),
    })
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}
