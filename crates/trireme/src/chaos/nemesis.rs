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
    /// The leader's network link is set down (namespaces only): it loses its peers and
    /// its clients at once.
    Isolate,
    /// A follower is killed, removed from the cluster, wiped, added back as a learner
    /// and restarted empty (it catches up from the leader); promoted at heal.
    MemberReplace,
}

impl Nemesis {
    pub const ALL: [Nemesis; 14] = [
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
        Nemesis::Isolate,
        Nemesis::MemberReplace,
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
            Nemesis::Isolate => "isolate",
            Nemesis::MemberReplace => "member-replace",
        }
    }

    /// Parses a comma list; `kill` also accepts the groups `partition` (every link
    /// fault that cuts) and `netem` (delay, drop, blackhole).
    pub fn parse_list(s: &str) -> Result<Vec<Nemesis>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => out.extend(Nemesis::ALL),
                "partition" => out.extend([
                    Nemesis::PartitionLeader,
                    Nemesis::Split,
                    Nemesis::Bridge,
                    Nemesis::Isolate,
                ]),
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

/// The order of faults: every listed nemesis once per round, in a shuffled order, and
/// every third cycle a second fault on top of the first (a combination), drawn from
/// those that compose.
pub struct Schedule {
    all: Vec<Nemesis>,
    deck: Vec<Nemesis>,
    cycle: u32,
}

impl Schedule {
    pub fn new(all: Vec<Nemesis>) -> Schedule {
        Schedule {
            all,
            deck: Vec::new(),
            cycle: 0,
        }
    }

    /// The faults of the next cycle (one or two).
    pub fn next(&mut self, rng: &mut StdRng) -> Vec<Nemesis> {
        self.cycle += 1;
        if self.deck.is_empty() {
            self.deck = self.all.clone();
            for i in (1..self.deck.len()).rev() {
                self.deck.swap(i, rng.gen_range(0..=i));
            }
        }
        let Some(first) = self.deck.pop() else {
            return Vec::new();
        };
        let mut out = vec![first];
        if self.cycle.is_multiple_of(3) && first.composes() {
            let partners: Vec<Nemesis> = self
                .all
                .iter()
                .copied()
                .filter(|n| n.composes() && *n != first)
                .collect();
            if !partners.is_empty() {
                out.push(partners[rng.gen_range(0..partners.len())]);
            }
        }
        out
    }
}

impl Nemesis {
    /// Whether the fault can be held together with another one. The fsync failure
    /// must be observed alone (its victim has to exit by itself), and the snapshot
    /// catch-up and the member replacement need the rest of the cluster to make
    /// progress.
    fn composes(self) -> bool {
        !matches!(
            self,
            Nemesis::FsyncFailure | Nemesis::SnapshotCatchUp | Nemesis::MemberReplace
        )
    }
}

/// A cycle's faults as one name: `kill` or `kill+delay`.
pub fn names(ns: &[Nemesis]) -> String {
    ns.iter().map(|n| n.name()).collect::<Vec<_>>().join("+")
}

/// What must be undone at heal.
#[derive(Debug, Default)]
pub struct Injected {
    pub killed: Vec<usize>,
    /// Replicas whose fsyncs fail: they must have exited by the end of the hold.
    pub fsync_failed: Vec<usize>,
    pub paused: Vec<usize>,
    pub network_touched: bool,
    /// Replicas re-added as learners: promoted at heal.
    pub replaced: Vec<usize>,
}

impl Injected {
    fn merge(&mut self, other: Injected) {
        self.killed.extend(other.killed);
        self.fsync_failed.extend(other.fsync_failed);
        self.paused.extend(other.paused);
        self.network_touched |= other.network_touched;
        self.replaced.extend(other.replaced);
    }
}

/// Injects every fault of a cycle; `leader` is the current leader's index if known.
pub async fn inject_all(
    c: &mut Cluster,
    ns: &[Nemesis],
    leader: Option<usize>,
    rng: &mut StdRng,
    exe: &std::path::Path,
) -> anyhow::Result<Injected> {
    let mut done = Injected::default();
    for n in ns {
        done.merge(inject(c, *n, leader, rng, exe).await?);
    }
    Ok(done)
}

/// Injects `n`; `leader` is the current leader's index if known.
pub async fn inject(
    c: &mut Cluster,
    n: Nemesis,
    leader: Option<usize>,
    rng: &mut StdRng,
    exe: &std::path::Path,
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
        Nemesis::PartitionLeader | Nemesis::SnapshotCatchUp => {
            let v = match n {
                Nemesis::PartitionLeader => leader_or_random(rng),
                _ => {
                    let followers: Vec<usize> = (0..size).filter(|i| Some(*i) != leader).collect();
                    followers[rng.gen_range(0..followers.len())]
                }
            };
            let others: Vec<usize> = (0..size).filter(|i| *i != v).collect();
            c.cut(&[v], &others)?;
            done.network_touched = true;
        }
        Nemesis::Blackhole => {
            // Always through the proxies: the links accept and swallow, unlike the
            // namespace drops of the partitions.
            let v = random(rng);
            for o in (0..size).filter(|i| *i != v) {
                c.set_link(v, o, LinkMode::Blackhole);
                c.set_link(o, v, LinkMode::Blackhole);
            }
            done.network_touched = true;
        }
        Nemesis::Isolate => {
            c.isolate(leader_or_random(rng))?;
            done.network_touched = true;
        }
        Nemesis::MemberReplace => {
            let followers: Vec<usize> = (0..size).filter(|i| Some(*i) != leader).collect();
            let v = followers[rng.gen_range(0..followers.len())];
            c.kill(v);
            c.replace_member(v, exe).await?;
            done.replaced.push(v);
        }
        Nemesis::Split => {
            let mut ids: Vec<usize> = (0..size).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.gen_range(0..=i));
            }
            let minority = (size - 1) / 2;
            let (a, b) = ids.split_at(minority.max(1));
            c.cut(a, b)?;
            done.network_touched = true;
        }
        Nemesis::Bridge => {
            let b = random(rng);
            let rest: Vec<usize> = (0..size).filter(|i| *i != b).collect();
            let half = rest.len() / 2;
            c.cut(&rest[..half], &rest[half..])?;
            done.network_touched = true;
        }
        Nemesis::Delay => {
            c.set_all_links(LinkMode::Delay {
                base_ms: 50,
                jitter_ms: 25,
            });
            done.network_touched = true;
        }
        Nemesis::Drop => {
            c.set_all_links(LinkMode::Drop { p: 0.05 });
            done.network_touched = true;
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
pub async fn heal(
    c: &mut Cluster,
    injected: &Injected,
    exe: &std::path::Path,
) -> anyhow::Result<()> {
    if injected.network_touched {
        c.heal_network()?;
    }
    for p in &injected.paused {
        c.resume(*p);
    }
    for k in injected.killed.iter().chain(&injected.fsync_failed) {
        c.start(*k, exe)?;
    }
    for r in &injected.replaced {
        c.promote_member(*r, Duration::from_secs(60)).await?;
    }
    Ok(())
}
