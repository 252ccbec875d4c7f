//! Transactions: compares of every target, branch choice, op visibility, refusals.

use super::*;

fn cmp(key: &str, end: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        target,
        result,
    }
}

fn guard(f: &mut Fixture, c: Compare) -> bool {
    let rev = f.store.revision();
    let t = f
        .txn(TxnRequest {
            compare: vec![c],
            success: vec![],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(t.revision, rev, "an empty branch writes nothing");
    t.succeeded
}

#[test]
fn compares_of_each_target_on_an_existing_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut f = Fixture::new();
    f.apply(Command::LeaseGrant {
        id: 9,
        ttl_seconds: 10,
    })
    .unwrap();
    f.put("x", "0"); // 1
    f.put("a", "m"); // 2
    f.apply(Command::Put(PutRequest {
        lease: 9,
        ..put_req("a", "m2")
    }))
    .unwrap(); // 3: a version 2, create 2, mod 3, lease 9
    let table = [
        (Version(2), Equal, true),
        (Version(2), NotEqual, false),
        (Version(3), Less, true),
        (Version(1), Greater, true),
        (Version(2), Less, false),
        (CreateRevision(2), Equal, true),
        (CreateRevision(3), Less, true),
        (ModRevision(3), Equal, true),
        (ModRevision(2), Greater, true),
        (ModRevision(4), Greater, false),
        (Value(b"m2".to_vec()), Equal, true),
        (Value(b"m".to_vec()), Greater, true),
        (Value(b"n".to_vec()), Less, true),
        (Value(b"m2".to_vec()), NotEqual, false),
        (Lease(9), Equal, true),
        (Lease(0), Greater, true),
        (Lease(10), Less, true),
    ];
    for (target, result, want) in table {
        let c = cmp("a", "", target.clone(), result);
        assert_eq!(guard(&mut f, c), want, "{target:?} {result:?}");
    }
}

#[test]
fn compares_on_a_missing_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut f = Fixture::new();
    f.put("b", "1");
    let table = [
        (Version(0), Equal, true),
        (CreateRevision(0), Equal, true),
        (ModRevision(0), Equal, true),
        (ModRevision(1), Less, true),
        (Lease(0), Equal, true),
        (Value(Vec::new()), Equal, false),
        (Value(Vec::new()), NotEqual, false),
        (Value(b"x".to_vec()), Less, false),
    ];
    for (target, result, want) in table {
        let c = cmp("a", "", target.clone(), result);
        assert_eq!(guard(&mut f, c), want, "{target:?} {result:?}");
    }
}

#[test]
fn range_compares_need_every_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut f = Fixture::new();
    f.put("k1", "v");
    f.put("k2", "v");
    f.put("k2", "v");
    assert!(guard(&mut f, cmp("k", "l", Version(0), Greater)));
    assert!(!guard(&mut f, cmp("k", "l", Version(1), Equal)));
    assert!(guard(&mut f, cmp("k", "l", Value(b"v".to_vec()), Equal)));
    assert!(guard(&mut f, cmp("k", "\0", Value(b"v".to_vec()), Equal)));
    // An empty range compares like a missing key.
    assert!(guard(&mut f, cmp("m", "n", Version(0), Equal)));
    assert!(!guard(&mut f, cmp("m", "n", Value(b"v".to_vec()), Equal)));
}

