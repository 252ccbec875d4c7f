//! Faults, one at a time, each with an injection and a heal.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::cluster::Cluster;
use super::proxy::LinkMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nemesis {
    /// SIGKILL a random replica, restart it at heal.
    Kill,
    /// SIGKILL the leader, restart it at heal.
    KillLeader,
    /// SIGSTOP a random replica past the election timeout, SIGCONT at heal.
    Pause,
    /// SIGSTOP the leader: a paused old leader must not serve stale reads after.
    PauseLeader,
    /// Cut the leader off from every other replica.
    PartitionLeader,
    /// A majority/minority split (random minority).
    Split,
    /// One replica sees both halves, which cannot see each other.
    Bridge,
    /// Every peer link delayed 50 ± 25 ms.
    Delay,
    /// Every peer link resets 5 % of its chunks.
    Drop,
    /// One replica's peer traffic vanishes in both directions.
    Blackhole,
    /// A follower cut off long enough for the leader to compact its log past it: it
    /// must come back by snapshot.
    SnapshotCatchUp,
    /// Every fsync of one replica fails (libfiu): it must stop, never carry on; it is
    /// restarted (without the fault) at heal.
    FsyncFailure,
}

impl Nemesis {
    pub const ALL: [Nemesis; 12] = [
        Nemesis::Kill,
        Nemesis::KillLeader,
        Nemesis::Pause,
        Nemesis::PauseLeader,
        Nemesis::PartitionLeader,
        Nemesis::Split,
        Nemesis::Bridge,
        Nemesis::Delay,
        Nemesis::Drop,
        Nemesis::Blackhole,
        Nemesis::SnapshotCatchUp,
        Nemesis::FsyncFailure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::Pause => "pause",
            Nemesis::PauseLeader => "pause-leader",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::Split => "split",
            Nemesis::Bridge => "bridge",
            Nemesis::Delay => "delay",
            Nemesis::Drop => "drop",
            Nemesis::Blackhole => "blackhole",
            Nemesis::SnapshotCatchUp => "snapshot",
            Nemesis::FsyncFailure => "fsync",
        }
    }

    /// Parses a comma list; `kill` also accepts the groups `partition` (every link
    /// fault that cuts) and `netem` (delay, drop, blackhole).
    pub fn parse_list(s: &str) -> Result<Vec<Nemesis>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => out.extend(Nemesis::ALL),
                "partition" => {
                    out.extend([Nemesis::PartitionLeader, Nemesis::Split, Nemesis::Bridge])
                }
                "netem" => out.extend([Nemesis::Delay, Nemesis::Drop, Nemesis::Blackhole]),
                name => match Nemesis::ALL.iter().find(|n| n.name() == name) {
                    Some(n) => out.push(*n),
                    None => {
                        let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                        return Err(format!(
                            "unknown nemesis {name:?}; known: {}, partition, netem, all",
                            names.join(", ")
                        ));
                    }
                },
            }
        }
        if out.is_empty() {
            return Err("no nemesis given".into());
        }
        out.dedup();
        Ok(out)
    }

    /// How long the fault is held.
    pub fn hold(self) -> Duration {
        match self {
            Nemesis::SnapshotCatchUp => Duration::from_secs(8),
            Nemesis::Pause | Nemesis::PauseLeader => Duration::from_secs(3),
            _ => Duration::from_secs(4),
        }
    }
}

/// What must be undone at heal.
#[derive(Debug, Default)]
pub struct Injected {
    pub killed: Vec<usize>,
    /// Replicas whose fsyncs fail: they must have exited by the end of the hold.
    pub fsync_failed: Vec<usize>,
    pub paused: Vec<usize>,
    pub links_touched: bool,
}

/// Injects `n`; `leader` is the current leader's index if known.
pub fn inject(
    c: &mut Cluster,
    n: Nemesis,
    leader: Option<usize>,
    rng: &mut StdRng,
) -> anyhow::Result<Injected> {
    let size = c.len();
    let random = |rng: &mut StdRng| rng.gen_range(0..size);
    let leader_or_random = |rng: &mut StdRng| leader.unwrap_or_else(|| rng.gen_range(0..size));
    let mut done = Injected::default();
    match n {
        Nemesis::Kill | Nemesis::KillLeader => {
            let v = if n == Nemesis::Kill {
                random(rng)
            } else {
                leader_or_random(rng)
            };
            c.kill(v);
            done.killed.push(v);
        }
        Nemesis::Pause | Nemesis::PauseLeader => {
            let v = if n == Nemesis::Pause {
                random(rng)
            } else {
                leader_or_random(rng)
            };
            c.pause(v);
            done.paused.push(v);
        }
        Nemesis::PartitionLeader | Nemesis::Blackhole | Nemesis::SnapshotCatchUp => {
            let v = match n {
                Nemesis::PartitionLeader => leader_or_random(rng),
                Nemesis::SnapshotCatchUp => {
                    let followers: Vec<usize> = (0..size).filter(|i| Some(*i) != leader).collect();
                    followers[rng.gen_range(0..followers.len())]
                }
                _ => random(rng),
            };
            let others: Vec<usize> = (0..size).filter(|i| *i != v).collect();
            c.cut(&[v], &others);
            done.links_touched = true;
        }
        Nemesis::Split => {
            let mut ids: Vec<usize> = (0..size).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.gen_range(0..=i));
            }
            let minority = (size - 1) / 2;
            let (a, b) = ids.split_at(minority.max(1));
            c.cut(a, b);
            done.links_touched = true;
        }
        Nemesis::Bridge => {
            let b = random(rng);
            let rest: Vec<usize> = (0..size).filter(|i| *i != b).collect();
            let half = rest.len() / 2;
            c.cut(&rest[..half], &rest[half..]);
            done.links_touched = true;
        }
        Nemesis::Delay => {
            c.set_all_links(LinkMode::Delay {
                base_ms: 50,
                jitter_ms: 25,
            });
            done.links_touched = true;
        }
        Nemesis::Drop => {
            c.set_all_links(LinkMode::Drop { p: 0.05 });
            done.links_touched = true;
        }
        Nemesis::FsyncFailure => {
            let v = random(rng);
            c.fail_fsync(v)?;
            done.fsync_failed.push(v);
        }
    }
    Ok(done)
}

/// Undoes what `inject` did.
pub fn heal(c: &mut Cluster, injected: &Injected, exe: &std::path::Path) -> anyhow::Result<()> {
    if injected.links_touched {
        c.set_all_links(LinkMode::Pass);
    }
    for p in &injected.paused {
        c.resume(*p);
    }
    for k in injected.killed.iter().chain(&injected.fsync_failed) {
        c.start(*k, exe)?;
    }
    Ok(())
}
