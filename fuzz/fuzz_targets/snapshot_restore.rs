//! Arbitrary bytes as a snapshot stream: `trireme_mvcc::Store::restore` must return an
//! error or a store, never panic, and leave nothing behind on error (no directory when
//! it created it, an empty directory when it was given one).
//!
//! A stream that starts with the snapshot magic is also restored with its last four
//! bytes replaced by the crc32 of the rest, so that the fuzzer gets past the checksum
//! and reaches the reading of the restored store's contents (`Store::from_db`).
#![no_main]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tempfile::TempDir;
use trireme_mvcc::Store;

const MAGIC: &[u8] = b"TRIREME-MVCC-S1\n";

fn base() -> &'static Path {
    static BASE: OnceLock<TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        // tmpfs when there is one: a successful restore syncs its files.
        tempfile::Builder::new()
            .prefix("trireme-fuzz-restore")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory")
    })
    .path()
}

fn restore(stream: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = base().join(format!("r{n}"));
    // Alternately a directory that does not exist and one that exists, empty.
    let given = n % 2 == 1;
    if given {
        std::fs::create_dir(&dir).expect("create the target directory");
    }
    match Store::restore(&dir, &mut &stream[..]) {
        Ok(store) => {
            let _ = store.revision();
            drop(store);
        }
        Err(e) => {
            if given {
                let left: Vec<_> = std::fs::read_dir(&dir)
                    .map(|d| d.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                assert!(left.is_empty(), "failed restore ({e}) left {left:?}");
            } else {
                assert!(!dir.exists(), "failed restore ({e}) left {}", dir.display());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fuzz_target!(|data: &[u8]| {
    restore(data);
    if data.len() >= MAGIC.len() + 4 && data.starts_with(MAGIC) {
        let body = &data[..data.len() - 4];
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        restore(&fixed);
    }
});
