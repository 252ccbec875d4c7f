//! Cheap revision consistency, beside the register model (which ignores revisions).
//!
//! Per key: the same value is always read with the same `mod_revision`, and that is the
//! revision its write was acknowledged with (when the write's outcome is known); a
//! value is written by at most one request. Across the whole history: two different
//! acknowledged writes never share a revision, and an acknowledged write that started
//! after another one was acknowledged has a greater revision (revisions never go
//! backwards in real time).

use std::collections::{BTreeMap, HashMap};

use crate::history::{History, Operation, Output};

/// One inconsistency between revisions in a history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionViolation {
    #[error(
        "key {key:?}: value {value:?} read with mod_revision {first_mod_revision} by op \
         {first_op} but with {mod_revision} by op {op}"
    )]
    InconsistentModRevision {
        key: String,
        value: String,
        first_op: u64,
        first_mod_revision: u64,
        op: u64,
        mod_revision: u64,
    },
    #[error(
        "key {key:?}: value {value:?} was written at revision {write_revision} by op \
         {write_op} but read with mod_revision {read_mod_revision} by op {read_op}"
    )]
    ModRevisionMismatch {
        key: String,
        value: String,
        write_op: u64,
        write_revision: u64,
        read_op: u64,
        read_mod_revision: u64,
    },
    #[error("acknowledged writes {first_op} and {op} both got revision {revision}")]
    DuplicateRevision {
        revision: u64,
        first_op: u64,
        op: u64,
    },
    #[error(
        "revision went backwards: op {later_op} started after op {earlier_op} was \
         acknowledged at revision {earlier_revision}, yet got revision {later_revision}"
    )]
    RevisionWentBackwards {
        earlier_op: u64,
        earlier_revision: u64,
        later_op: u64,
        later_revision: u64,
    },
    #[error("key {key:?}: value {value:?} written by both op {first_op} and op {op} (harness must use unique values)")]
    DuplicateValue {
        key: String,
        value: String,
        first_op: u64,
        op: u64,
    },
}

/// Checks every revision rule; returns every violation found.
pub fn check_revisions(history: &History) -> Vec<RevisionViolation> {
    let mut violations = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops() {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_key(key, &ops, &mut violations);
    }
    check_unique_revisions(history.ops(), &mut violations);
    check_real_time_order(history.ops(), &mut violations);
    violations
}

fn check_key(key: &str, ops: &[&Operation], violations: &mut Vec<RevisionViolation>) {
    // value -> (writer op, acknowledged revision if known)
    let mut writers: HashMap<&str, (u64, Option<u64>)> = HashMap::new();
    for op in ops {
        if let Some(value) = op.written_value() {
            let revision = op.acked_write_revision();
            if let Some((first_op, _)) = writers.insert(value, (op.id, revision)) {
                violations.push(RevisionViolation::DuplicateValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    first_op,
                    op: op.id,
                });
            }
        }
    }
    // value -> (first reader, its mod_revision)
    let mut reads: HashMap<&str, (u64, u64)> = HashMap::new();
    for op in ops {
        let Some(Output::Get {
            value: Some(value),
            mod_revision,
        }) = &op.output
        else {
            continue;
        };
        let (first_op, first_mod_revision) = *reads.entry(value).or_insert((op.id, *mod_revision));
        if first_mod_revision != *mod_revision {
            violations.push(RevisionViolation::InconsistentModRevision {
                key: key.to_string(),
                value: value.clone(),
                first_op,
                first_mod_revision,
                op: op.id,
                mod_revision: *mod_revision,
            });
        }
        if let Some(&(write_op, Some(write_revision))) = writers.get(value.as_str()) {
            if write_revision != *mod_revision {
                violations.push(RevisionViolation::ModRevisionMismatch {
                    key: key.to_string(),
                    value: value.clone(),
                    write_op,
                    write_revision,
                    read_op: op.id,
                    read_mod_revision: *mod_revision,
                });
            }
        }
    }
}

fn check_unique_revisions(ops: &[Operation], violations: &mut Vec<RevisionViolation>) {
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        if let Some(revision) = op.acked_write_revision() {
            if let Some(first_op) = seen.insert(revision, op.id) {
                violations.push(RevisionViolation::DuplicateRevision {
                    revision,
                    first_op,
                    op: op.id,
                });
            }
        }
    }
}

