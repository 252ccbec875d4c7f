//! Compaction and the event history.

use super::*;

fn compact(f: &mut Fixture, revision: u64) -> ApplyResult {
    f.apply(Command::Compact { revision })
}

#[test]
fn events_from_a_revision_with_prev_kv() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("b", "1"); // 2
    f.put("a", "2"); // 3
    f.delete("a", ""); // 4
    f.put("a", "3"); // 5
    let ev = f.store.events(2, b"a", b"", 0, true).unwrap();
    assert_eq!(
        ev,
        vec![
            Event {
                kind: EventKind::Put,
                kv: kv("a", "2", 1, 3, 2),
                prev_kv: Some(kv("a", "1", 1, 1, 1)),
            },
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: b"a".to_vec(),
                    mod_revision: 4,
                    ..KeyValue::default()
                },
                prev_kv: Some(kv("a", "2", 1, 3, 2)),
            },
            Event {
                kind: EventKind::Put,
                kv: kv("a", "3", 5, 5, 1),
                prev_kv: None,
            },
        ]
    );
    let all = f.store.events(1, b"a", b"\0", 0, false).unwrap();
    let revs: Vec<_> = all.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [1, 2, 3, 4, 5]);
    assert!(all.iter().all(|e| e.prev_kv.is_none()));
    let limited = f.store.events(1, b"a", b"\0", 2, false).unwrap();
    assert_eq!(limited, all[..2].to_vec());
    assert!(f.store.events(6, b"a", b"\0", 0, false).unwrap().is_empty());
}

#[test]
fn compact_refuses_future_and_old_revisions() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.put("a", "2");
    assert_eq!(
        compact(&mut f, 3),
        Err(CommandError::FutureRevision { current: 2 })
    );
    assert_eq!(
        compact(&mut f, 2),
        Ok(CommandResult::Compact { revision: 2 })
    );
    assert_eq!(f.store.compact_revision(), 2);
    assert_eq!(f.store.revision(), 2, "compaction does not bump");
    assert_eq!(
        compact(&mut f, 2),
        Err(CommandError::Compacted {
            compact_revision: 2
        })
    );
    assert_eq!(
        compact(&mut f, 1),
        Err(CommandError::Compacted {
            compact_revision: 2
        })
    );
}

#[test]
fn compaction_keeps_what_reads_at_or_after_it_need() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("b", "1"); // 2
    f.put("a", "2"); // 3
    f.delete("b", ""); // 4
    f.put("c", "1"); // 5
    f.put("a", "3"); // 6
    let before: Vec<_> = (4..=6).map(|r| f.keys("a", "\0", r)).collect();
    let a_at = |f: &Fixture, r| f.get_at("a", r);
    let a4 = a_at(&f, 4);
    compact(&mut f, 4).unwrap();
    let after: Vec<_> = (4..=6).map(|r| f.keys("a", "\0", r)).collect();
    assert_eq!(before, after);
    assert_eq!(a_at(&f, 4), a4);
    for r in [1, 2, 3] {
        assert!(matches!(
            f.store.range(&range_req("a", "", r)),
            Err(ReadError::Compacted {
                compact_revision: 4
            })
        ));
    }
    assert!(matches!(
        f.store.events(3, b"a", b"\0", 0, false),
        Err(ReadError::Compacted {
            compact_revision: 4
        })
    ));
    let ev = f.store.events(4, b"a", b"\0", 0, true).unwrap();
    let revs: Vec<_> = ev.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [4, 5, 6]);
    // b's delete at 4 lost its previous version; a's put at 6 keeps its (rev 3).
    assert_eq!(ev[0].prev_kv, None);
    assert_eq!(ev[2].prev_kv, Some(kv("a", "2", 1, 3, 2)));
    // Exactly what is needed remains: a@3, a@6, c@5, and b's deletion at 4 (the
    // compaction revision: a watch from 4 still sees it); b's put is gone.
    let records = f
        .store
        .tree
        .scan_prefix(b"r")
        .map(|r| {
            let (k, v) = r.unwrap();
            let (rev, _) = crate::keys::parse_rev_key(&k).unwrap();
            let rec = crate::keys::parse_record(&v).unwrap();
            (
                String::from_utf8(rec.key.to_vec()).unwrap(),
                rev,
                rec.put.is_some(),
            )
        })
        .collect::<Vec<_>>();
    let want = [
        ("a", 3, true),
        ("b", 4, false),
        ("c", 5, true),
        ("a", 6, true),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|&(k, r, p)| (k.to_string(), r, p))
        .collect();
    assert_eq!(records, want);
    // The next compaction drops the deletion and b leaves the index.
    f.apply_all(vec![Command::Compact { revision: 5 }]);
    let has_b = |f: &Fixture| f.store.read_state().index.contains_key(&b"b"[..]);
    assert!(!has_b(&f));
    f.reopen();
    assert!(!has_b(&f));
    assert_eq!(f.store.events(5, b"a", b"\0", 0, false).unwrap().len(), 2);
}

#[test]
fn compaction_survives_reopen_and_reads_in_batch_see_it() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.put("a", "2");
    let r = f.apply_all(vec![
        Command::Compact { revision: 2 },
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![RequestOp::Range(range_req("a", "", 1))],
            failure: vec![],
        }),
    ]);
    assert_eq!(
        r[1],
        Err(CommandError::Compacted {
            compact_revision: 2
        })
    );
    f.reopen();
    assert_eq!(f.store.compact_revision(), 2);
    assert_eq!(f.get_at("a", 2), Some(kv("a", "2", 1, 2, 2)));
}
