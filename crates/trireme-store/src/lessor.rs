//! In-memory lease expiry. Every replica keeps the table (grants, keep-alives and
//! revokes are replicated, so the tables agree up to clock and apply timing); only the
//! leader acts on it, by proposing `LeaseRevoke` for leases past their deadline.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `now + ttl`, or a year from now when that is past what `Instant` holds: a TTL that
/// long was refused when granted (`MAX_LEASE_TTL`), but logs and snapshots written
/// before that check may still carry one.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

#[derive(Default)]
pub struct Lessor {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Lease id -> (TTL, deadline).
    leases: HashMap<i64, (Duration, Instant)>,
    /// Leases whose revoke this replica has proposed and not yet seen applied.
    revoking: HashSet<i64>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A grant or keep-alive applied at `now`: the lease lives `ttl` from now.
    pub fn renew(&self, id: i64, ttl_seconds: i64, now: Instant) {
        let ttl = Duration::from_secs(ttl_seconds.max(1) as u64);
        self.lock().leases.insert(id, (ttl, deadline(now, ttl)));
    }

    pub fn remove(&self, id: i64) {
        let mut inner = self.lock();
        inner.leases.remove(&id);
        inner.revoking.remove(&id);
    }

    /// Replaces the whole table (at start, after a snapshot): every lease gets a full
    /// TTL from `now`, as etcd does when a leader takes over.
    pub fn reset(&self, leases: impl IntoIterator<Item = (i64, i64)>, now: Instant) {
        let mut inner = self.lock();
        inner.leases.clear();
        inner.revoking.clear();
        for (id, ttl_seconds) in leases {
            let ttl = Duration::from_secs(ttl_seconds.max(1) as u64);
            inner.leases.insert(id, (ttl, deadline(now, ttl)));
        }
    }

    /// Leases past their deadline at `now` whose revoke is not already under way;
    /// marks them as being revoked.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut inner = self.lock();
        let expired: Vec<i64> = inner
            .leases
            .iter()
            .filter(|(id, (_, deadline))| *deadline <= now && !inner.revoking.contains(id))
            .map(|(id, _)| *id)
            .collect();
        inner.revoking.extend(expired.iter().copied());
        expired
    }

    /// A revoke proposal failed: try again on the next round.
    pub fn revoke_failed(&self, id: i64) {
        self.lock().revoking.remove(&id);
    }

    /// Time left on a lease, if this replica knows it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        self.lock()
            .leases
            .get(&id)
            .map(|(_, deadline)| deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_reported_once_until_the_revoke_fails() {
        let l = Lessor::default();
        let t0 = Instant::now();
        l.renew(1, 1, t0);
        l.renew(2, 10, t0);
        assert!(l.take_expired(t0).is_empty());
        let later = t0 + Duration::from_secs(2);
        assert_eq!(l.take_expired(later), vec![1]);
        assert!(
            l.take_expired(later).is_empty(),
            "a revoke under way is not proposed twice"
        );
        l.revoke_failed(1);
        assert_eq!(l.take_expired(later), vec![1]);
        l.remove(1);
        assert_eq!(l.take_expired(later + Duration::from_secs(10)), vec![2]);
    }

    #[test]
    fn a_ttl_past_what_instant_holds_does_not_panic() {
        let l = Lessor::default();
        let t0 = Instant::now();
        l.renew(1, i64::MAX, t0);
        l.reset([(2, i64::MAX)], t0);
        l.renew(3, i64::MAX, t0);
        assert!(l.take_expired(t0 + Duration::from_secs(3600)).is_empty());
        assert!(l.remaining(3, t0).is_some());
    }

    #[test]
    fn keep_alive_pushes_the_deadline() {
        let l = Lessor::default();
        let t0 = Instant::now();
        l.renew(7, 2, t0);
        l.renew(7, 2, t0 + Duration::from_secs(1));
        assert!(l.take_expired(t0 + Duration::from_millis(2500)).is_empty());
        assert_eq!(l.take_expired(t0 + Duration::from_secs(3)), vec![7]);
    }
}
