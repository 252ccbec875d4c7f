//! Leases: grant, attach, move, detach on delete, revoke.

use super::*;

fn leased(key: &str, value: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        lease,
        ..put_req(key, value)
    })
}

fn lease_keys(f: &Fixture, id: i64) -> Vec<String> {
    f.store
        .lease(id)
        .unwrap()
        .unwrap()
        .keys
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn grant_does_not_bump_and_refuses_duplicates_and_zero() {
    let mut f = Fixture::new();
    f.put("a", "1");
    let r = f.apply(Command::LeaseGrant {
        id: 7,
        ttl_seconds: 30,
    });
    assert_eq!(
        r,
        Ok(CommandResult::LeaseGrant {
            id: 7,
            ttl_seconds: 30,
            revision: 1
        })
    );
    assert_eq!(f.store.revision(), 1);
    assert_eq!(
        f.apply(Command::LeaseGrant {
            id: 7,
            ttl_seconds: 5
        }),
        Err(CommandError::LeaseExists(7))
    );
    assert_eq!(
        f.apply(Command::LeaseGrant {
            id: 0,
            ttl_seconds: 5
        }),
        Err(CommandError::InvalidLease {
            id: 0,
            ttl_seconds: 5
        })
    );
    f.apply(Command::LeaseGrant {
        id: -3,
        ttl_seconds: 1,
    })
    .unwrap();
    let all = f.store.leases().unwrap();
    let ids: Vec<_> = all.iter().map(|l| (l.id, l.ttl_seconds)).collect();
    assert_eq!(ids, [(-3, 1), (7, 30)]);
    assert_eq!(f.store.lease(8).unwrap(), None);
}

#[test]
fn put_attaches_moves_and_detaches() {
    let mut f = Fixture::new();
    f.apply(Command::LeaseGrant {
        id: 1,
        ttl_seconds: 10,
    })
    .unwrap();
    f.apply(Command::LeaseGrant {
        id: 2,
        ttl_seconds: 10,
    })
    .unwrap();
    assert_eq!(
        f.apply(leased("a", "v", 3)),
        Err(CommandError::LeaseNotFound(3))
    );
    assert_eq!(f.store.revision(), 0);
    f.apply(leased("a", "v", 1)).unwrap();
    f.apply(leased("b", "v", 1)).unwrap();
    f.apply(leased("c", "v", 1)).unwrap();
    assert_eq!(f.get("a").unwrap().lease, 1);
    assert_eq!(lease_keys(&f, 1), ["a", "b", "c"]);
    f.apply(leased("a", "v", 2)).unwrap(); // move
    f.put("b", "v"); // detach by a put without lease
    f.delete("c", ""); // detach by delete
    assert!(lease_keys(&f, 1).is_empty());
    assert_eq!(lease_keys(&f, 2), ["a"]);
    assert_eq!(f.get("b").unwrap().lease, 0);
}

#[test]
fn revoke_deletes_attached_keys_in_one_revision() {
    let mut f = Fixture::new();
    f.apply(Command::LeaseGrant {
        id: 1,
        ttl_seconds: 10,
    })
    .unwrap();
    f.apply(leased("a", "v", 1)).unwrap(); // 1
    f.apply(leased("b", "v", 1)).unwrap(); // 2
    f.put("c", "v"); // 3
    let r = f.apply(Command::LeaseRevoke { id: 1 });
    assert_eq!(r, Ok(CommandResult::LeaseRevoke { revision: 4 }));
    assert_eq!(f.keys("a", "\0", 0), ["c"]);
    assert_eq!(f.store.lease(1).unwrap(), None);
    let ev = f.store.events(4, b"a", b"\0", 0, true).unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 4));
    assert_eq!(ev[0].prev_kv.as_ref().unwrap().lease, 1);
    assert_eq!(
        f.apply(Command::LeaseRevoke { id: 1 }),
        Err(CommandError::LeaseNotFound(1))
    );
    // A lease without keys is revoked without a new revision.
    f.apply(Command::LeaseGrant {
        id: 2,
        ttl_seconds: 10,
    })
    .unwrap();
    let r = f.apply(Command::LeaseRevoke { id: 2 });
    assert_eq!(r, Ok(CommandResult::LeaseRevoke { revision: 4 }));
    assert!(f.store.leases().unwrap().is_empty());
}

#[test]
fn lease_granted_earlier_in_the_batch_is_visible() {
    let mut f = Fixture::new();
    let r = f.apply_all(vec![
        Command::LeaseGrant {
            id: 1,
            ttl_seconds: 10,
        },
        leased("a", "v", 1),
        Command::LeaseRevoke { id: 1 },
        leased("b", "v", 1),
    ]);
    assert!(r[1].is_ok());
    assert_eq!(r[2], Ok(CommandResult::LeaseRevoke { revision: 2 }));
    assert_eq!(r[3], Err(CommandError::LeaseNotFound(1)));
    assert_eq!(f.keys("a", "\0", 0), Vec::<String>::new());
}