#[test]
fn txn_picks_a_branch_and_writes_at_one_revision() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    let req = |expect: &str| TxnRequest {
        compare: vec![cmp(
            "a",
            "",
            CompareTarget::Value(expect.as_bytes().to_vec()),
            CompareResult::Equal,
        )],
        success: vec![
            RequestOp::Put(put_req("a", "2")),
            RequestOp::Put(put_req("b", "2")),
            RequestOp::Range(range_req("a", "c", 0)),
        ],
        failure: vec![RequestOp::Range(range_req("a", "", 0))],
    };
    let t = f.txn(req("1")).unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 2);
    match &t.responses[..] {
        [ResponseOp::Put(p1), ResponseOp::Put(p2), ResponseOp::Range(r)] => {
            assert_eq!(p1.revision, 2);
            assert_eq!(p1.prev_kv, Some(kv("a", "1", 1, 1, 1)));
            assert_eq!(p2.revision, 2);
            // The range sees the txn's own writes.
            assert_eq!(r.kvs, vec![kv("a", "2", 1, 2, 2), kv("b", "2", 2, 2, 1)]);
            assert_eq!(r.revision, 2);
        }
        other => panic!("{other:?}"),
    }
    let ev = f.store.events(2, b"a", b"\0", 0, false).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(f.store.revision(), 2);
    let t = f.txn(req("1")).unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.revision, 2, "a read-only branch does not bump");
    match &t.responses[..] {
        [ResponseOp::Range(r)] => assert_eq!(r.kvs, vec![kv("a", "2", 1, 2, 2)]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn txn_delete_then_put_and_historical_range_inside() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("b", "1"); // 2
    let t = f
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::DeleteRange(delete_req("a", "", true)),
                RequestOp::Range(range_req("a", "\0", 1)),
                RequestOp::Range(range_req("a", "\0", 2)),
                RequestOp::Put(put_req("c", "1")),
                RequestOp::Range(range_req("a", "\0", 0)),
            ],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(t.revision, 3);
    let keys = |r: &ResponseOp| match r {
        ResponseOp::Range(r) => r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(keys(&t.responses[1]), vec![b"a".to_vec()]);
    assert_eq!(keys(&t.responses[2]), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(&t.responses[4]), vec![b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn duplicate_keys_in_a_txn_are_refused() {
    let mut f = Fixture::new();
    let two_puts = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("a", "2")),
        ],
        failure: vec![],
    };
    assert_eq!(f.txn(two_puts), Err(CommandError::DuplicateKeyInTxn));
    let put_in_delete = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: vec![
            RequestOp::DeleteRange(delete_req("a", "c", false)),
            RequestOp::Put(put_req("b", "2")),
        ],
    };
    assert_eq!(f.txn(put_in_delete), Err(CommandError::DuplicateKeyInTxn));
    let overlapping_deletes = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::DeleteRange(delete_req("a", "c", false)),
            RequestOp::DeleteRange(delete_req("b", "d", false)),
            RequestOp::Put(put_req("e", "1")),
        ],
        failure: vec![],
    };
    assert!(f.txn(overlapping_deletes).is_ok());
}

#[test]
fn refused_txn_writes_nothing() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let hash = f.store.hash().unwrap();
    // The second op fails (no such lease) after the first has written into the overlay.
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put_req("b", "1")),
            RequestOp::Put(PutRequest {
                lease: 5,
                ..put_req("c", "1")
            }),
        ],
        failure: vec![],
    };
    let results = f.apply_all(vec![Command::Txn(t), put("d", "1")]);
    assert_eq!(results[0], Err(CommandError::LeaseNotFound(5)));
    assert!(matches!(&results[1], Ok(CommandResult::Put(p)) if p.revision == 2));
    assert_eq!(f.get("b"), None);
    assert_eq!(f.keys("a", "\0", 0), ["a", "d"]);
    assert_ne!(f.store.hash().unwrap(), hash);
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put_req("b", "1")),
            RequestOp::Range(range_req("a", "", 99)),
        ],
        failure: vec![],
    };
    assert_eq!(f.txn(t), Err(CommandError::FutureRevision { current: 2 }));
    assert_eq!(f.get("b"), None);
    assert_eq!(f.store.revision(), 2);
}

#[test]
fn too_many_ops_and_empty_keys() {
    let mut f = Fixture::new();
    let ops: Vec<_> = (0..=MAX_TXN_OPS)
        .map(|i| RequestOp::Put(put_req(&format!("k{i}"), "v")))
        .collect();
    let t = TxnRequest {
        compare: vec![],
        success: ops[..MAX_TXN_OPS].to_vec(),
        failure: vec![],
    };
    assert!(f.txn(t).is_ok());
    let t = TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    assert_eq!(f.txn(t), Err(CommandError::TooManyOps));
    // An empty key in the branch not taken is refused too, as etcd validates both.
    let t = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: vec![RequestOp::Range(range_req("", "", 0))],
    };
    assert_eq!(f.txn(t), Err(CommandError::EmptyKey));
}
