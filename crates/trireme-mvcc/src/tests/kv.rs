//! Revisions, versions, ranges and historical reads.

use super::*;

#[test]
fn empty_store_is_at_revision_zero() {
    let f = Fixture::new();
    assert_eq!(f.store.revision(), 0);
    assert_eq!(f.store.compact_revision(), 0);
    assert_eq!(f.store.applied(), AppliedState::default());
    let r = f.store.range(&range_req("a", "\0", 0)).unwrap();
    assert_eq!(r, RangeResponse::default());
}

#[test]
fn put_bumps_revision_and_version() {
    let mut f = Fixture::new();
    let r1 = f.put("a", "1");
    assert_eq!(
        r1,
        PutResponse {
            revision: 1,
            prev_kv: None
        }
    );
    let r2 = f.put("b", "x");
    assert_eq!(r2.revision, 2);
    let r3 = f.put("a", "2");
    assert_eq!(r3.revision, 3);
    assert_eq!(r3.prev_kv, Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(f.get("a"), Some(kv("a", "2", 1, 3, 2)));
    assert_eq!(f.store.revision(), 3);
}

#[test]
fn delete_resets_version_and_bumps_only_when_it_deletes() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.put("a", "2");
    let d = f.delete("a", "");
    assert_eq!(d.revision, 3);
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs, vec![kv("a", "2", 1, 2, 2)]);
    assert_eq!(f.get("a"), None);
    let none = f.delete("a", "");
    assert_eq!((none.revision, none.deleted), (3, 0));
    assert_eq!(f.store.revision(), 3);
    let p = f.put("a", "3");
    assert_eq!(p.prev_kv, None);
    assert_eq!(f.get("a"), Some(kv("a", "3", 4, 4, 1)));
}

#[test]
fn delete_range_deletes_in_key_order_with_sub_revisions() {
    let mut f = Fixture::new();
    for k in ["a", "b", "c", "d"] {
        f.put(k, k);
    }
    let d = f.delete("b", "d");
    assert_eq!(d.deleted, 2);
    assert_eq!(d.revision, 5);
    let ev = f.store.events(5, b"a", b"\0", 0, false).unwrap();
    let keys: Vec<_> = ev.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    assert!(ev
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 5));
    assert_eq!(f.keys("a", "\0", 0), ["a", "d"]);
}

#[test]
fn empty_keys_are_refused() {
    let mut f = Fixture::new();
    assert_eq!(f.apply(put("", "v")), Err(CommandError::EmptyKey));
    assert_eq!(
        f.apply(delete("", "\0", false)),
        Err(CommandError::EmptyKey)
    );
    assert!(matches!(
        f.store.range(&range_req("", "", 0)),
        Err(ReadError::EmptyKey)
    ));
    assert_eq!(f.store.revision(), 0);
    assert_eq!(
        f.store.applied().index,
        2,
        "refused commands still count as applied"
    );
}

#[test]
fn range_end_conventions() {
    let mut f = Fixture::new();
    for k in ["\u{1}", "a", "a\0", "ab", "b", "c"] {
        f.put(k, "v");
    }
    assert_eq!(f.keys("a", "", 0), ["a"]);
    assert_eq!(f.keys("a", "b", 0), ["a", "a\0", "ab"]);
    assert_eq!(f.keys("a", "\0", 0), ["a", "a\0", "ab", "b", "c"]);
    assert_eq!(f.keys("\0", "\0", 0), ["\u{1}", "a", "a\0", "ab", "b", "c"]);
    assert_eq!(
        f.keys("a", &String::from_utf8(prefix_end(b"a")).unwrap(), 0),
        ["a", "a\0", "ab"]
    );
    assert!(
        f.keys("b", "a", 0).is_empty(),
        "range_end < key matches nothing"
    );
    assert!(f.keys("b", "b", 0).is_empty());
    assert!(f.keys("zz", "", 0).is_empty());
}

#[test]
fn range_limit_count_keys_only_count_only() {
    let mut f = Fixture::new();
    for k in ["a", "b", "c", "d"] {
        f.put(k, "value");
    }
    let mut req = range_req("a", "\0", 0);
    req.limit = 2;
    let r = f.store.range(&req).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 4);
    assert_eq!(r.revision, 4);
    req.limit = 4;
    let r = f.store.range(&req).unwrap();
    assert!(!r.more);
    assert_eq!(r.kvs.len(), 4);
    req.limit = 0;
    req.keys_only = true;
    let r = f.store.range(&req).unwrap();
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    req.count_only = true;
    let r = f.store.range(&req).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!((r.count, r.more), (4, false));
}

