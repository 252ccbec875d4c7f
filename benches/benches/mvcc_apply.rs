//! Apply throughput of the MVCC state machine: 256-byte puts in batches of 1, 64 and
//! 512 entries per `Store::apply_batch` (one sled batch each, no fsync).
//!
//! `cargo bench -p trireme-benches --bench mvcc_apply` (settings are kept short).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use trireme_mvcc::{ApplyEntry, Command, PutRequest, Store};

const VALUE_BYTES: usize = 256;
/// Puts cycle over this many keys, so the store holds a bounded key space.
const KEY_SPACE: u64 = 10_000;

fn entries(first_index: u64, n: usize) -> Vec<ApplyEntry> {
    (0..n as u64)
        .map(|i| {
            let index = first_index + i;
            ApplyEntry {
                index,
                term: 1,
                command: Some(Command::Put(PutRequest {
                    key: format!("/registry/bench/{:08}", index % KEY_SPACE).into_bytes(),
                    value: vec![b'x'; VALUE_BYTES],
                    lease: 0,
                    prev_kv: false,
                })),
                conf_state: None,
                cluster: Vec::new(),
            }
        })
        .collect()
}

fn apply_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc_apply_put_256b");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for batch in [1usize, 64, 512] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    let e = entries(next, batch);
                    next += batch as u64;
                    e
                },
                |e| {
                    let results = store.apply_batch(&e).expect("apply");
                    assert!(results.iter().all(Result::is_ok));
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, apply_puts);
criterion_main!(benches);