/// Sweeps writes by call time, keeping the greatest revision of writes that returned
/// strictly before the current call.
fn check_real_time_order(ops: &[Operation], violations: &mut Vec<RevisionViolation>) {
    // (call, ret, revision, id) of acknowledged writes.
    let writes: Vec<(u64, u64, u64, u64)> = ops
        .iter()
        .filter_map(|op| Some((op.call, op.ret?, op.acked_write_revision()?, op.id)))
        .collect();
    let mut by_call = writes.clone();
    by_call.sort_unstable();
    let mut by_ret = writes;
    by_ret.sort_unstable_by_key(|&(_, ret, _, _)| ret);
    let mut done = by_ret.iter().peekable();
    let mut max_done: Option<(u64, u64)> = None; // (revision, op)
    for &(call, _, revision, id) in &by_call {
        while let Some(&&(_, ret, r, op)) = done.peek() {
            if ret >= call {
                break;
            }
            if max_done.is_none_or(|(m, _)| r > m) {
                max_done = Some((r, op));
            }
            done.next();
        }
        if let Some((earlier_revision, earlier_op)) = max_done {
            if earlier_revision > revision {
                violations.push(RevisionViolation::RevisionWentBackwards {
                    earlier_op,
                    earlier_revision,
                    later_op: id,
                    later_revision: revision,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Input;

    fn op(id: u64, key: &str, call: u64, ret: u64, input: Input, output: Output) -> Operation {
        Operation {
            id,
            client: id,
            key: key.into(),
            call,
            ret: Some(ret),
            input,
            output: Some(output),
        }
    }

    fn put(id: u64, key: &str, call: u64, ret: u64, value: &str, revision: u64) -> Operation {
        op(
            id,
            key,
            call,
            ret,
            Input::Put {
                value: value.into(),
            },
            Output::Put { revision },
        )
    }

    fn get(id: u64, key: &str, call: u64, ret: u64, value: &str, mod_revision: u64) -> Operation {
        op(
            id,
            key,
            call,
            ret,
            Input::Get,
            Output::Get {
                value: Some(value.into()),
                mod_revision,
            },
        )
    }

    fn clean() -> Vec<Operation> {
        vec![
            put(1, "a", 0, 10, "a1", 2),
            put(2, "b", 20, 30, "b1", 3),
            get(3, "a", 40, 50, "a1", 2),
            op(
                4,
                "a",
                60,
                70,
                Input::CompareAndSwap {
                    expected: Some("a1".into()),
                    new: "a2".into(),
                },
                Output::CompareAndSwap {
                    succeeded: true,
                    revision: 4,
                },
            ),
            get(5, "a", 80, 90, "a2", 4),
            get(6, "a", 85, 95, "a2", 4),
            // A failed CAS and a no-op delete report the header revision: not unique.
            op(
                7,
                "b",
                100,
                110,
                Input::CompareAndSwap {
                    expected: None,
                    new: "b2".into(),
                },
                Output::CompareAndSwap {
                    succeeded: false,
                    revision: 4,
                },
            ),
            op(
                8,
                "c",
                120,
                130,
                Input::Delete,
                Output::Delete {
                    deleted: false,
                    revision: 4,
                },
            ),
        ]
    }

    #[test]
    fn consistent_revisions_pass() {
        let history = History::new(clean()).unwrap();
        assert_eq!(check_revisions(&history), vec![]);
    }

    #[test]
    fn each_inconsistency_is_caught() {
        let mut ops = clean();
        ops[5] = get(6, "a", 85, 95, "a2", 5); // same value, other mod_revision
        let v = check_revisions(&History::new(ops).unwrap());
        assert!(
            v.iter()
                .any(|v| matches!(v, RevisionViolation::InconsistentModRevision { op: 6, .. })),
            "{v:?}"
        );
        assert!(
            v.iter().any(|v| matches!(
                v,
                RevisionViolation::ModRevisionMismatch {
                    read_op: 6,
                    write_op: 4,
                    ..
                }
            )),
            "{v:?}"
        );

        let mut ops = clean();
        ops[1] = put(2, "b", 20, 30, "b1", 2); // shares revision 2 with op 1
        let v = check_revisions(&History::new(ops).unwrap());
        assert!(
            v.contains(&RevisionViolation::DuplicateRevision {
                revision: 2,
                first_op: 1,
                op: 2
            }),
            "{v:?}"
        );

        let mut ops = clean();
        ops[1] = put(2, "b", 20, 30, "b1", 1); // started after op 1 acked at 2
        let v = check_revisions(&History::new(ops).unwrap());
        assert!(
            v.iter().any(|v| matches!(
                v,
                RevisionViolation::RevisionWentBackwards {
                    earlier_op: 1,
                    later_op: 2,
                    ..
                }
            )),
            "{v:?}"
        );
        assert!(v.iter().any(|v| v.to_string().contains("went backwards")));

        let mut ops = clean();
        ops.push(put(9, "a", 200, 210, "a1", 9));
        let v = check_revisions(&History::new(ops).unwrap());
        assert!(
            v.iter()
                .any(|v| matches!(v, RevisionViolation::DuplicateValue { op: 9, .. })),
            "{v:?}"
        );
    }
}
