//! Applied index, idempotent re-apply, reopen.

use super::*;

#[test]
fn reapplying_an_index_is_a_noop() {
    let mut f = Fixture::new();
    let e1 = f.entry(Some(put("a", "1")));
    let e2 = f.entry(Some(put("a", "2")));
    f.store.apply_batch(&[e1.clone(), e2.clone()]).unwrap();
    let hash = f.store.hash().unwrap();
    let applied = f.store.applied();
    assert_eq!(applied.index, 2);
    // A crash-restart replay hands the same entries again, maybe with new ones.
    let e3 = f.entry(Some(put("b", "1")));
    let r = f.store.apply_batch(&[e1.clone(), e2, e3]).unwrap();
    assert_eq!(r[0], Err(CommandError::AlreadyApplied));
    assert_eq!(r[1], Err(CommandError::AlreadyApplied));
    assert!(matches!(&r[2], Ok(CommandResult::Put(p)) if p.revision == 3));
    assert_eq!(f.get("a"), Some(kv("a", "2", 1, 2, 2)));
    assert_ne!(f.store.hash().unwrap(), hash);
    let hash = f.store.hash().unwrap();
    let r = f.store.apply_batch(&[e1]).unwrap();
    assert_eq!(r, vec![Err(CommandError::AlreadyApplied)]);
    assert_eq!(f.store.hash().unwrap(), hash);
    assert_eq!(f.store.applied().index, 3);
}

#[test]
fn reopen_after_drop_keeps_state() {
    let mut f = Fixture::new();
    f.apply(Command::LeaseGrant {
        id: 4,
        ttl_seconds: 9,
    })
    .unwrap();
    f.put("a", "1");
    f.put("a", "2");
    f.delete("a", "");
    f.put("b", "1");
    let mut e = f.entry(None);
    e.term = 3;
    e.conf_state = Some(b"voters".to_vec());
    f.store.apply_batch(&[e]).unwrap();
    f.store.sync().unwrap();
    let hash = f.store.hash().unwrap();
    let applied = f.store.applied();
    let events = f.store.events(1, b"a", b"\0", 0, true).unwrap();
    f.reopen();
    assert_eq!(f.store.hash().unwrap(), hash);
    assert_eq!(f.store.applied(), applied);
    assert_eq!(f.store.revision(), 4);
    assert_eq!(f.store.events(1, b"a", b"\0", 0, true).unwrap(), events);
    assert_eq!(f.get_at("a", 2), Some(kv("a", "2", 1, 2, 2)));
    assert_eq!(f.store.lease(4).unwrap().map(|l| l.ttl_seconds), Some(9));
    // And it keeps going from there.
    assert_eq!(f.put("c", "1").revision, 5);
}

#[test]
fn same_entries_give_same_hash_on_two_replicas() {
    let cmds = || {
        vec![
            put("a", "1"),
            put("b", "1"),
            Command::LeaseGrant {
                id: 1,
                ttl_seconds: 5,
            },
            delete("a", "\0", true),
            put("c", "1"),
            Command::Compact { revision: 3 },
        ]
    };
    let mut one = Fixture::new();
    let mut two = Fixture::new();
    one.apply_all(cmds());
    for c in cmds() {
        two.apply(c).unwrap();
    }
    assert_eq!(one.store.hash().unwrap(), two.store.hash().unwrap());
    two.put("c", "2");
    assert_ne!(one.store.hash().unwrap(), two.store.hash().unwrap());
}

#[test]
fn store_is_send_and_sync_and_readers_run_beside_apply() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let mut f = Fixture::new();
    f.put("k0", "x");
    std::thread::scope(|s| {
        let store = &f.store;
        let reader = s.spawn(move || {
            for _ in 0..200 {
                let r = store.range(&range_req("k", "l", 0)).unwrap();
                // Every batch writes two keys at once: a reader never sees one of them.
                assert_eq!(r.count % 2, 1, "{r:?}");
            }
        });
        for i in 0..50u64 {
            let entries = [
                ApplyEntry {
                    index: 2 + 2 * i,
                    term: 1,
                    command: Some(put(&format!("k{}a", i), "v")),
                    conf_state: None,
                    cluster: Vec::new(),
                },
                ApplyEntry {
                    index: 3 + 2 * i,
                    term: 1,
                    command: Some(put(&format!("k{}b", i), "v")),
                    conf_state: None,
                    cluster: Vec::new(),
                },
            ];
            store.apply_batch(&entries).unwrap();
        }
        reader.join().unwrap();
    });
}

#[test]
fn records_of_a_group_cut_before_its_meta_state_are_dropped_at_open() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.put("b", "1");
    f.store.sync().unwrap();
    let hash = f.store.hash().unwrap();
    let applied = f.store.applied();
    // What a crash leaves of an appends-only group whose meta state never landed:
    // its records at revision 3, above the recovered revision 2.
    let cut = [
        (
            crate::keys::rev_key(3, 0),
            crate::keys::encode_put(b"c", 3, 1, 0, b"x"),
        ),
        (crate::keys::rev_key(3, 1), crate::keys::encode_delete(b"a")),
    ];
    for (k, v) in &cut {
        f.store.tree.insert(k, v.as_slice()).unwrap();
    }
    f.store.sync().unwrap();
    f.reopen();
    assert_eq!(f.store.hash().unwrap(), hash);
    assert_eq!(f.store.applied(), applied);
    assert_eq!(f.get("c"), None);
    assert_eq!(f.get("a"), Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(f.store.events(1, b"a", b"\0", 0, false).unwrap().len(), 2);
    // Replaying the entry gives what a store that never crashed has.
    let mut clean = Fixture::new();
    clean.put("a", "1");
    clean.put("b", "1");
    assert_eq!(f.put("c", "x").revision, 3);
    assert_eq!(clean.put("c", "x").revision, 3);
    assert_eq!(f.store.hash().unwrap(), clean.store.hash().unwrap());
}

#[test]
fn a_group_that_changes_existing_records_is_one_sled_batch_and_survives_reopen() {
    let mut f = Fixture::new();
    f.put("a", "1");
    f.put("a", "2");
    // A compaction removes records and a lease grant adds a non-revision record: the
    // group is written as one batch.
    let r = f.apply_all(vec![
        Command::Compact { revision: 2 },
        Command::LeaseGrant {
            id: 7,
            ttl_seconds: 5,
        },
    ]);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    f.store.sync().unwrap();
    let hash = f.store.hash().unwrap();
    f.reopen();
    assert_eq!(f.store.hash().unwrap(), hash);
    assert_eq!(f.store.compact_revision(), 2);
    assert_eq!(f.store.lease(7).unwrap().map(|l| l.ttl_seconds), Some(5));
    assert_eq!(f.get("a"), Some(kv("a", "2", 1, 2, 2)));
}

#[test]
fn a_store_of_another_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(crate::store::TREE).unwrap();
        tree.insert(crate::keys::META_FORMAT, &1u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("format version: 1, this build reads 2"),
        "{err}"
    );
    assert!(err.contains("empty data dir"), "{err}");
}
