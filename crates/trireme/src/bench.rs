//! `trireme bench put|range|txn`: a closed-loop load generator for the etcd v3 JSON
//! gateway, in the manner of etcd's own `benchmark` tool. N clients each send one
//! request, wait for its answer, and send the next, over HTTP/1.1 keep-alive
//! connections (one shared pool; N concurrent requests keep N connections open).
//! Because the requests are etcd's gateway shape, the same command measures an etcd
//! cluster (`--endpoints http://127.0.0.1:2379`).
//!
//! Latency is recorded per successful request in microseconds in an HDR histogram
//! (3 significant digits); failures are counted by kind (HTTP status and gateway
//! message, or the transport failure). Throughput is successful requests per second of
//! wall time from the first request to the last answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use base64::Engine as _;
use hdrhistogram::Histogram;
use rand::Rng as _;
use serde::Serialize;

mod conn;

/// Default request count when neither `--total` nor `--duration` is given.
const DEFAULT_TOTAL: u64 = 10_000;
/// Highest latency the histogram holds (one hour, in microseconds); longer ones are
/// recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
const MAX_CLIENTS: usize = 10_000;
const MAX_VALUE: usize = 1024 * 1024;
const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `POST /v3/kv/put` of one key.
    Put,
    /// `POST /v3/kv/range` of one key.
    Range,
    /// `POST /v3/kv/txn` with no compare and `--txn-ops` puts.
    Txn,
    /// `POST /api/v1/namespaces/default/configmaps`: one ConfigMap (a `v` entry of
    /// `--val-size` bytes) per request, through the Kubernetes API.
    KubeCreate,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What each request does.
    #[arg(value_enum)]
    pub op: Op,
    /// Base URLs of the API, comma-separated (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Concurrent clients (each has one request in flight at a time).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all (default 10000, or no limit when --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Stop sending after this many seconds (requests in flight still finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Key size in bytes (keys are the key number in decimal, zero-padded).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes (put and txn).
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Keys are drawn from 0..K.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Take keys 0, 1, 2, ... (modulo --key-space) in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Puts per txn (txn only).
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// Linearizable ranges (the default).
    #[arg(long, conflicts_with = "serializable")]
    pub linearizable: bool,
    /// Serializable ranges: served from the contacted member's local state.
    #[arg(long)]
    pub serializable: bool,
    /// Send every request to the leader (found with /v3/maintenance/status).
    #[arg(long, conflicts_with_all = ["target_followers", "spread"])]
    pub target_leader: bool,
    /// Spread the clients over the followers only.
    #[arg(long, conflicts_with = "spread")]
    pub target_followers: bool,
    /// Spread the clients over every endpoint, round-robin (the default).
    #[arg(long)]
    pub spread: bool,
    /// CA certificate (PEM) that https endpoints must chain to.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM), with --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Leader,
    Followers,
    Spread,
}

/// Validated arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub op: Op,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential_keys: bool,
    pub txn_ops: usize,
    pub serializable: bool,
    pub target: Target,
    pub cacert: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
    pub timeout: Duration,
}

