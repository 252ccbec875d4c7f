//! Fsync failures for tests that re-execute themselves as a child under Debian's
//! `fiu-run` (libfiu), then make the running child's `fsync` and `fdatasync` fail with
//! EIO through `fiu-ctrl`. Included by path by `trireme-mvcc/tests/restore_fsync_failure.rs`
//! and `trireme-store/tests/fsync_failure.rs`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs this test binary again under `fiu-run -x`, only `test`, with `env` set to `dir`
/// (the child's cue that it is the child); its stdout is piped.
pub fn rerun_under_fiu(test: &str, env: &str, dir: &Path, stdin: Stdio, stderr: Stdio) -> Child {
    assert!(
        Command::new("fiu-run").arg("-h").output().is_ok(),
        "fiu-run is missing: install Debian's fiu-utils (scripts/test.sh does)"
    );
    Command::new("fiu-run")
        .arg("-x")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// From now on every `fsync` and `fdatasync` of `child` fails with EIO.
pub fn fail_fsyncs(child: &Child) {
    let ctl = Command::new("fiu-ctrl")
        .args(["-c", "enable name=posix/io/sync/fdatasync,failinfo=5"])
        .args(["-c", "enable name=posix/io/sync/fsync,failinfo=5"])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ctl.success(), "fiu-ctrl failed");
}

/// The lines of `child`'s stdout, read on a thread of their own so that the caller can
/// wait for each with a deadline (`recv_timeout`).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `child`'s exit status once it has exited; `None`, with the child killed, if it is
/// still running at `deadline`.
pub fn exit_status(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
