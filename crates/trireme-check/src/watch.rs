//! A watch stream is an ordered, duplicate-free, gap-free, faithful copy of the
//! authoritative event history for its key range from its start revision.
//!
//! Several events may share a revision (a transaction, a range delete); the order of
//! the authoritative list decides their order. Events of one revision are delivered
//! together, so "no gap up to the last received revision" includes every event of
//! that revision.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as the store's event history or a watcher reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub key: String,
    pub kind: EventKind,
    /// The value put; `None` for a delete.
    pub value: Option<String>,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {:?} at revision {}",
            self.kind, self.key, self.revision
        )?;
        if let Some(value) = &self.value {
            write!(f, " = {value:?}")?;
        }
        Ok(())
    }
}

/// The keys a watcher watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRange {
    /// Exactly one key.
    Key(String),
    /// Every key starting with this prefix.
    Prefix(String),
    /// `[start, end)`; `end` `None`: every key `>= start`.
    Range { start: String, end: Option<String> },
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p.as_str()),
            KeyRange::Range { start, end } => {
                key >= start.as_str() && end.as_deref().is_none_or(|end| key < end)
            }
        }
    }
}

/// How a watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEnd {
    /// The client stopped it: only a correct prefix is required.
    Stopped,
    /// The harness knows the watcher had caught up through this revision (it waited
    /// for it): every event up to it must have arrived.
    CaughtUp { through_revision: u64 },
    /// The server cancelled it because the revision it needed next was compacted:
    /// fine if that is true and what it got before is a correct prefix.
    Compacted { compact_revision: u64 },
}

/// What one watcher received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// Names the watcher in reports.
    pub watcher: u64,
    pub range: KeyRange,
    /// The revision the watch started from (inclusive).
    pub start_revision: u64,
    pub received: Vec<Event>,
    pub end: WatchEnd,
}

/// One way a watch stream differs from the authoritative history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("watcher {watcher}: {kind}")]
pub struct WatchViolation {
    pub watcher: u64,
    pub kind: WatchViolationKind,
}

impl WatchViolation {
    /// A missed event (as opposed to a wrong, duplicated or misordered one).
    pub fn is_gap(&self) -> bool {
        matches!(self.kind, WatchViolationKind::Gap { .. })
    }
}

/// `position` is the index in the received stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchViolationKind {
    #[error("gap: never received {missing}")]
    Gap { missing: Event },
    #[error("duplicate: event #{position} ({event}) was already received")]
    Duplicate { position: usize, event: Event },
    #[error("reordered: event #{position} ({event}) came after revision {previous_revision}")]
    Reordered {
        position: usize,
        event: Event,
        previous_revision: u64,
    },
    #[error("out of range: event #{position} ({event}) is outside the watched keys or before the start revision")]
    OutOfRange { position: usize, event: Event },
    #[error("unexpected: event #{position} ({event}) is not in the authoritative history")]
    Unexpected { position: usize, event: Event },
    #[error("wrong event #{position}: received {received}, history has {expected}")]
    Mismatch {
        position: usize,
        received: Event,
        expected: Event,
    },
    #[error("cancelled as compacted at {compact_revision}, but the next revision it needed, {next_revision}, was not compacted")]
    BadCompaction {
        next_revision: u64,
        compact_revision: u64,
    },
}