fn decimal_digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn positive_secs(v: f64, flag: &str) -> Result<Duration, String> {
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        return Err(format!("{flag} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Checks the arguments; the error names the flag.
pub fn validate(a: &BenchArgs) -> Result<Plan, String> {
    let mut endpoints = Vec::new();
    for e in &a.endpoints {
        let e = e.trim().trim_end_matches('/');
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .ok_or_else(|| format!("--endpoints: {e:?} must start with http:// or https://"))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "--endpoints: {e:?} must be a base URL (scheme://host:port)"
            ));
        }
        if e.starts_with("https://") && a.cacert.is_none() {
            return Err(format!("--endpoints: {e} is https: give --cacert"));
        }
        endpoints.push(e.to_string());
    }
    if endpoints.is_empty() {
        return Err("--endpoints: give at least one".into());
    }
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        return Err(format!("--clients must be between 1 and {MAX_CLIENTS}"));
    }
    let duration = a
        .duration
        .map(|d| positive_secs(d, "--duration"))
        .transpose()?;
    let total = match (a.total, duration) {
        (Some(0), _) => return Err("--total must be at least 1".into()),
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TOTAL),
    };
    if a.key_space == 0 {
        return Err("--key-space must be at least 1".into());
    }
    let need = decimal_digits(a.key_space - 1);
    if a.key_size < need || a.key_size > 1024 {
        return Err(format!(
            "--key-size must be between {need} (the digits of --key-space {}) and 1024",
            a.key_space
        ));
    }
    if a.val_size > MAX_VALUE {
        return Err(format!("--val-size must be at most {MAX_VALUE}"));
    }
    if a.txn_ops == 0 || a.txn_ops > MAX_TXN_OPS {
        return Err(format!("--txn-ops must be between 1 and {MAX_TXN_OPS}"));
    }
    if a.txn_ops != 1 && a.op != Op::Txn {
        return Err("--txn-ops applies to txn only".into());
    }
    if (a.serializable || a.linearizable) && a.op != Op::Range {
        return Err("--linearizable/--serializable apply to range only".into());
    }
    let target = if a.target_leader {
        Target::Leader
    } else if a.target_followers {
        Target::Followers
    } else {
        Target::Spread
    };
    let identity = match (&a.cert, &a.key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Plan {
        op: a.op,
        endpoints,
        clients: a.clients,
        total,
        duration,
        key_size: a.key_size,
        val_size: a.val_size,
        key_space: a.key_space,
        sequential_keys: a.sequential_keys,
        txn_ops: a.txn_ops,
        serializable: a.serializable,
        target,
        cacert: a.cacert.clone(),
        identity,
        timeout: positive_secs(a.timeout, "--timeout")?,
    })
}

// ---- requests ----

/// Key number `n` as `key_size` bytes: decimal, zero-padded (validated to fit).
pub fn key_bytes(n: u64, key_size: usize) -> String {
    format!("{n:0>key_size$}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Builds request bodies; the value is encoded once.
struct Bodies {
    op: Op,
    key_size: usize,
    key_space: u64,
    value_b64: String,
    txn_ops: usize,
    serializable: bool,
    /// Names this run's ConfigMaps apart from earlier runs' (`bench-<run>-<n>`).
    run: u32,
    /// The `--val-size` value, for ConfigMap data.
    value: String,
}

impl Bodies {
    fn new(plan: &Plan) -> Self {
        Bodies {
            op: plan.op,
            key_size: plan.key_size,
            key_space: plan.key_space,
            value_b64: b64(&vec![b'v'; plan.val_size]),
            txn_ops: plan.txn_ops,
            serializable: plan.serializable,
            run: rand::random(),
            value: "v".repeat(plan.val_size),
        }
    }

    fn path(&self) -> &'static str {
        match self.op {
            Op::Put => "/v3/kv/put",
            Op::Range => "/v3/kv/range",
            Op::Txn => "/v3/kv/txn",
            Op::KubeCreate => "/api/v1/namespaces/default/configmaps",
        }
    }

    fn key(&self, n: u64) -> String {
        b64(key_bytes(n % self.key_space, self.key_size).as_bytes())
    }

    /// The body of a request whose (first) key number is `n`.
    fn body(&self, n: u64) -> String {
        match self.op {
            Op::Put => format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                self.key(n),
                self.value_b64
            ),
            Op::Range if self.serializable => {
                format!(r#"{{"key":"{}","serializable":true}}"#, self.key(n))
            }
            Op::Range => format!(r#"{{"key":"{}"}}"#, self.key(n)),
            Op::Txn => {
                let ops: Vec<String> = (0..self.txn_ops as u64)
                    .map(|j| {
                        format!(
                            r#"{{"request_put":{{"key":"{}","value":"{}"}}}}"#,
                            self.key(n.wrapping_add(j)),
                            self.value_b64
                        )
                    })
                    .collect();
                format!(r#"{{"compare":[],"success":[{}]}}"#, ops.join(","))
            }
            Op::KubeCreate => format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"bench-{:08x}-{n}"}},"data":{{"v":"{}"}}}}"#,
                self.run, self.value
            ),
        }
    }
}

