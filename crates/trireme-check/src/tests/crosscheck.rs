//! The search agrees with the brute-force reference on thousands of small random
//! histories, half of them deliberately corrupted; and it scales to long ones.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::brute;
use super::gen::{corrupt, generate, Config};
use crate::{
    check, check_lost_writes, check_revisions, Budget, CheckResult, History, Input, Output,
};

#[test]
fn search_agrees_with_brute_force_on_small_random_histories() {
    let mut rng = StdRng::seed_from_u64(0x7121_2e3e);
    let budget = Budget::default();
    let (mut linearizable, mut violations) = (0, 0);
    for case in 0..4000 {
        let config = Config {
            clients: rng.gen_range(1..=4),
            keys: if rng.gen_bool(0.8) { 1 } else { 2 },
            ops: rng.gen_range(1..=7),
            unknown: 0.2,
        };
        let mut ops = generate(&mut rng, &config).ops;
        let corrupted = rng.gen_bool(0.5);
        if corrupted {
            corrupt(&mut rng, &mut ops);
        }
        let expected = brute::linearizable(&ops);
        let history = History::new(ops.clone()).unwrap();
        match check(&history, &budget) {
            CheckResult::Linearizable => {
                assert!(expected, "case {case}: search says linearizable: {ops:#?}");
                linearizable += 1;
            }
            CheckResult::Violation(v) => {
                assert!(
                    !expected,
                    "case {case}: search says violation {v}: {ops:#?}"
                );
                assert!(v.ops.iter().all(|op| ops.contains(op)), "case {case}: {v}");
                assert!(v.ops.iter().all(|op| op.key == v.key), "case {case}: {v}");
                assert!(
                    !brute::linearizable(&v.ops),
                    "case {case}: shrunk too far: {v}"
                );
                violations += 1;
            }
            CheckResult::Unknown => panic!("case {case}: budget exhausted on {ops:#?}"),
        }
        if !corrupted {
            assert!(expected, "case {case}: generator produced a bad history");
        }
    }
    // Both verdicts are well represented, so agreement means something.
    assert!(
        linearizable > 1000 && violations > 400,
        "{linearizable} / {violations}"
    );
}

fn long_history(seed: u64) -> super::gen::Generated {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = Config {
        clients: 8,
        keys: 10,
        ops: 2000,
        unknown: 0.03,
    };
    generate(&mut rng, &config)
}

#[test]
fn long_concurrent_history_is_decided_within_budget() {
    let generated = long_history(42);
    let history = History::new(generated.ops).unwrap();
    assert_eq!(
        check(&history, &Budget::default()),
        CheckResult::Linearizable
    );
    // The generator's revisions and final state are consistent too.
    assert_eq!(check_revisions(&history), vec![]);
    assert_eq!(check_lost_writes(&history, &generated.final_state), vec![]);
}

#[test]
fn stale_read_in_long_history_is_found_and_shrunk() {
    let mut ops = long_history(7).ops;
    // A get that returns the value of a write overwritten by another write, both of
    // which returned before the get was called: a stale read for certain.
    let acked_value_write =
        |op: &crate::Operation| op.ret.is_some() && op.written_value().is_some();
    let target = (0..ops.len()).find_map(|g| {
        let get = &ops[g];
        if !matches!(get.output, Some(Output::Get { .. })) {
            return None;
        }
        let same_key = |op: &&crate::Operation| op.key == get.key && acked_value_write(op);
        let old = ops.iter().filter(same_key).find(|w1| {
            ops.iter().filter(same_key).any(|w2| {
                w2.call > w1.ret.unwrap_or(u64::MAX)
                    && w2.ret.is_some_and(|r| r < get.call)
                    && matches!(w2.input, Input::Put { .. })
            })
        })?;
        Some((g, old.written_value()?.to_string()))
    });
    let (g, stale) = target.unwrap();
    if let Some(Output::Get { value, .. }) = &mut ops[g].output {
        *value = Some(stale);
    }
    let history = History::new(ops).unwrap();
    match check(&history, &Budget::default()) {
        CheckResult::Violation(v) => {
            assert!(v.ops.len() <= 8, "{v}");
            assert!(v.ops.iter().any(|op| op.id == g as u64), "{v}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