/// Checks one watcher against the authoritative event list (ordered by revision; it
/// must cover every revision from the watcher's start revision).
pub fn check_watch(authoritative: &[Event], watch: &WatchRecord) -> Vec<WatchViolation> {
    let mut order: Vec<&Event> = authoritative.iter().collect();
    order.sort_by_key(|e| e.revision); // stable: keeps the order within a revision
    let index: HashMap<(u64, &str), usize> = order
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.revision, e.key.as_str()), i))
        .collect();
    let mut kinds = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut last: Option<usize> = None;
    for (position, event) in watch.received.iter().enumerate() {
        if !watch.range.contains(&event.key) || event.revision < watch.start_revision {
            kinds.push(WatchViolationKind::OutOfRange {
                position,
                event: event.clone(),
            });
            continue;
        }
        let Some(&i) = index.get(&(event.revision, event.key.as_str())) else {
            kinds.push(WatchViolationKind::Unexpected {
                position,
                event: event.clone(),
            });
            continue;
        };
        if !seen.insert(i) {
            kinds.push(WatchViolationKind::Duplicate {
                position,
                event: event.clone(),
            });
            continue;
        }
        if let Some(l) = last.filter(|&l| i < l) {
            kinds.push(WatchViolationKind::Reordered {
                position,
                event: event.clone(),
                previous_revision: order[l].revision,
            });
        }
        if order[i] != event {
            kinds.push(WatchViolationKind::Mismatch {
                position,
                received: event.clone(),
                expected: order[i].clone(),
            });
        }
        last = Some(last.map_or(i, |l| l.max(i)));
    }
    let last_revision = last.map(|l| order[l].revision);
    let through = match watch.end {
        WatchEnd::CaughtUp { through_revision } => {
            Some(last_revision.map_or(through_revision, |r| r.max(through_revision)))
        }
        WatchEnd::Stopped | WatchEnd::Compacted { .. } => last_revision,
    };
    if let Some(through) = through {
        for (i, event) in order.iter().enumerate() {
            if event.revision >= watch.start_revision
                && event.revision <= through
                && watch.range.contains(&event.key)
                && !seen.contains(&i)
            {
                kinds.push(WatchViolationKind::Gap {
                    missing: (*event).clone(),
                });
            }
        }
    }
    if let WatchEnd::Compacted { compact_revision } = watch.end {
        let next_revision = last_revision.map_or(watch.start_revision, |r| r + 1);
        if next_revision >= compact_revision {
            kinds.push(WatchViolationKind::BadCompaction {
                next_revision,
                compact_revision,
            });
        }
    }
    kinds
        .into_iter()
        .map(|kind| WatchViolation {
            watcher: watch.watcher,
            kind,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, key: &str, value: &str) -> Event {
        Event {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: Some(value.into()),
        }
    }

    fn del(revision: u64, key: &str) -> Event {
        Event {
            revision,
            key: key.into(),
            kind: EventKind::Delete,
            value: None,
        }
    }

    /// Revision 5 is a transaction touching two keys.
    fn history() -> Vec<Event> {
        vec![
            put(2, "a/1", "x"),
            put(3, "b", "y"),
            put(4, "a/2", "z"),
            put(5, "a/1", "x2"),
            del(5, "a/2"),
            del(6, "a/1"),
        ]
    }

    fn watch(start: u64, received: Vec<Event>, end: WatchEnd) -> WatchRecord {
        WatchRecord {
            watcher: 7,
            range: KeyRange::Prefix("a/".into()),
            start_revision: start,
            received,
            end,
        }
    }

    #[test]
    fn correct_streams_pass() {
        let h = history();
        let all = vec![
            h[0].clone(),
            h[2].clone(),
            h[3].clone(),
            h[4].clone(),
            h[5].clone(),
        ];
        let end = WatchEnd::CaughtUp {
            through_revision: 6,
        };
        assert_eq!(check_watch(&h, &watch(1, all.clone(), end)), vec![]);
        assert_eq!(check_watch(&h, &watch(4, all[1..].to_vec(), end)), vec![]);
        // A prefix is fine when stopped, and when cancelled by a real compaction.
        assert_eq!(
            check_watch(&h, &watch(1, all[..2].to_vec(), WatchEnd::Stopped)),
            vec![]
        );
        let compacted = WatchEnd::Compacted {
            compact_revision: 6,
        };
        assert_eq!(
            check_watch(&h, &watch(1, all[..2].to_vec(), compacted)),
            vec![]
        );
        let r = KeyRange::Range {
            start: "a/2".into(),
            end: Some("b".into()),
        };
        let ranged = WatchRecord {
            range: r,
            ..watch(1, vec![h[2].clone(), h[4].clone()], end)
        };
        assert_eq!(check_watch(&h, &ranged), vec![]);
    }

    #[test]
    fn broken_streams_are_caught() {
        let h = history();
        let kinds = |w: WatchRecord| -> Vec<WatchViolationKind> {
            check_watch(&h, &w).into_iter().map(|v| v.kind).collect()
        };
        // Gap: revision 4 skipped.
        let v = check_watch(
            &h,
            &watch(
                1,
                vec![h[0].clone(), h[3].clone(), h[4].clone()],
                WatchEnd::Stopped,
            ),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].is_gap());
        assert!(
            v[0].to_string()
                .starts_with("watcher 7: gap: never received Put \"a/2\" at revision 4"),
            "{}",
            v[0]
        );
        // Non-atomic revision: half of revision 5.
        let v = kinds(watch(
            4,
            vec![h[2].clone(), h[3].clone()],
            WatchEnd::Stopped,
        ));
        assert_eq!(
            v,
            vec![WatchViolationKind::Gap {
                missing: h[4].clone()
            }]
        );
        // Caught up through 6 but the last event never came.
        let v = kinds(watch(
            5,
            vec![h[3].clone(), h[4].clone()],
            WatchEnd::CaughtUp {
                through_revision: 6,
            },
        ));
        assert_eq!(
            v,
            vec![WatchViolationKind::Gap {
                missing: h[5].clone()
            }]
        );
        // Duplicate, reordered.
        let v = kinds(watch(
            1,
            vec![h[0].clone(), h[0].clone(), h[2].clone()],
            WatchEnd::Stopped,
        ));
        assert!(
            matches!(v[..], [WatchViolationKind::Duplicate { position: 1, .. }]),
            "{v:?}"
        );
        let v = kinds(watch(
            1,
            vec![h[2].clone(), h[0].clone()],
            WatchEnd::Stopped,
        ));
        assert!(
            matches!(
                v[..],
                [WatchViolationKind::Reordered {
                    position: 1,
                    previous_revision: 4,
                    ..
                }]
            ),
            "{v:?}"
        );
        // Wrong value, event of another key, event before the start, invented event.
        let v = kinds(watch(1, vec![put(2, "a/1", "WRONG")], WatchEnd::Stopped));
        assert!(
            matches!(v[..], [WatchViolationKind::Mismatch { .. }]),
            "{v:?}"
        );
        let v = kinds(watch(
            1,
            vec![h[0].clone(), h[1].clone()],
            WatchEnd::Stopped,
        ));
        assert!(
            matches!(v[..], [WatchViolationKind::OutOfRange { position: 1, .. }]),
            "{v:?}"
        );
        let v = kinds(watch(3, vec![h[0].clone()], WatchEnd::Stopped));
        assert!(
            matches!(v[..], [WatchViolationKind::OutOfRange { position: 0, .. }]),
            "{v:?}"
        );
        let v = kinds(watch(1, vec![put(9, "a/9", "new")], WatchEnd::Stopped));
        assert!(
            matches!(v[..], [WatchViolationKind::Unexpected { .. }]),
            "{v:?}"
        );
        // Cancelled as compacted though it needed revision 5 and only 4 was compacted.
        let v = kinds(watch(
            1,
            vec![h[0].clone(), h[2].clone()],
            WatchEnd::Compacted {
                compact_revision: 4,
            },
        ));
        assert_eq!(
            v,
            vec![WatchViolationKind::BadCompaction {
                next_revision: 5,
                compact_revision: 4
            }]
        );
    }
}
