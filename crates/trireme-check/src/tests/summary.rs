use crate::{
    check_per_key, Budget, Divergence, History, Input, LostWrite, Operation, Output, Summary,
    WatchViolation, WatchViolationKind,
};

#[test]
fn summary_counts_and_prints() {
    let ops = vec![
        Operation {
            id: 1,
            client: 1,
            key: "k".into(),
            call: 0,
            ret: Some(5),
            input: Input::Get,
            output: Some(Output::Get {
                value: Some("ghost".into()),
                mod_revision: 3,
            }),
        },
        Operation {
            id: 2,
            client: 2,
            key: "k".into(),
            call: 0,
            ret: None,
            input: Input::Delete,
            output: None,
        },
    ];
    let history = History::new(ops).unwrap();
    let mut summary = Summary::new(&history, 3);
    assert!(summary.is_clean());
    assert_eq!(
        summary.to_string(),
        "ops 5 (ok 1, failed 3, unknown 1), lost acknowledged writes 0, \
         linearizability violations 0, watch gaps 0"
    );
    summary.record_linearizability(&check_per_key(&history, &Budget::default()));
    summary.record_lost_writes(&[LostWrite::NotRead { key: "k".into() }]);
    summary.record_watch(&[WatchViolation {
        watcher: 1,
        kind: WatchViolationKind::BadCompaction {
            next_revision: 3,
            compact_revision: 2,
        },
    }]);
    summary.record_convergence(&[Divergence::Revision {
        replica: 2,
        revision: 1,
        expected_revision: 2,
    }]);
    assert!(!summary.is_clean());
    assert_eq!(
        summary.to_string(),
        "ops 5 (ok 1, failed 3, unknown 1), lost acknowledged writes 1, \
         linearizability violations 1, watch gaps 0, other watch violations 1, \
         diverged replicas 1"
    );
}
