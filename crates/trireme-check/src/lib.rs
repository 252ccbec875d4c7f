//! `trireme-check`: reusable invariant checkers for histories recorded under faults.
//!
//! A fault-injection harness drives clients against a cluster while it crashes and
//! partitions replicas, records what each client asked and was told (a [`History`]),
//! reads the final state, the full event history and every replica's hash after
//! healing, and hands all of it here. Every checker is pure: data in, violations out.
//!
//! It must not do I/O, spawn tasks or depend on tokio or any other Trireme crate: the
//! harness owns clusters, clocks and files; this crate owns only the judgement, so
//! every suite (in-process, real processes, simulation) can share it. The one
//! impurity is reading the monotonic clock for [`Budget::max_time`] (set it to `None`
//! for a fully deterministic check, e.g. under simulation).
//!
//! # Layout
//! - `history`: [`Operation`], [`Input`], [`Output`], the validated [`History`] (JSON
//!   via serde).
//! - `linearizability`: per-key register, Wing–Gong–Lowe search with a
//!   (linearized set, state) cache and a [`Budget`]; [`check`] and
//!   [`check_per_key`] give [`CheckResult`]; a [`Violation`] is shrunk to a small
//!   failing sub-history.
//! - `revisions`: [`check_revisions`]: a value is always read with its write's
//!   revision; acknowledged writes have unique revisions that never go backwards.
//! - `lost_writes`: [`check_lost_writes`] against the [`FinalState`]: no
//!   acknowledged write is newer than the final state, whose values were all written.
//! - `watch`: [`check_watch`]: a [`WatchRecord`] is an ordered, duplicate-free,
//!   gap-free, faithful copy of the authoritative [`Event`] list.
//! - `convergence`: [`check_convergence`] over [`ReplicaState`]s.
//! - [`Summary`]: the one-line verdict a test prints.
//!
//! # Semantics shared by every checker
//! - An operation with an unknown outcome (`ret` `None`) returns at +infinity and may
//!   or may not have taken effect; no checker may assume either.
//! - Writes use unique values, so each observed value names one write.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod convergence;
mod history;
mod linearizability;
mod lost_writes;
mod revisions;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use convergence::{check_convergence, Divergence, ReplicaState};
pub use history::{History, HistoryError, Input, Operation, Output};
pub use linearizability::{check, check_per_key, Budget, CheckResult, Violation};
pub use lost_writes::{check_lost_writes, FinalState, LostWrite};
pub use revisions::{check_revisions, RevisionViolation};
pub use watch::{
    check_watch, Event, EventKind, KeyRange, WatchEnd, WatchRecord, WatchViolation,
    WatchViolationKind,
};

/// Counts for one run, printed as one line:
/// `ops N (ok N, failed N, unknown N), lost acknowledged writes N, linearizability
/// violations N, watch gaps N`, followed by any other nonzero counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every request issued: `ok + failed + unknown`.
    pub ops: u64,
    /// Requests with a known outcome (recorded with a return time).
    pub ok: u64,
    /// Requests that definitely failed (the harness dropped them from the history).
    pub failed: u64,
    /// Requests whose outcome is unknown.
    pub unknown: u64,
    pub lost_writes: u64,
    /// Keys whose history is not linearizable.
    pub linearizability_violations: u64,
    /// Keys the linearizability search gave up on.
    pub linearizability_undecided: u64,
    /// Watch events missed.
    pub watch_gaps: u64,
    /// Watch events duplicated, reordered, wrong or invented, and bad compactions.
    pub watch_other: u64,
    pub revision_violations: u64,
    pub diverged_replicas: u64,
}

impl Summary {
    /// Starts a summary from a history and the number of definitely failed requests
    /// the harness did not record.
    pub fn new(history: &History, failed: u64) -> Self {
        let unknown = history.ops().iter().filter(|op| op.is_unknown()).count() as u64;
        let ok = history.len() as u64 - unknown;
        Self {
            ops: ok + failed + unknown,
            ok,
            failed,
            unknown,
            ..Self::default()
        }
    }

    pub fn record_linearizability(&mut self, per_key: &BTreeMap<String, CheckResult>) {
        for result in per_key.values() {
            match result {
                CheckResult::Violation(_) => self.linearizability_violations += 1,
                CheckResult::Unknown => self.linearizability_undecided += 1,
                CheckResult::Linearizable => {}
            }
        }
    }

    pub fn record_lost_writes(&mut self, lost: &[LostWrite]) {
        self.lost_writes += lost.len() as u64;
    }

    pub fn record_watch(&mut self, violations: &[WatchViolation]) {
        let gaps = violations.iter().filter(|v| v.is_gap()).count() as u64;
        self.watch_gaps += gaps;
        self.watch_other += violations.len() as u64 - gaps;
    }

    pub fn record_revisions(&mut self, violations: &[RevisionViolation]) {
        self.revision_violations += violations.len() as u64;
    }

    pub fn record_convergence(&mut self, divergences: &[Divergence]) {
        self.diverged_replicas += divergences.len() as u64;
    }

    /// Nothing wrong and nothing undecided.
    pub fn is_clean(&self) -> bool {
        self.lost_writes == 0
            && self.linearizability_violations == 0
            && self.linearizability_undecided == 0
            && self.watch_gaps == 0
            && self.watch_other == 0
            && self.revision_violations == 0
            && self.diverged_replicas == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ops {} (ok {}, failed {}, unknown {}), lost acknowledged writes {}, \
             linearizability violations {}, watch gaps {}",
            self.ops,
            self.ok,
            self.failed,
            self.unknown,
            self.lost_writes,
            self.linearizability_violations,
            self.watch_gaps
        )?;
        for (label, n) in [
            ("linearizability undecided", self.linearizability_undecided),
            ("other watch violations", self.watch_other),
            ("revision violations", self.revision_violations),
            ("diverged replicas", self.diverged_replicas),
        ] {
            if n > 0 {
                write!(f, ", {label} {n}")?;
            }
        }
        Ok(())
    }
}