#[test]
fn historical_reads_see_the_past() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("b", "1"); // 2
    f.put("a", "2"); // 3
    f.delete("b", ""); // 4
    f.put("c", "1"); // 5
    assert_eq!(f.get_at("a", 1), Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(f.get_at("a", 2), Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(f.get_at("a", 3), Some(kv("a", "2", 1, 3, 2)));
    assert_eq!(f.get_at("b", 3), Some(kv("b", "1", 2, 2, 1)));
    assert_eq!(f.get_at("b", 4), None);
    assert_eq!(f.keys("a", "\0", 2), ["a", "b"]);
    assert_eq!(f.keys("a", "\0", 4), ["a"]);
    assert_eq!(f.keys("a", "\0", 5), ["a", "c"]);
    let mut req = range_req("a", "\0", 3);
    req.limit = 1;
    let r = f.store.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more, r.revision), (1, 2, true, 5));
    assert!(matches!(
        f.store.range(&range_req("a", "", 6)),
        Err(ReadError::FutureRevision { current: 5 })
    ));
}

#[test]
fn entries_in_one_batch_see_each_other() {
    let mut f = Fixture::new();
    let results = f.apply_all(vec![
        put("a", "1"),
        put("a", "2"),
        put("b", "1"),
        delete("a", "c", true),
        put("a", "3"),
    ]);
    let revisions: Vec<u64> = results
        .iter()
        .map(|r| match r {
            Ok(CommandResult::Put(p)) => p.revision,
            Ok(CommandResult::DeleteRange(d)) => d.revision,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5]);
    match &results[3] {
        Ok(CommandResult::DeleteRange(d)) => {
            assert_eq!(
                d.prev_kvs,
                vec![kv("a", "2", 1, 2, 2), kv("b", "1", 3, 3, 1)]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.get("a"), Some(kv("a", "3", 5, 5, 1)));
    assert_eq!(f.get_at("a", 2), Some(kv("a", "2", 1, 2, 2)));
    assert_eq!(f.store.applied().index, 5);
}

#[test]
fn entries_without_command_only_move_the_applied_index() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let hash = f.store.hash().unwrap();
    let mut e = f.entry(None);
    e.term = 7;
    e.conf_state = Some(vec![1, 2, 3]);
    let r = f.store.apply_batch(&[e]).unwrap();
    assert_eq!(r, vec![Ok(CommandResult::Noop { revision: 1 })]);
    assert_eq!(
        f.store.applied(),
        AppliedState {
            index: 2,
            term: 7,
            conf_state: vec![1, 2, 3]
        }
    );
    assert_eq!(f.store.revision(), 1);
    assert_eq!(
        f.store.hash().unwrap(),
        hash,
        "the hash ignores the applied state"
    );
    // A later entry without conf_state keeps it.
    let e = f.entry(Some(put("b", "1")));
    f.store.apply_batch(&[e]).unwrap();
    assert_eq!(f.store.applied().conf_state, vec![1, 2, 3]);
}

#[test]
fn keys_with_zero_bytes_keep_separate_histories() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("a\0", "1"); // 2
    f.put("a\0\0", "1"); // 3
    f.put("a", "2"); // 4
    f.delete("a\0", ""); // 5
    assert_eq!(f.get_at("a", 3), Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(f.get_at("a\0", 4), Some(kv("a\0", "1", 2, 2, 1)));
    assert_eq!(f.get_at("a\0", 5), None);
    assert_eq!(f.keys("a", "\0", 4), ["a", "a\0", "a\0\0"]);
    assert_eq!(f.keys("a", "\0", 5), ["a", "a\0\0"]);
    assert_eq!(f.keys("a\0", "a\0\u{1}", 3), ["a\0", "a\0\0"]);
}

#[test]
fn a_read_started_once_results_are_handed_out_sees_the_batch() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let e = f.entry(Some(put("a", "2")));
    let f = &f;
    std::thread::scope(|scope| {
        let mut reader = None;
        f.store
            .apply_batch_answering(&[e], |results| {
                assert!(matches!(results[..], [Ok(CommandResult::Put(_))]));
                // The read starts before the records are written; it must wait for them.
                let (started, wait_started) = std::sync::mpsc::channel();
                reader = Some(scope.spawn(move || {
                    started.send(()).unwrap();
                    f.get("a")
                }));
                wait_started.recv().unwrap();
            })
            .unwrap();
        let seen = reader.unwrap().join().unwrap();
        assert_eq!(seen.map(|kv| kv.value), Some(b"2".to_vec()));
    });
}
