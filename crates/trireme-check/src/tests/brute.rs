//! The reference: try every order of the operations that respects real time, with
//! its own register model. Exponential; for histories of a handful of operations.

use std::collections::BTreeMap;

use crate::{Input, Operation, Output};

/// Every key's operations have a legal sequential order.
pub fn linearizable(ops: &[Operation]) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key.values().all(|ops| {
        let mut placed = vec![false; ops.len()];
        order_exists(ops, &mut placed, &None)
    })
}

fn order_exists(ops: &[&Operation], placed: &mut [bool], state: &Option<String>) -> bool {
    // Unknown operations left over never happened.
    if ops
        .iter()
        .zip(placed.iter())
        .all(|(op, p)| *p || op.ret.is_none())
    {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        // Nothing unplaced may have returned before this one was called.
        let blocked =
            (0..ops.len()).any(|j| !placed[j] && ops[j].ret.is_some_and(|r| r < ops[i].call));
        if blocked {
            continue;
        }
        if let Some(next) = model(state, ops[i]) {
            placed[i] = true;
            if order_exists(ops, placed, &next) {
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

fn model(state: &Option<String>, op: &Operation) -> Option<Option<String>> {
    match (&op.input, &op.output) {
        (Input::Put { value }, _) => Some(Some(value.clone())),
        (Input::Get, None) => Some(state.clone()),
        (Input::Get, Some(Output::Get { value, .. })) => (value == state).then(|| state.clone()),
        (Input::CompareAndSwap { expected, new }, output) => {
            let matches = state == expected;
            match output {
                None => Some(if matches {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                Some(Output::CompareAndSwap { succeeded, .. }) if *succeeded == matches => {
                    Some(if matches {
                        Some(new.clone())
                    } else {
                        state.clone()
                    })
                }
                _ => None,
            }
        }
        (Input::Delete, None) => Some(None),
        (Input::Delete, Some(Output::Delete { deleted, .. })) => {
            (*deleted == state.is_some()).then_some(None)
        }
        _ => None,
    }
}
