//! Hand-written histories with known verdicts.

use super::brute;
use crate::{check, check_per_key, Budget, CheckResult, History, Input, Operation, Output};

fn op(id: u64, call: u64, ret: Option<u64>, input: Input, output: Option<Output>) -> Operation {
    Operation {
        id,
        client: id,
        key: "k".into(),
        call,
        ret,
        input,
        output: ret.and(output),
    }
}

fn put(id: u64, call: u64, ret: u64, value: &str) -> Operation {
    let input = Input::Put {
        value: value.into(),
    };
    op(
        id,
        call,
        Some(ret),
        input,
        Some(Output::Put { revision: id }),
    )
}

fn get(id: u64, call: u64, ret: u64, value: Option<&str>) -> Operation {
    let output = Output::Get {
        value: value.map(Into::into),
        mod_revision: 0,
    };
    op(id, call, Some(ret), Input::Get, Some(output))
}

fn cas(id: u64, call: u64, ret: u64, expected: Option<&str>, new: &str, ok: bool) -> Operation {
    let input = Input::CompareAndSwap {
        expected: expected.map(Into::into),
        new: new.into(),
    };
    let output = Output::CompareAndSwap {
        succeeded: ok,
        revision: id,
    };
    op(id, call, Some(ret), input, Some(output))
}

fn del(id: u64, call: u64, ret: u64, deleted: bool) -> Operation {
    let output = Output::Delete {
        deleted,
        revision: id,
    };
    op(id, call, Some(ret), Input::Delete, Some(output))
}

/// The same operation with its outcome unknown.
fn unknown(mut op: Operation) -> Operation {
    op.ret = None;
    op.output = None;
    op
}

fn on_key(mut op: Operation, key: &str) -> Operation {
    op.key = key.into();
    op
}

