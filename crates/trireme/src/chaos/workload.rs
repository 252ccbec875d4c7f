//! Clients and watchers, and what they record. Clients run a mixed workload (put,
//! linearizable get, compare-and-swap, delete) on a small key set, every write with a
//! unique value; each operation's invocation and completion goes into the history,
//! with an outcome that is known, definitely failed (dropped from the history) or
//! unknown (it may or may not have happened). Watchers follow the key range from
//! revision 1 across replica failures, resuming at the next revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use trireme_check::{Event, EventKind, Input, Operation, Output};

pub const KEY_PREFIX: &str = "k";
pub const KEY_RANGE_END: &str = "l";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The API endpoints of the cluster, shared by clients and watchers.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub endpoints: Vec<String>,
}

impl Api {
    pub async fn call(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .http
            .post(format!("{}{path}", self.endpoints[i]))
            .timeout(timeout)
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

/// The shared record of a run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    next_id: AtomicU64,
    pub failed: AtomicU64,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn take(&self) -> Vec<Operation> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn count(&self) -> usize {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    String::from_utf8_lossy(
        &STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default(),
    )
    .into_owned()
}

fn num(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

enum Outcome {
    Known(Output),
    Failed,
    Unknown,
}

/// Whether a failed request certainly had no effect.
fn classify_error(status: u16, body: &Value) -> Outcome {
    if (400..500).contains(&status) {
        return Outcome::Failed;
    }
    let msg = body["error"].as_str().unwrap_or("");
    // ProposeError::Dropped and Busy: refused before anything was proposed.
    if status == 503 && (msg.contains("no leader") || msg.contains("too many requests")) {
        return Outcome::Failed;
    }
    if status == 429 {
        return Outcome::Failed;
    }
    Outcome::Unknown
}

fn request(key: &str, input: &Input) -> (&'static str, Value) {
    match input {
        Input::Put { value } => ("/v3/kv/put", json!({"key": b64(key), "value": b64(value)})),
        Input::Get => ("/v3/kv/range", json!({"key": b64(key)})),
        Input::CompareAndSwap { expected, new } => {
            let compare = match expected {
                Some(v) => {
                    json!({"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(v)})
                }
                None => {
                    json!({"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"})
                }
            };
            (
                "/v3/kv/txn",
                json!({"compare": [compare], "success": [{"request_put": {"key": b64(key), "value": b64(new)}}]}),
            )
        }
        Input::Delete => ("/v3/kv/deleterange", json!({"key": b64(key)})),
    }
}

fn output(input: &Input, v: &Value) -> Output {
    let revision = num(&v["header"]["revision"]);
    match input {
        Input::Put { .. } => Output::Put { revision },
        Input::Get => match v["kvs"].as_array().and_then(|kvs| kvs.first()) {
            Some(kv) => Output::Get {
                value: Some(unb64(&kv["value"])),
                mod_revision: num(&kv["mod_revision"]),
            },
            None => Output::Get {
                value: None,
                mod_revision: 0,
            },
        },
        Input::CompareAndSwap { .. } => Output::CompareAndSwap {
            succeeded: v["succeeded"].as_bool().unwrap_or(false),
            revision,
        },
        Input::Delete => Output::Delete {
            deleted: num(&v["deleted"]) > 0,
            revision,
        },
    }
}

/// One client: runs until `stop`. `home` pins it to a replica; `None` picks one per op.
pub async fn client(
    api: Api,
    id: u64,
    home: Option<usize>,
    keys: Vec<String>,
    rec: Arc<Recorder>,
    seed: u64,
    stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    let mut seq = 0u64;
    while !*stop.borrow() {
        seq += 1;
        let i = home.unwrap_or_else(|| rng.gen_range(0..api.endpoints.len()));
        let key = keys[rng.gen_range(0..keys.len())].clone();
        let unique = format!("c{id}-{seq}");
        let input = match rng.gen_range(0..100) {
            0..=39 => Input::Put { value: unique },
            40..=69 => Input::Get,
            70..=89 => Input::CompareAndSwap {
                expected: seen.get(&key).cloned().flatten(),
                new: unique,
            },
            _ => Input::Delete,
        };
        let (path, body) = request(&key, &input);
        let call = rec.now();
        let result = api.call(i, path, &body, REQUEST_TIMEOUT).await;
        let ret = rec.now();
        let outcome = match result {
            Ok((200, v)) => Outcome::Known(output(&input, &v)),
            Ok((status, v)) => classify_error(status, &v),
            Err(e) if e.is_connect() => Outcome::Failed,
            Err(_) => Outcome::Unknown,
        };
        let op_id = rec.next_id.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Known(out) => {
                match (&input, &out) {
                    (_, Output::Get { value, .. }) => {
                        seen.insert(key.clone(), value.clone());
                    }
                    (Input::Put { value }, _) => {
                        seen.insert(key.clone(), Some(value.clone()));
                    }
                    (
                        Input::CompareAndSwap { new, .. },
                        Output::CompareAndSwap {
                            succeeded: true, ..
                        },
                    ) => {
                        seen.insert(key.clone(), Some(new.clone()));
                    }
                    (Input::Delete, _) => {
                        seen.insert(key.clone(), None);
                    }
                    _ => {}
                }
                rec.push(Operation {
                    id: op_id,
                    client: id,
                    key,
                    call,
                    ret: Some(ret),
                    input,
                    output: Some(out),
                });
            }
            Outcome::Failed => {
                rec.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unknown => {
                rec.push(Operation {
                    id: op_id,
                    client: id,
                    key,
                    call,
                    ret: None,
                    input,
                    output: None,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..8))).await;
    }
}

/// What one watcher saw, across reconnects.
#[derive(Default)]
pub struct WatchLog {
    pub received: Vec<Event>,
    /// Set when the server cancelled it for compaction.
    pub compacted: Option<u64>,
    /// The next revision it asks for.
    pub next: u64,
}

/// Follows `[KEY_PREFIX, KEY_RANGE_END)` from revision 1, starting on replica `first`
/// and moving to another replica whenever the stream breaks, until `stop`.
pub async fn watcher(
    api: Api,
    first: usize,
    log: Arc<Mutex<WatchLog>>,
    stop: watch::Receiver<bool>,
) {
    let mut replica = first;
    let mut rng = StdRng::seed_from_u64(first as u64);
    loop {
        if *stop.borrow() {
            return;
        }
        let next = log.lock().unwrap_or_else(|p| p.into_inner()).next.max(1);
        let body = json!({"create_request": {"key": b64(KEY_PREFIX), "range_end": b64(KEY_RANGE_END), "start_revision": next.to_string()}});
        let mut stop2 = stop.clone();
        let done = tokio::select! {
            _ = stop2.wait_for(|s| *s) => return,
            r = follow(&api, replica, &body, &log) => r,
        };
        if done {
            return;
        }
        replica = rng.gen_range(0..api.endpoints.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads one watch stream; true when the watch is over for good (compacted).
async fn follow(api: &Api, i: usize, body: &Value, log: &Arc<Mutex<WatchLog>>) -> bool {
    let resp = api
        .http
        .post(format!("{}/v3/watch", api.endpoints[i]))
        .body(body.to_string())
        .send()
        .await;
    let Ok(mut resp) = resp else { return false };
    if resp.status().as_u16() != 200 {
        return false;
    }
    let mut buf = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            _ => return false,
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let r = &v["result"];
            let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
            if r["canceled"].as_bool() == Some(true) {
                let compact = num(&r["compact_revision"]);
                if compact > 0 {
                    l.compacted = Some(compact);
                    return true;
                }
                return false;
            }
            if let Some(events) = r["events"].as_array() {
                for e in events {
                    let kv = &e["kv"];
                    let revision = num(&kv["mod_revision"]);
                    let delete = e["type"].as_str() == Some("DELETE");
                    l.received.push(Event {
                        revision,
                        key: unb64(&kv["key"]),
                        kind: if delete {
                            EventKind::Delete
                        } else {
                            EventKind::Put
                        },
                        value: if delete {
                            None
                        } else {
                            Some(unb64(&kv["value"]))
                        },
                    });
                    l.next = l.next.max(revision + 1);
                }
            }
        }
    }
}

/// Every event of the key range from revision 1 through `through`, read with a watch
/// from one replica: the authoritative history the watchers are compared with.
pub async fn read_history(api: &Api, i: usize, through: u64) -> anyhow::Result<Vec<Event>> {
    let log = Arc::new(Mutex::new(WatchLog {
        next: 1,
        ..Default::default()
    }));
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(watcher(api.clone(), i, Arc::clone(&log), stop));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let l = log.lock().unwrap_or_else(|p| p.into_inner());
            if l.compacted.is_some() {
                anyhow::bail!("history compacted; cannot check watches");
            }
            if l.next > through {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("could not read the history through revision {through}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let _ = task.await;
    let events = std::mem::take(&mut log.lock().unwrap_or_else(|p| p.into_inner()).received);
    Ok(events
        .into_iter()
        .filter(|e| e.revision <= through)
        .collect())
}
