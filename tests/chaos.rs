//! The fault suite's short profile: `trireme chaos` against three real replica
//! processes, every kind of nemesis (each once per round, some combined), and a clean
//! verdict from every checker. As root (CI) the replicas run in network namespaces and
//! partitions are nftables drops; otherwise on loopback with proxy partitions.
//! (The long profile, `--cycles 100`, is run by hand; see docs/reliability.md.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_trireme");
/// One round of every nemesis, and a cycle more.
const CYCLES: &str = "16";

#[test]
fn the_short_chaos_profile_finds_no_violation() {
    let seed: u64 = std::env::var("TRIREME_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    let root = nix::unistd::geteuid().is_root();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--cycles",
            CYCLES,
            "--nemesis",
            "all",
            "--net",
            if root { "netns" } else { "loopback" },
            "--seed",
            &seed.to_string(),
            "--dir",
        ])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let violations =
        std::fs::read_to_string(dir.path().join("run/violations.txt")).unwrap_or_default();
    assert!(
        out.status.success(),
        "chaos (seed {seed}) failed:\n{stdout}\n{stderr}\n{violations}"
    );
    let summary = stdout.lines().last().unwrap_or("");
    assert!(
        summary.starts_with(&format!("cycles {CYCLES}, ops ")),
        "{summary}"
    );
    if root {
        assert!(stdout.contains("in network namespaces"), "{stdout}");
    }
    assert!(
        summary.contains("lost acknowledged writes 0, linearizability violations 0, watch gaps 0"),
        "{summary}"
    );
    println!("seed {seed}: {summary}");
}
