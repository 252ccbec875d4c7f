//! A snapshot restore whose final sync fails returns the error; it does not panic.
//! sled's destructor syncs its file once more and panics on failure (an `unwrap` in
//! sled's `Log::drop`), so dropping the freshly restored store on a failing disk would
//! turn a clean error into a panic on the Raft thread. The test re-executes itself as
//! a child under Debian's `fiu-run` (libfiu); the child restores from a reader that
//! stops before its last byte until the parent has made `fsync`/`fdatasync` fail with
//! EIO through `fiu-ctrl`.
#![allow(clippy::unwrap_used)]

#[path = "support/fiu.rs"]
mod fiu;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use trireme_mvcc::{ApplyEntry, Command, PutRequest, Store};

const CHILD_ENV: &str = "TRIREME_RESTORE_FSYNC_CHILD";
const TEST_NAME: &str = "a_restore_whose_sync_fails_returns_the_error";

#[test]
fn a_restore_whose_sync_fails_returns_the_error() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The image to restore, written by a store in this (healthy) process.
    {
        let store = Store::open(&dir.path().join("source")).unwrap();
        let entries: Vec<ApplyEntry> = (1..=20u64)
            .map(|i| ApplyEntry {
                index: i,
                term: 1,
                command: Some(Command::Put(PutRequest {
                    key: format!("k{i:02}").into_bytes(),
                    value: vec![b'v'; 100],
                    lease: 0,
                    prev_kv: false,
                })),
                conf_state: None,
                cluster: Vec::new(),
            })
            .collect();
        store.apply_batch(&entries).unwrap();
        let mut image = Vec::new();
        store.write_snapshot(&mut image).unwrap();
        std::fs::write(dir.path().join("image"), image).unwrap();
    }

    let mut child = fiu::rerun_under_fiu(
        TEST_NAME,
        CHILD_ENV,
        dir.path(),
        Stdio::piped(),
        Stdio::piped(),
    );
    // The child's stdout and stderr are read on threads of their own, so that every
    // wait below has a deadline.
    let rx = fiu::stdout_lines(&mut child);
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = || rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));

    // The child has read all but the last byte of the image (libtest's "test ... "
    // starts the same line).
    let mut ready = false;
    while let Ok(line) = next() {
        if line.ends_with("READY") {
            ready = true;
            break;
        }
    }
    if !ready {
        let _ = child.kill();
        panic!("the child never got to the end of the image");
    }
    fiu::fail_fsyncs(&child);
    writeln!(child.stdin.take().unwrap(), "GO").unwrap();

    let mut outcome = Vec::new();
    while let Ok(line) = next() {
        outcome.push(line);
    }
    let status = fiu::exit_status(&mut child, deadline)
        .unwrap_or_else(|| panic!("the child kept running: {outcome:?}"));
    let stderr = stderr.join().unwrap();
    assert!(
        status.success(),
        "the child failed ({status}): {outcome:?}\n{stderr}"
    );
    assert!(
        outcome.iter().any(|l| l.starts_with("FAILED")),
        "the restore did not report the failed sync: {outcome:?}"
    );
}

/// Yields the image but its last byte, then waits for the parent's "GO" on stdin.
struct Gate {
    image: Vec<u8>,
    at: usize,
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let last = self.image.len() - 1;
        if self.at == last {
            println!("READY");
            std::io::stdout().flush()?;
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
        }
        let end = if self.at < last { last } else { last + 1 };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&self.image[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn child(dir: &std::path::Path) {
    let image = std::fs::read(dir.join("image")).unwrap();
    let mut gate = Gate { image, at: 0 };
    match Store::restore(&dir.join("restored"), &mut gate) {
        Ok(_) => println!("RESTORED"),
        Err(e) => println!("FAILED {e}"),
    }
    std::io::stdout().flush().unwrap();
}
