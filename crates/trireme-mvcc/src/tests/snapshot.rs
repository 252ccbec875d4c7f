//! Snapshot write -> restore, and refusal of damaged streams.

use super::*;

fn populated() -> Fixture {
    let mut f = Fixture::new();
    f.apply(Command::LeaseGrant {
        id: 3,
        ttl_seconds: 60,
    })
    .unwrap();
    for i in 0..50 {
        f.put(&format!("k{i:02}"), &"v".repeat(i));
    }
    f.apply(Command::Put(PutRequest {
        lease: 3,
        ..put_req("leased", "v")
    }))
    .unwrap();
    f.delete("k1", "k2");
    f.put("k05", "again");
    f.apply(Command::Compact { revision: 20 }).unwrap();
    let mut e = f.entry(None);
    e.conf_state = Some(b"cs".to_vec());
    f.store.apply_batch(&[e]).unwrap();
    f
}

fn image(f: &Fixture) -> (Vec<u8>, SnapshotInfo) {
    let mut buf = Vec::new();
    let info = f.store.write_snapshot(&mut buf).unwrap();
    (buf, info)
}

#[test]
fn restore_gives_identical_hash_reads_and_applied_state() {
    let f = populated();
    let (buf, info) = image(&f);
    assert_eq!(info.bytes, buf.len() as u64);
    assert_eq!(info.applied, f.store.applied());
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("restored");
    let restored = Store::restore(&dir, &mut buf.as_slice()).unwrap();
    assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
    assert_eq!(restored.applied(), f.store.applied());
    assert_eq!(restored.revision(), f.store.revision());
    assert_eq!(restored.compact_revision(), 20);
    for rev in [0, 20, 40, f.store.revision()] {
        let req = range_req("a", "\0", rev);
        assert_eq!(restored.range(&req).unwrap(), f.store.range(&req).unwrap());
    }
    assert_eq!(
        restored.events(20, b"\0", b"\0", 0, true).unwrap(),
        f.store.events(20, b"\0", b"\0", 0, true).unwrap()
    );
    assert_eq!(restored.leases().unwrap(), f.store.leases().unwrap());
    // The restored store carries on like the original.
    let e = ApplyEntry {
        index: f.store.applied().index + 1,
        term: 2,
        command: Some(put("new", "v")),
        conf_state: None,
        cluster: Vec::new(),
    };
    restored.apply_batch(std::slice::from_ref(&e)).unwrap();
    f.store.apply_batch(&[e]).unwrap();
    assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
    drop(restored);
    let reopened = Store::open(&dir).unwrap();
    assert_eq!(reopened.hash().unwrap(), f.store.hash().unwrap());
}

#[test]
fn restore_into_an_existing_empty_dir_works_and_a_full_one_is_refused() {
    let f = populated();
    let (buf, _) = image(&f);
    let empty = tempfile::tempdir().unwrap();
    let restored = Store::restore(empty.path(), &mut buf.as_slice()).unwrap();
    assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
    assert!(matches!(
        Store::restore(f.dir.path(), &mut buf.as_slice()),
        Err(SnapshotError::DirNotEmpty(_))
    ));
    // ...and the refused restore left the original alone.
    assert!(f.store.hash().is_ok());
}

#[test]
fn damaged_snapshots_are_refused_and_leave_nothing() {
    let f = populated();
    let (buf, _) = image(&f);
    let target = tempfile::tempdir().unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for pos in [0, 20, buf.len() / 2, buf.len() - 10, buf.len() - 2] {
        let mut b = buf.clone();
        b[pos] ^= 0x40;
        cases.push(("flipped byte", b));
    }
    for len in [0, 10, 100, buf.len() / 2, buf.len() - 1] {
        cases.push(("truncated", buf[..len].to_vec()));
    }
    for (i, (what, bad)) in cases.iter().enumerate() {
        let dir = target.path().join(format!("case{i}"));
        let err = Store::restore(&dir, &mut bad.as_slice());
        assert!(err.is_err(), "{what} case {i} was accepted");
        assert!(!dir.exists(), "{what} case {i} left {dir:?}");
    }
    // A pre-existing empty directory is emptied again, not removed.
    let dir = target.path().join("kept");
    std::fs::create_dir(&dir).unwrap();
    let err = Store::restore(&dir, &mut &buf[..buf.len() - 1]).unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated), "{err:?}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let mut flipped = buf.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let err = Store::restore(&dir, &mut flipped.as_slice()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Checksum { .. } | SnapshotError::Malformed(_)
        ),
        "{err:?}"
    );
}
