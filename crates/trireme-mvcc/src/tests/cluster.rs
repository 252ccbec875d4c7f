//! Cluster records: written with their entry, invisible to ranges and the hash,
//! carried by snapshots.

use super::*;

fn write(key: &str, value: Option<&str>) -> ClusterWrite {
    ClusterWrite {
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

fn records(store: &Store) -> Vec<(String, String)> {
    store
        .cluster_records()
        .unwrap()
        .1
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn cluster_records_are_applied_with_their_entry_and_kept_out_of_ranges_and_the_hash() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let hash = f.store.hash().unwrap();
    let revision = f.store.revision();
    let mut e = f.entry(None);
    e.cluster = vec![
        write("member/1", Some("one")),
        write("member/2", Some("two")),
    ];
    f.store.apply_batch(&[e]).unwrap();
    assert_eq!(
        records(&f.store),
        [
            ("member/1".into(), "one".into()),
            ("member/2".into(), "two".into())
        ]
    );
    let (applied, _) = f.store.cluster_records().unwrap();
    assert_eq!(applied, f.store.applied());
    assert_eq!(
        f.store.revision(),
        revision,
        "no revision for cluster records"
    );
    assert_eq!(
        f.store.hash().unwrap(),
        hash,
        "the hash covers MVCC data only"
    );
    assert_eq!(f.keys("\0", "\0", 0), ["a"], "ranges never see them");
    assert!(f.store.events(1, b"\0", b"\0", 0, false).unwrap().len() == 1);

    // An entry at or below the applied index is skipped with its cluster writes.
    let mut old = f.entry(None);
    old.index = 1;
    old.cluster = vec![write("member/1", None)];
    f.store.apply_batch(&[old]).unwrap();
    assert_eq!(records(&f.store).len(), 2);

    let mut e = f.entry(None);
    e.cluster = vec![write("member/1", None), write("member/2", Some("deux"))];
    f.store.apply_batch(&[e]).unwrap();
    assert_eq!(records(&f.store), [("member/2".into(), "deux".into())]);
    f.reopen();
    assert_eq!(records(&f.store), [("member/2".into(), "deux".into())]);
}

#[test]
fn snapshots_carry_cluster_records() {
    let mut f = Fixture::new();
    f.put("k", "v");
    let mut e = f.entry(None);
    e.cluster = vec![write("member/7", Some("seven"))];
    f.store.apply_batch(&[e]).unwrap();
    let mut buf = Vec::new();
    f.store.write_snapshot(&mut buf).unwrap();
    let target = tempfile::tempdir().unwrap();
    let restored = Store::restore(&target.path().join("r"), &mut buf.as_slice()).unwrap();
    assert_eq!(records(&restored), [("member/7".into(), "seven".into())]);
    assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
}

#[test]
fn an_image_without_cluster_records_restores_with_none() {
    // What a store written before cluster records existed looks like.
    let mut f = Fixture::new();
    f.put("k", "v");
    let mut buf = Vec::new();
    f.store.write_snapshot(&mut buf).unwrap();
    let target = tempfile::tempdir().unwrap();
    let restored = Store::restore(&target.path().join("r"), &mut buf.as_slice()).unwrap();
    assert!(records(&restored).is_empty());
    assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
}
