//! Generates histories from a real register with random overlaps: each operation
//! takes effect at a random point inside its interval, so the clean history is
//! linearizable by construction (and its revisions consistent).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;

use crate::{FinalState, Input, Operation, Output};

pub struct Config {
    pub clients: u64,
    pub keys: usize,
    pub ops: usize,
    /// Chance an operation's outcome is unknown (half of those take effect).
    pub unknown: f64,
}

pub struct Generated {
    pub ops: Vec<Operation>,
    pub final_state: FinalState,
}

pub fn generate(rng: &mut StdRng, config: &Config) -> Generated {
    let mut cursor = vec![0u64; config.clients as usize];
    let mut written: Vec<Vec<String>> = vec![Vec::new(); config.keys];
    // (op, linearization point, tie-break, takes effect)
    let mut planned = Vec::with_capacity(config.ops);
    for id in 0..config.ops as u64 {
        let client = rng.gen_range(0..config.clients);
        let call = cursor[client as usize] + rng.gen_range(0..=4);
        let duration = rng.gen_range(0..=12);
        let point = call + rng.gen_range(0..=duration);
        let unknown = rng.gen_bool(config.unknown);
        let applies = !unknown || rng.gen_bool(0.5);
        cursor[client as usize] = call + duration + 1;
        let k = rng.gen_range(0..config.keys);
        let roll = rng.gen_range(0..100);
        let input = if roll < 35 {
            let value = format!("k{k}v{id}");
            written[k].push(value.clone());
            Input::Put { value }
        } else if roll < 70 {
            Input::Get
        } else if roll < 90 {
            let expected = match written[k].len() {
                0 => None,
                n if rng.gen_bool(0.6) => Some(written[k][n - 1].clone()),
                n => {
                    let i = rng.gen_range(0..=n);
                    written[k].get(i).cloned()
                }
            };
            let new = format!("k{k}v{id}");
            written[k].push(new.clone());
            Input::CompareAndSwap { expected, new }
        } else {
            Input::Delete
        };
        let op = Operation {
            id,
            client,
            key: format!("key{k}"),
            call,
            ret: (!unknown).then_some(call + duration),
            input,
            output: None,
        };
        planned.push((op, point, rng.gen::<u32>(), applies));
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].1, planned[i].2));
    let mut state: BTreeMap<String, Option<(String, u64)>> = BTreeMap::new();
    let mut revision = 1u64;
    for i in order {
        let (op, _, _, applies) = &mut planned[i];
        if !*applies {
            continue;
        }
        let current = state.entry(op.key.clone()).or_insert(None);
        let output = match &op.input {
            Input::Put { value } => {
                revision += 1;
                *current = Some((value.clone(), revision));
                Output::Put { revision }
            }
            Input::Get => Output::Get {
                value: current.as_ref().map(|(v, _)| v.clone()),
                mod_revision: current.as_ref().map_or(0, |(_, r)| *r),
            },
            Input::CompareAndSwap { expected, new } => {
                if current.as_ref().map(|(v, _)| v) == expected.as_ref() {
                    revision += 1;
                    *current = Some((new.clone(), revision));
                    Output::CompareAndSwap {
                        succeeded: true,
                        revision,
                    }
                } else {
                    Output::CompareAndSwap {
                        succeeded: false,
                        revision,
                    }
                }
            }
            Input::Delete => {
                let deleted = current.is_some();
                if deleted {
                    revision += 1;
                    *current = None;
                }
                Output::Delete { deleted, revision }
            }
        };
        if op.ret.is_some() {
            op.output = Some(output);
        }
    }
    let mut final_state = state;
    for (op, ..) in &planned {
        final_state.entry(op.key.clone()).or_insert(None);
    }
    Generated {
        ops: planned.into_iter().map(|(op, ..)| op).collect(),
        final_state,
    }
}

/// Changes one known read or conditional write's output, if there is one; the result
/// may or may not still be linearizable.
pub fn corrupt(rng: &mut StdRng, ops: &mut [Operation]) {
    let candidates: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            matches!(
                ops[i].output,
                Some(Output::Get { .. } | Output::CompareAndSwap { .. } | Output::Delete { .. })
            )
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let i = candidates[rng.gen_range(0..candidates.len())];
    let values: Vec<String> = ops
        .iter()
        .filter(|op| op.key == ops[i].key)
        .filter_map(|op| op.written_value().map(str::to_string))
        .collect();
    match ops[i].output.as_mut() {
        Some(Output::Get { value, .. }) => {
            let pick = rng.gen_range(0..=values.len());
            let other = values.get(pick).cloned();
            *value = if other == *value { None } else { other };
        }
        Some(Output::CompareAndSwap { succeeded, .. }) => *succeeded = !*succeeded,
        Some(Output::Delete { deleted, .. }) => *deleted = !*deleted,
        _ => {}
    }
}
