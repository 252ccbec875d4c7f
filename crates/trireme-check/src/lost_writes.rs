//! No acknowledged write is lost: the state read after healing is not older than any
//! acknowledged write, and holds a value that some write put there.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, Input, Operation};

/// The state of each key read after the cluster healed: `None` for an absent key,
/// else its value and mod_revision. It should hold every key the history touches.
pub type FinalState = BTreeMap<String, Option<(String, u64)>>;

/// An acknowledged write the final state does not account for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostWrite {
    #[error(
        "key {key:?}: acknowledged write op {op} at revision {revision} is lost: the final \
         state {} is from revision {final_revision}",
        presence(.final_absent)
    )]
    Lost {
        key: String,
        op: u64,
        revision: u64,
        /// The final mod_revision, or for an absent key the latest acknowledged
        /// delete's revision (0 if there is none).
        final_revision: u64,
        final_absent: bool,
    },
    #[error("key {key:?}: final value {value:?} (mod_revision {mod_revision}) was never written by any request")]
    UnwrittenFinalValue {
        key: String,
        value: String,
        mod_revision: u64,
    },
    #[error(
        "key {key:?}: final value {value:?} has mod_revision {mod_revision}, but op {op} \
         that wrote it was acknowledged at revision {revision}"
    )]
    FinalRevisionMismatch {
        key: String,
        value: String,
        mod_revision: u64,
        op: u64,
        revision: u64,
    },
    #[error("key {key:?} has acknowledged writes but is missing from the final state")]
    NotRead { key: String },
}

fn presence(absent: &bool) -> &'static str {
    if *absent {
        "(absent)"
    } else {
        "(present)"
    }
}

/// Compares the history against the final state; returns every lost write.
///
/// Sound under unknown outcomes: an unknown write may explain the final value, and
/// an unknown delete may explain an absent key at any revision.
pub fn check_lost_writes(history: &History, final_state: &FinalState) -> Vec<LostWrite> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops() {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut lost = Vec::new();
    for (key, ops) in by_key {
        match final_state.get(key) {
            None => {
                if ops.iter().any(|op| op.acked_write_revision().is_some()) {
                    lost.push(LostWrite::NotRead {
                        key: key.to_string(),
                    });
                }
            }
            Some(Some((value, mod_revision))) => {
                check_present(key, &ops, value, *mod_revision, &mut lost);
            }
            Some(None) => check_absent(key, &ops, &mut lost),
        }
    }
    lost
}

fn check_present(
    key: &str,
    ops: &[&Operation],
    value: &str,
    mod_revision: u64,
    lost: &mut Vec<LostWrite>,
) {
    match ops.iter().find(|op| op.written_value() == Some(value)) {
        None => lost.push(LostWrite::UnwrittenFinalValue {
            key: key.to_string(),
            value: value.to_string(),
            mod_revision,
        }),
        Some(writer) => {
            if let Some(revision) = writer.acked_write_revision() {
                if revision != mod_revision {
                    lost.push(LostWrite::FinalRevisionMismatch {
                        key: key.to_string(),
                        value: value.to_string(),
                        mod_revision,
                        op: writer.id,
                        revision,
                    });
                }
            }
        }
    }
    report_newer(key, ops, mod_revision, false, lost);
}

fn check_absent(key: &str, ops: &[&Operation], lost: &mut Vec<LostWrite>) {
    let unknown_delete = ops
        .iter()
        .any(|op| op.is_unknown() && matches!(op.input, Input::Delete));
    if unknown_delete {
        // It may have applied at any revision, after every acknowledged write.
        return;
    }
    let last_delete = ops
        .iter()
        .filter(|op| op.may_have_deleted())
        .filter_map(|op| op.acked_write_revision())
        .max()
        .unwrap_or(0);
    report_newer(key, ops, last_delete, true, lost);
}