/// Checks, asserts the brute-force reference agrees, returns the violation's op ids.
fn verdict(ops: Vec<Operation>) -> Result<(), Vec<u64>> {
    let reference = brute::linearizable(&ops);
    let history = History::new(ops).unwrap();
    match check(&history, &Budget::default()) {
        CheckResult::Linearizable => {
            assert!(reference, "reference disagrees: not linearizable");
            Ok(())
        }
        CheckResult::Violation(v) => {
            assert!(!reference, "reference disagrees: linearizable; {v}");
            Err(v.ops.iter().map(|op| op.id).collect())
        }
        CheckResult::Unknown => panic!("budget exhausted"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    let ops = vec![
        get(1, 0, 1, None),
        put(2, 10, 20, "a"),
        get(3, 30, 40, Some("a")),
        cas(4, 50, 60, Some("a"), "b", true),
        cas(5, 70, 80, Some("a"), "c", false),
        get(6, 90, 100, Some("b")),
        del(7, 110, 120, true),
        get(8, 130, 140, None),
        del(9, 150, 160, false),
        cas(10, 170, 180, None, "d", true),
        get(11, 190, 200, Some("d")),
    ];
    assert_eq!(verdict(ops), Ok(()));
}

#[test]
fn concurrent_history_linearizable_in_one_order_only() {
    // Only b-write, read b, a-write, read a works: the later-starting write of b
    // must take effect first.
    let ops = vec![
        put(1, 0, 100, "a"),
        put(2, 10, 50, "b"),
        get(3, 5, 55, Some("b")),
        get(4, 110, 120, Some("a")),
    ];
    assert_eq!(verdict(ops.clone()), Ok(()));
    // Force the other order and it fails.
    let mut forced = ops;
    forced[0] = put(1, 0, 8, "a");
    assert!(verdict(forced).is_err());
}

#[test]
fn touching_intervals_overlap() {
    // The read's call time equals the write's return time: either order is allowed.
    assert_eq!(
        verdict(vec![put(1, 0, 10, "a"), get(2, 10, 20, None)]),
        Ok(())
    );
    assert!(verdict(vec![put(1, 0, 10, "a"), get(2, 11, 20, None)]).is_err());
}

#[test]
fn read_of_overwritten_value_is_a_violation() {
    let ops = vec![
        put(1, 0, 10, "a"),
        put(2, 20, 30, "b"),
        get(3, 40, 50, Some("a")),
    ];
    assert_eq!(verdict(ops), Err(vec![1, 2, 3]));
}

#[test]
fn stale_read_after_newer_read_is_a_violation() {
    let ops = vec![
        put(1, 0, 10, "a"),
        put(2, 20, 100, "b"),
        get(3, 30, 40, Some("b")),
        get(4, 50, 60, Some("a")),
    ];
    // No operation can go: without the newer read the stale one is fine.
    assert_eq!(verdict(ops), Err(vec![1, 2, 3, 4]));
}

#[test]
fn cas_on_a_value_no_longer_current_is_a_violation() {
    let ops = vec![
        put(1, 0, 10, "a"),
        put(2, 20, 30, "b"),
        cas(3, 40, 50, Some("a"), "c", true),
    ];
    assert_eq!(verdict(ops), Err(vec![1, 2, 3]));
    // A failed CAS on the current value is one too.
    let ops = vec![put(1, 0, 10, "a"), cas(2, 20, 30, Some("a"), "c", false)];
    assert_eq!(verdict(ops), Err(vec![1, 2]));
}

#[test]
fn delete_must_report_whether_the_key_existed() {
    assert!(verdict(vec![del(1, 0, 10, true)]).is_err());
    assert!(verdict(vec![put(1, 0, 10, "a"), del(2, 20, 30, false)]).is_err());
}

#[test]
fn violation_is_shrunk_to_the_ops_that_matter() {
    let ops = vec![
        put(1, 0, 5, "p"),
        get(2, 6, 8, Some("p")),
        put(3, 10, 20, "a"),
        get(4, 12, 25, Some("a")),
        put(5, 30, 40, "b"),
        get(6, 50, 60, Some("a")),
        put(7, 70, 80, "q"),
        get(8, 90, 100, Some("q")),
        on_key(put(9, 0, 100, "x"), "other"),
    ];
    assert_eq!(verdict(ops), Err(vec![3, 5, 6]));
}

#[test]
fn unknown_write_that_happened() {
    let ops = vec![
        put(1, 0, 10, "a"),
        unknown(put(2, 20, 0, "b")),
        get(3, 30, 40, Some("b")),
    ];
    assert_eq!(verdict(ops.clone()), Ok(()));
    // Once seen, it cannot un-happen.
    let mut later = ops;
    later.push(get(4, 50, 60, Some("a")));
    assert_eq!(verdict(later), Err(vec![1, 2, 3, 4]));
}

#[test]
fn unknown_write_that_did_not_happen() {
    let ops = vec![
        put(1, 0, 10, "a"),
        unknown(put(2, 20, 0, "b")),
        get(3, 30, 40, Some("a")),
        get(4, 50, 60, Some("a")),
        unknown(cas(5, 55, 0, Some("a"), "c", true)),
        unknown(get(6, 56, 0, None)),
        get(7, 70, 80, Some("a")),
    ];
    assert_eq!(verdict(ops), Ok(()));
}

#[test]
fn only_skipping_the_unknown_delete_makes_it_linearizable() {
    // Applying the delete anywhere before a read would make that read see nothing.
    let ops = vec![
        put(1, 0, 10, "a"),
        unknown(del(2, 5, 0, true)),
        get(3, 20, 30, Some("a")),
        get(4, 40, 50, Some("a")),
    ];
    assert_eq!(verdict(ops), Ok(()));
}

#[test]
fn unknown_write_cannot_take_effect_before_it_was_called() {
    let ops = vec![get(1, 0, 10, Some("b")), unknown(put(2, 20, 0, "b"))];
    assert_eq!(verdict(ops), Err(vec![1, 2]));
}

#[test]
fn keys_are_checked_independently() {
    let ops = vec![
        put(1, 0, 10, "a"),
        on_key(put(2, 20, 30, "x"), "other"),
        get(3, 40, 50, Some("a")),
        on_key(get(4, 40, 50, None), "third"),
    ];
    assert_eq!(verdict(ops.clone()), Ok(()));
    let mut bad = ops;
    bad.push(on_key(get(5, 60, 70, None), "other"));
    let per_key = check_per_key(&History::new(bad).unwrap(), &Budget::default());
    assert_eq!(per_key.len(), 3);
    assert_eq!(per_key["k"], CheckResult::Linearizable);
    assert!(matches!(&per_key["other"], CheckResult::Violation(v) if v.key == "other"));
}

#[test]
fn exhausted_budget_is_unknown_not_a_verdict() {
    let ops: Vec<Operation> = (0..20)
        .map(|i| put(i, 0, 100, &format!("v{i}")))
        .chain([get(20, 200, 210, Some("nope"))])
        .collect();
    let budget = Budget {
        max_steps_per_key: 50,
        ..Budget::default()
    };
    assert_eq!(
        check(&History::new(ops).unwrap(), &budget),
        CheckResult::Unknown
    );
}
