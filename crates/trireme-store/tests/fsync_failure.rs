//! An fsync error stops the node: it never acknowledges a write it could not make
//! durable, and never carries on. The test re-executes itself as a child process under
//! Debian's `fiu-run` (libfiu), then makes `fdatasync`/`fsync` fail with EIO in the
//! running child through `fiu-ctrl`.
#![allow(clippy::unwrap_used)]

#[path = "../../trireme-mvcc/tests/support/fiu.rs"]
mod fiu;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use trireme_mvcc::PutRequest;
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::{Bootstrap, NodeConfig, FAST_TICK};
use trireme_store::{KvStore, StoreConfig};

const CHILD_ENV: &str = "TRIREME_FSYNC_CHILD_DIR";
const TEST_NAME: &str = "an_fsync_error_stops_the_node_instead_of_acknowledging";

#[test]
fn an_fsync_error_stops_the_node_instead_of_acknowledging() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = fiu::rerun_under_fiu(
        TEST_NAME,
        CHILD_ENV,
        dir.path(),
        Stdio::inherit(),
        Stdio::null(),
    );
    let rx = fiu::stdout_lines(&mut child);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acks_before = 0;
    while acks_before < 5 {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match line {
            Ok(l) if l.starts_with("ACK") => acks_before += 1,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the child acknowledged only {acks_before} writes before the fault");
            }
        }
    }
    fiu::fail_fsyncs(&child);

    let mut acks_after = 0;
    let mut failed = None;
    while failed.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.starts_with("ACK") => acks_after += 1,
            Ok(l) if l.starts_with("FAILED") => failed = Some(l),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let status = fiu::exit_status(&mut child, deadline)
        .expect("the child kept running after its fsync failed");
    let failed = failed.expect("the node reports that it stopped");
    assert!(
        failed.contains("I/O") || failed.contains("Input/output"),
        "{failed}"
    );
    assert_eq!(
        status.code(),
        Some(3),
        "the child exits because its node stopped"
    );
    // One write may have been fsynced just before the fault was switched on.
    assert!(
        acks_after <= 1,
        "{acks_after} writes acknowledged after fsync started failing"
    );
}

/// The child: a one-replica store that writes until its node stops.
fn child(dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let net = MemoryNetwork::new();
        let mut node = NodeConfig::new(1, dir, Bootstrap::Initial(vec![1]));
        node.tick = FAST_TICK;
        let store = KvStore::start(StoreConfig::new(node), net.transport(1)).unwrap();
        net.register(store.node().mailbox());
        let mut out = std::io::stdout();
        let end = Instant::now() + Duration::from_secs(25);
        let mut i = 0u64;
        while Instant::now() < end {
            i += 1;
            let put = PutRequest {
                key: format!("k{i}").into(),
                value: b"v".to_vec(),
                lease: 0,
                prev_kv: false,
            };
            match store.put(put).await {
                Ok(_) => writeln!(out, "ACK {i}").unwrap(),
                Err(e) => {
                    writeln!(out, "ERR {e}").unwrap();
                    for _ in 0..200 {
                        if let Some(why) = store.status().failed {
                            writeln!(out, "FAILED {why}").unwrap();
                            out.flush().unwrap();
                            std::process::exit(3);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::process::exit(4);
    });
}