fn report_newer(
    key: &str,
    ops: &[&Operation],
    final_revision: u64,
    final_absent: bool,
    lost: &mut Vec<LostWrite>,
) {
    let newer: BTreeSet<(u64, u64)> = ops
        .iter()
        .filter_map(|op| Some((op.acked_write_revision()?, op.id)))
        .filter(|&(revision, _)| revision > final_revision)
        .collect();
    lost.extend(newer.into_iter().map(|(revision, op)| LostWrite::Lost {
        key: key.to_string(),
        op,
        revision,
        final_revision,
        final_absent,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Output;

    fn op(id: u64, key: &str, input: Input, output: Option<Output>) -> Operation {
        Operation {
            id,
            client: 0,
            key: key.into(),
            call: id * 10,
            ret: output.as_ref().map(|_| id * 10 + 5),
            input,
            output,
        }
    }

    fn put(id: u64, key: &str, value: &str, revision: Option<u64>) -> Operation {
        op(
            id,
            key,
            Input::Put {
                value: value.into(),
            },
            revision.map(|revision| Output::Put { revision }),
        )
    }

    fn delete(id: u64, key: &str, revision: Option<u64>) -> Operation {
        op(
            id,
            key,
            Input::Delete,
            revision.map(|revision| Output::Delete {
                deleted: true,
                revision,
            }),
        )
    }

    fn history() -> History {
        History::new(vec![
            put(1, "a", "a1", Some(2)),
            put(2, "a", "a2", Some(3)),
            put(3, "a", "a3", None), // unknown: may or may not have applied
            put(4, "b", "b1", Some(4)),
            delete(5, "b", Some(5)),
            put(6, "c", "c1", Some(6)),
            delete(7, "c", None), // unknown delete
        ])
        .unwrap()
    }

    fn state(entries: &[(&str, Option<(&str, u64)>)]) -> FinalState {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|(v, r)| (v.to_string(), r))))
            .collect()
    }

    #[test]
    fn accounted_final_states_pass() {
        let h = history();
        // The unknown put applied, or did not; the unknown delete applied, or did not.
        for a in [("a3", 7), ("a2", 3)] {
            for c in [None, Some(("c1", 6))] {
                let s = state(&[("a", Some(a)), ("b", None), ("c", c)]);
                assert_eq!(check_lost_writes(&h, &s), vec![], "{s:?}");
            }
        }
    }

    #[test]
    fn lost_and_invented_writes_are_caught() {
        let h = history();
        // a rolled back to a1: a2 (revision 3) lost. b resurrected: delete 5 lost.
        let s = state(&[
            ("a", Some(("a1", 2))),
            ("b", Some(("b1", 4))),
            ("c", Some(("c1", 6))),
        ]);
        let lost = check_lost_writes(&h, &s);
        assert!(
            lost.iter().any(|l| matches!(
                l,
                LostWrite::Lost {
                    op: 2,
                    revision: 3,
                    final_revision: 2,
                    ..
                }
            )),
            "{lost:?}"
        );
        assert!(
            lost.iter()
                .any(|l| matches!(l, LostWrite::Lost { op: 5, .. })),
            "{lost:?}"
        );
        assert!(lost[0].to_string().contains("is lost"));

        // a absent though never deleted: every acknowledged write to it is lost.
        let s = state(&[("a", None), ("b", None), ("c", None)]);
        let lost = check_lost_writes(&h, &s);
        assert_eq!(lost.len(), 2, "{lost:?}");

        let s = state(&[("a", Some(("zz", 9))), ("b", None), ("c", None)]);
        let lost = check_lost_writes(&h, &s);
        assert!(
            matches!(&lost[0], LostWrite::UnwrittenFinalValue { value, .. } if value == "zz"),
            "{lost:?}"
        );

        let s = state(&[("a", Some(("a2", 4))), ("b", None), ("c", None)]);
        let lost = check_lost_writes(&h, &s);
        assert!(
            matches!(&lost[0], LostWrite::FinalRevisionMismatch { op: 2, .. }),
            "{lost:?}"
        );

        let s = state(&[("a", Some(("a2", 3))), ("c", None)]);
        assert_eq!(
            check_lost_writes(&h, &s),
            vec![LostWrite::NotRead { key: "b".into() }]
        );
    }
}
