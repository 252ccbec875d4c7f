#![allow(clippy::field_reassign_with_default)] // raft-rs protobuf messages are built by assignment.
//! Raft log append with fsync: entries of 256 bytes appended in batches of 1, 16 and
//! 128 per `LogStore::append`, each batch made durable (one write + fdatasync), as
//! the Ready loop does once per Ready. The per-element figure shows what group commit
//! buys: the fsync is paid once per batch.
//!
//! `cargo bench -p trireme-benches --bench raft_log_append` (settings are kept short).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use trireme_raft::eraftpb::Entry;
use trireme_raft::LogStore;

fn entries(first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|index| {
            let mut e = Entry::default();
            e.index = index;
            e.term = 1;
            e.data = vec![b'x'; 256].into();
            e
        })
        .collect()
}

fn append_with_fsync(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_log_append_fsync_256b");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for batch in [1u64, 16, 128] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogStore::open(dir.path()).expect("open log");
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    let e = entries(next, batch);
                    next += batch;
                    e
                },
                |e| log.append(&e, None, true).expect("append"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, append_with_fsync);
criterion_main!(benches);
