//! Apply throughput of the MVCC state machine on a loaded store: 100,000 keys of 256
//! bytes are loaded first, then random keys are overwritten in batches of 1, 16 and 64
//! entries (what the side-by-side benchmark does to each replica). Prints figures.
//!
//! `cargo bench -p trireme-benches --bench mvcc_overwrite`

use std::time::{Duration, Instant};

use trireme_mvcc::{ApplyEntry, Command, PutRequest, Store};

const VALUE_BYTES: usize = 256;
const KEYS: u64 = 100_000;
const LOAD_BATCH: usize = 64;

fn put(index: u64, key: u64) -> ApplyEntry {
    ApplyEntry {
        index,
        term: 1,
        command: Some(Command::Put(PutRequest {
            key: format!("{key:08}").into_bytes(),
            value: vec![b'x'; VALUE_BYTES],
            lease: 0,
            prev_kv: false,
        })),
        conf_state: None,
        cluster: Vec::new(),
    }
}

/// A small xorshift: the benchmark needs spread keys, not good randomness.
fn next_key(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % KEYS
}

/// This process's resident memory, from /proc (Linux only; "?" elsewhere).
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    let mut index = 1u64;
    let started = Instant::now();
    let mut key = 0u64;
    while key < KEYS {
        let batch: Vec<_> = (0..LOAD_BATCH as u64)
            .map(|i| put(index + i, (key + i) % KEYS))
            .collect();
        index += LOAD_BATCH as u64;
        key += LOAD_BATCH as u64;
        store.apply_batch(&batch).expect("apply");
    }
    println!(
        "load {KEYS} keys: {:.0} puts/s, RSS {}",
        KEYS as f64 / started.elapsed().as_secs_f64(),
        rss()
    );
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for batch in [1usize, 16, 64] {
        let budget = Duration::from_secs(3);
        let started = Instant::now();
        let mut puts = 0u64;
        while started.elapsed() < budget {
            let entries: Vec<_> = (0..batch as u64)
                .map(|i| put(index + i, next_key(&mut rng)))
                .collect();
            index += batch as u64;
            store.apply_batch(&entries).expect("apply");
            puts += batch as u64;
        }
        println!(
            "overwrite, batch {batch:>3}: {:.0} puts/s, RSS {}",
            puts as f64 / started.elapsed().as_secs_f64(),
            rss()
        );
    }
}