// ---- errors ----

/// A failed answer's kind: the HTTP status and the gateway's message, shortened.
pub fn classify_status(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error"]
                .iter()
                .find_map(|f| v.get(*f).and_then(|m| m.as_str()).map(str::to_string))
        })
        .unwrap_or_default();
    let mut msg: String = msg.chars().take(80).collect();
    if msg.is_empty() {
        msg = "(no gateway message)".into();
    }
    format!("HTTP {status}: {msg}")
}

// ---- leader discovery ----

fn json_u64(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// (member id, leader id) from a `/v3/maintenance/status` answer (ids as strings, as
/// the gateway writes 64-bit integers, or as numbers).
pub fn parse_status(v: &serde_json::Value) -> Option<(u64, u64)> {
    let member = json_u64(v.get("header").and_then(|h| h.get("member_id")))?;
    let leader = json_u64(v.get("leader"))?;
    Some((member, leader))
}

/// The endpoints the clients use, from each endpoint's (member id, leader id).
pub fn pick_targets(
    statuses: &[(String, u64, u64)],
    target: Target,
) -> Result<Vec<String>, String> {
    let all = || statuses.iter().map(|(e, _, _)| e.clone()).collect();
    if target == Target::Spread {
        return Ok(all());
    }
    let leaders: std::collections::BTreeSet<u64> = statuses.iter().map(|s| s.2).collect();
    let leader = match leaders.iter().collect::<Vec<_>>().as_slice() {
        [l] if **l != 0 => **l,
        [_] => return Err("no leader known".into()),
        _ => return Err(format!("the endpoints disagree on the leader: {leaders:?}")),
    };
    let picked: Vec<String> = statuses
        .iter()
        .filter(|(_, m, _)| (*m == leader) == (target == Target::Leader))
        .map(|(e, _, _)| e.clone())
        .collect();
    if picked.is_empty() {
        return Err(match target {
            Target::Leader => format!("no endpoint is the leader ({leader:x})"),
            _ => "no endpoint is a follower".into(),
        });
    }
    Ok(picked)
}

async fn status_of(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<(u64, u64)> {
    let v: serde_json::Value = http
        .post(format!("{endpoint}/v3/maintenance/status"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    parse_status(&v).ok_or_else(|| anyhow!("{endpoint}: status without leader or member_id"))
}

/// Asks every endpoint for its status until they agree on a leader (10 s at most).
async fn discover(plan: &Plan, http: &reqwest::Client) -> anyhow::Result<Vec<String>> {
    if plan.target == Target::Spread {
        return Ok(plan.endpoints.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut statuses = Vec::new();
        let mut failure = None;
        for e in &plan.endpoints {
            match status_of(http, e).await {
                Ok((m, l)) => statuses.push((e.clone(), m, l)),
                Err(err) => failure = Some(format!("{e}: {err:#}")),
            }
        }
        let result = match failure {
            Some(f) => Err(f),
            None => pick_targets(&statuses, plan.target),
        };
        match result {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow!("leader discovery: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---- the report ----

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds (all zero when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub op: Op,
    pub endpoints: Vec<String>,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<&'static str>,
    pub clients: usize,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub latency_ms: Latency,
}

/// The human-readable report.
pub fn format_report(r: &Report) -> String {
    let mut s = String::new();
    let op = match r.op {
        Op::Put => "put",
        Op::Range => "range",
        Op::Txn => "txn",
        Op::KubeCreate => "kube-create",
    };
    let consistency = r.consistency.map(|c| format!(", {c}")).unwrap_or_default();
    let target = match r.target {
        Target::Leader => "leader",
        Target::Followers => "followers",
        Target::Spread => "spread",
    };
    let _ = writeln!(
        s,
        "{op}{consistency}: {} clients, key {} B, value {} B, {} endpoint(s) ({target}): {}",
        r.clients,
        r.key_size,
        r.val_size,
        r.endpoints.len(),
        r.endpoints.join(",")
    );
    let _ = writeln!(
        s,
        "  requests  {} ok, {} failed in {:.3} s",
        r.ok, r.failed, r.elapsed_s
    );
    let _ = writeln!(s, "  throughput {:.1} req/s", r.throughput);
    let l = &r.latency_ms;
    let _ = writeln!(
        s,
        "  latency ms  min {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
        l.min, l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if !r.errors.is_empty() {
        let _ = writeln!(s, "  errors");
        for (kind, n) in &r.errors {
            let _ = writeln!(s, "    {n:>8}  {kind}");
        }
    }
    s
}

// ---- running ----

fn build_client(plan: &Plan) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(plan.clients)
        .timeout(plan.timeout);
    if let Some(ca) = &plan.cacert {
        let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("parse {}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    if let Some((cert, key)) = &plan.identity {
        let mut pem = std::fs::read(cert).with_context(|| format!("read {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("read {}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem)
            .with_context(|| format!("parse {} and {}", cert.display(), key.display()))?;
        b = b.identity(id);
    }
    Ok(b.build()?)
}

struct ClientResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram")
}

struct Shared {
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    bodies: Bodies,
    issued: AtomicU64,
    done: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
    sequential: bool,
    key_space: u64,
}

async fn client_loop(sh: Arc<Shared>, target: conn::Target) -> anyhow::Result<ClientResult> {
    let mut conn = conn::Conn::new(target, sh.tls.clone(), sh.timeout);
    let mut r = ClientResult {
        hist: new_histogram()?,
        ok: 0,
        errors: BTreeMap::new(),
    };
    loop {
        let n = sh.issued.fetch_add(1, Ordering::Relaxed);
        if sh.total.is_some_and(|t| n >= t) || sh.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Every ConfigMap needs a name of its own: the request number.
        let key = if sh.sequential || sh.bodies.op == Op::KubeCreate {
            n
        } else {
            rand::thread_rng().gen_range(0..sh.key_space)
        };
        let body = sh.bodies.body(key);
        let start = Instant::now();
        let outcome = match conn.post(body.into_bytes()).await {
            Ok((status, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, answer)) => Err(classify_status(status, &answer)),
            Err(kind) => Err(kind),
        };
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => {
                r.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
                r.ok += 1;
            }
            Err(kind) => *r.errors.entry(kind).or_insert(0) += 1,
        }
        sh.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(r)
}

fn progress_bar(plan: &Plan) -> indicatif::ProgressBar {
    let (len, template) = match (plan.total, plan.duration) {
        (Some(t), _) => (
            t,
            "{elapsed_precise} [{bar:40}] {pos}/{len} requests ({per_sec})",
        ),
        (None, Some(d)) => (d.as_millis() as u64, "{elapsed_precise} [{bar:40}] {msg}"),
        (None, None) => (0, "{elapsed_precise} {msg}"),
    };
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Runs the plan and measures it.
pub async fn run(plan: &Plan, progress: bool) -> anyhow::Result<Report> {
    let http = build_client(plan)?;
    let targets = discover(plan, &http).await?;
    let tls = match &plan.cacert {
        Some(ca) => Some(conn::tls_connector(
            ca,
            plan.identity
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )?),
        None => None,
    };
    let bodies = Bodies::new(plan);
    let path = bodies.path();
    let client_targets = (0..plan.clients)
        .map(|i| conn::Target::new(&targets[i % targets.len()], path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        tls,
        timeout: plan.timeout,
        bodies,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        total: plan.total,
        deadline: plan.duration.map(|d| start + d),
        sequential: plan.sequential_keys,
        key_space: plan.key_space,
    });
    let tasks: Vec<_> = client_targets
        .into_iter()
        .map(|target| tokio::spawn(client_loop(shared.clone(), target)))
        .collect();

    let ticker = progress.then(|| {
        let pb = progress_bar(plan);
        let sh = shared.clone();
        let by_count = plan.total.is_some();
        let handle = tokio::spawn({
            let pb = pb.clone();
            async move {
                loop {
                    let done = sh.done.load(Ordering::Relaxed);
                    if by_count {
                        pb.set_position(done);
                    } else {
                        pb.set_position(start.elapsed().as_millis() as u64);
                        pb.set_message(format!("{done} requests"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        (pb, handle)
    });

    let mut hist = new_histogram()?;
    let mut ok = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                hist.add(&r.hist).context("merge histograms")?;
                ok += r.ok;
                for (k, n) in r.errors {
                    *errors.entry(k).or_insert(0) += n;
                }
            }
            Ok(Err(e)) => first_failure = first_failure.or(Some(e)),
            Err(e) => first_failure = first_failure.or(Some(anyhow!("client task: {e}"))),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some((pb, handle)) = ticker {
        handle.abort();
        pb.finish_and_clear();
    }
    if let Some(e) = first_failure {
        return Err(e);
    }
    let failed = errors.values().sum();
    let mut endpoints = targets;
    endpoints.truncate(plan.clients);
    Ok(Report {
        op: plan.op,
        endpoints,
        target: plan.target,
        consistency: (plan.op == Op::Range).then_some(if plan.serializable {
            "serializable"
        } else {
            "linearizable"
        }),
        clients: plan.clients,
        key_size: plan.key_size,
        val_size: plan.val_size,
        key_space: plan.key_space,
        requests: ok + failed,
        ok,
        failed,
        errors,
        elapsed_s: elapsed,
        throughput: if elapsed > 0.0 {
            ok as f64 / elapsed
        } else {
            0.0
        },
        latency_ms: Latency::from_histogram(&hist),
    })
}

/// The subcommand: exit 2 on bad arguments, 1 when it could not run or no request
/// succeeded, 0 otherwise (failed requests are reported).
pub fn main(args: BenchArgs) -> ExitCode {
    let plan = match validate(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("trireme bench: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = !args.json && std::io::stdout().is_terminal();
    let result = tokio::runtime::Runtime::new()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(run(&plan, progress)));
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("trireme bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", format_report(&report));
            }
            if report.ok == 0 {
                eprintln!("trireme bench: no request succeeded");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trireme bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(line: &str) -> Result<BenchArgs, clap::Error> {
        T::try_parse_from(std::iter::once("bench").chain(line.split_whitespace())).map(|t| t.a)
    }

    fn plan(line: &str) -> Result<Plan, String> {
        validate(&args(line).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults() {
        let p = plan("put --endpoints http://127.0.0.1:2379/").expect("valid");
        assert_eq!(p.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(p.total, Some(DEFAULT_TOTAL));
        assert_eq!(p.duration, None);
        assert_eq!(p.clients, 1);
        assert_eq!(p.target, Target::Spread);
        assert!(!p.serializable);
        let p = plan("range --endpoints http://a:1,http://b:2 --duration 2.5 --serializable --target-leader --clients 64")
            .expect("valid");
        assert_eq!(p.endpoints.len(), 2);
        assert_eq!(p.total, None);
        assert_eq!(p.duration, Some(Duration::from_millis(2500)));
        assert_eq!(p.target, Target::Leader);
        assert!(p.serializable);
        let p = plan("put --endpoints http://a:1 --duration 1 --total 5").expect("valid");
        assert_eq!(p.total, Some(5));
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        let cases = [
            ("put --endpoints 127.0.0.1:2379", "--endpoints"),
            ("put --endpoints http://a:1/v3", "--endpoints"),
            ("put --endpoints https://a:1", "--cacert"),
            ("put --endpoints http://a:1 --clients 0", "--clients"),
            ("put --endpoints http://a:1 --total 0", "--total"),
            ("put --endpoints http://a:1 --duration 0", "--duration"),
            ("put --endpoints http://a:1 --duration nan", "--duration"),
            ("put --endpoints http://a:1 --key-space 0", "--key-space"),
            (
                "put --endpoints http://a:1 --key-space 1000 --key-size 2",
                "--key-size",
            ),
            (
                "put --endpoints http://a:1 --val-size 99999999",
                "--val-size",
            ),
            ("put --endpoints http://a:1 --txn-ops 4", "--txn-ops"),
            ("txn --endpoints http://a:1 --txn-ops 0", "--txn-ops"),
            ("put --endpoints http://a:1 --serializable", "range only"),
            ("put --endpoints http://a:1 --timeout 0", "--timeout"),
        ];
        for (line, flag) in cases {
            match plan(line) {
                Ok(_) => panic!("{line} was accepted"),
                Err(e) => assert!(e.contains(flag), "{line}: {e}"),
            }
        }
        // clap refuses conflicting modes before validation.
        assert!(args("range --endpoints http://a:1 --linearizable --serializable").is_err());
        assert!(args("put --endpoints http://a:1 --target-leader --spread").is_err());
        assert!(args("put --endpoints http://a:1 --target-followers --spread").is_err());
        assert!(args("put --endpoints http://a:1 --cert c.pem").is_err());
        assert!(args("delete --endpoints http://a:1").is_err());
        assert!(plan("txn --endpoints https://a:1 --cacert ca.crt --txn-ops 4").is_ok());
        assert!(plan("put --endpoints http://a:1 --key-space 1000 --key-size 3").is_ok());
    }

    #[test]
    fn keys_and_bodies() {
        assert_eq!(key_bytes(42, 8), "00000042");
        assert_eq!(key_bytes(0, 1), "0");
        let p = plan("put --endpoints http://a:1 --key-space 100 --key-size 4 --val-size 3")
            .expect("valid");
        let b = Bodies::new(&p);
        // "0042" and "vvv" in base64; key numbers wrap at the key space.
        assert_eq!(b.body(142), r#"{"key":"MDA0Mg==","value":"dnZ2"}"#);
        let p = plan("range --endpoints http://a:1 --key-space 100 --key-size 2 --serializable")
            .expect("valid");
        assert_eq!(
            Bodies::new(&p).body(7),
            r#"{"key":"MDc=","serializable":true}"#
        );
        let p =
            plan("txn --endpoints http://a:1 --key-space 10 --key-size 1 --val-size 1 --txn-ops 2")
                .expect("valid");
        let body = Bodies::new(&p).body(9);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let ops = v["success"].as_array().expect("ops");
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["request_put"]["key"], "OQ=="); // "9"
        assert_eq!(ops[1]["request_put"]["key"], "MA=="); // "0": wrapped
    }

    #[test]
    fn kube_create_bodies_are_configmaps_with_names_of_their_own() {
        let p = plan("kube-create --endpoints http://a:1 --val-size 3").expect("valid");
        let bodies = Bodies::new(&p);
        assert_eq!(bodies.path(), "/api/v1/namespaces/default/configmaps");
        let a: serde_json::Value = serde_json::from_str(&bodies.body(1)).expect("json");
        let b: serde_json::Value = serde_json::from_str(&bodies.body(2)).expect("json");
        assert_eq!(a["kind"], "ConfigMap");
        assert_eq!(a["data"]["v"], "vvv");
        assert_ne!(a["metadata"]["name"], b["metadata"]["name"]);
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_histogram().expect("histogram");
        assert_eq!(Latency::from_histogram(&h), Latency::default());
        for us in 1..=1000u64 {
            h.record(us * 10).expect("record"); // 10 us .. 10 ms
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.min, 0.010);
        // HDR keeps 3 significant digits: values come back within 0.1 %.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(close(l.max, 10.0), "{l:?}");
        assert!(close(l.p50, 5.0), "{l:?}");
        assert!(close(l.p90, 9.0), "{l:?}");
        assert!(close(l.p99, 9.9), "{l:?}");
        assert!(close(l.p999, 9.99), "{l:?}");
        assert!(close(l.mean, 5.005), "{l:?}");
    }

    fn report() -> Report {
        let mut errors = BTreeMap::new();
        errors.insert("HTTP 503: etcdserver: no leader".to_string(), 3);
        Report {
            op: Op::Range,
            endpoints: vec!["http://a:1".into(), "http://b:2".into()],
            target: Target::Spread,
            consistency: Some("linearizable"),
            clients: 16,
            key_size: 8,
            val_size: 256,
            key_space: 1000,
            requests: 1003,
            ok: 1000,
            failed: 3,
            errors,
            elapsed_s: 0.5,
            throughput: 2000.0,
            latency_ms: Latency {
                min: 0.1,
                mean: 1.0,
                p50: 0.9,
                p90: 1.5,
                p99: 2.5,
                p999: 4.0,
                max: 5.25,
            },
        }
    }

    #[test]
    fn text_report() {
        let s = format_report(&report());
        assert!(
            s.starts_with(
                "range, linearizable: 16 clients, key 8 B, value 256 B, 2 endpoint(s) (spread)"
            ),
            "{s}"
        );
        assert!(s.contains("1000 ok, 3 failed in 0.500 s"), "{s}");
        assert!(s.contains("throughput 2000.0 req/s"), "{s}");
        assert!(
            s.contains("min 0.100  p50 0.900  p90 1.500  p99 2.500  p99.9 4.000  max 5.250"),
            "{s}"
        );
        assert!(
            s.contains("       3  HTTP 503: etcdserver: no leader"),
            "{s}"
        );
    }

    #[test]
    fn json_report() {
        let v = serde_json::to_value(report()).expect("json");
        assert_eq!(v["op"], "range");
        assert_eq!(v["target"], "spread");
        assert_eq!(v["throughput"], 2000.0);
        assert_eq!(v["latency_ms"]["p999"], 4.0);
        assert_eq!(v["errors"]["HTTP 503: etcdserver: no leader"], 3);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            classify_status(
                503,
                br#"{"error":"etcdserver: no leader","code":14,"message":"etcdserver: no leader"}"#
            ),
            "HTTP 503: etcdserver: no leader"
        );
        assert_eq!(
            classify_status(502, b"<html>"),
            "HTTP 502: (no gateway message)"
        );
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            classify_status(500, long.as_bytes()).len(),
            "HTTP 500: ".len() + 80
        );
    }

    #[test]
    fn leader_discovery() {
        // etcd and Trireme write 64-bit ids as strings; numbers are accepted too.
        let v = serde_json::json!({"header": {"member_id": "12"}, "leader": "34"});
        assert_eq!(parse_status(&v), Some((12, 34)));
        let v = serde_json::json!({"header": {"member_id": 12}, "leader": 12});
        assert_eq!(parse_status(&v), Some((12, 12)));
        assert_eq!(parse_status(&serde_json::json!({"leader": "1"})), None);
        assert_eq!(
            parse_status(&serde_json::json!({"header": {"member_id": "x"}, "leader": "1"})),
            None
        );

        let s = |e: &str, m, l| (e.to_string(), m, l);
        let st = vec![
            s("http://a", 1, 2),
            s("http://b", 2, 2),
            s("http://c", 3, 2),
        ];
        assert_eq!(
            pick_targets(&st, Target::Leader),
            Ok(vec!["http://b".to_string()])
        );
        assert_eq!(
            pick_targets(&st, Target::Followers),
            Ok(vec!["http://a".to_string(), "http://c".to_string()])
        );
        assert_eq!(pick_targets(&st, Target::Spread).map(|v| v.len()), Ok(3));
        let split = vec![s("http://a", 1, 1), s("http://b", 2, 2)];
        assert!(pick_targets(&split, Target::Leader).is_err());
        let none = vec![s("http://a", 1, 0)];
        assert!(pick_targets(&none, Target::Leader).is_err());
        let only_leader = vec![s("http://a", 1, 1)];
        assert!(pick_targets(&only_leader, Target::Followers).is_err());
        let elsewhere = vec![s("http://a", 1, 9)];
        assert!(pick_targets(&elsewhere, Target::Leader).is_err());
    }
}
