//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it, so that one of several controller processes acts and the others stand by.
//!
//! - The Lease's `spec` holds the record: `holderIdentity`, `leaseDurationSeconds`,
//!   `acquireTime`, `renewTime`, `leaseTransitions`.
//! - A candidate takes the Lease when it is absent, has no holder, or has not changed
//!   for the record's `leaseDurationSeconds` (the holder's promise) *as timed by the
//!   candidate's own clock* since it first saw that record (the times in the record are only for people: clocks of different
//!   machines are never compared). Every take and renewal is a compare-and-swap on the
//!   Lease's `resourceVersion`, so two candidates never both succeed from one record.
//! - The holder renews every `retry_period`. It counts itself leader until
//!   `renew_deadline` after it *sent* its last successful renewal. A standby can take
//!   over no sooner than `lease_duration` after it saw that renewal, which was
//!   written after it was sent; as `renew_deadline < lease_duration`, the old holder
//!   has stopped by then (clocks may drift, not jump, by the difference).
//! - On a clean stop the holder releases the Lease (empty holder) so a standby takes
//!   over at its next try instead of after `lease_duration`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::{ApiResource, Client, Error, Result};

/// client-go's `JitterFactor`: the retry period is stretched by up to this much.
const JITTER: f64 = 1.2;

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's name in `holderIdentity`; unique among the candidates.
    pub identity: String,
    /// How long a standby waits, after it last saw the record change, before it takes
    /// the Lease.
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates try to take, and the holder to renew, the Lease.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The checks client-go makes: `lease_duration > renew_deadline >
    /// 1.2 * retry_period`, none zero, and an identity.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader election identity must not be empty".into());
        }
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err("the leader election lease needs a namespace and a name".into());
        }
        if self.retry_period.is_zero() {
            return Err("the retry period must be greater than zero".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be greater than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= JITTER * self.retry_period.as_secs_f64() {
            return Err(format!(
                "the renew deadline ({:?}) must be greater than {JITTER} times the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration.as_secs() < 1 {
            return Err("the lease duration must be at least one second".into());
        }
        Ok(())
    }
}

/// The election record in a Lease's `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderRecord {
    pub holder: String,
    pub lease_duration_seconds: i64,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub transitions: i64,
}

impl LeaderRecord {
    pub fn from_lease(lease: &Value) -> LeaderRecord {
        let spec = lease.get("spec");
        let s = |f: &str| spec.and_then(|s| s.get(f)).and_then(Value::as_str);
        let n = |f: &str| spec.and_then(|s| s.get(f)).and_then(Value::as_i64);
        LeaderRecord {
            holder: s("holderIdentity").unwrap_or("").to_string(),
            lease_duration_seconds: n("leaseDurationSeconds").unwrap_or(0),
            acquire_time: s("acquireTime").map(String::from),
            renew_time: s("renewTime").map(String::from),
            transitions: n("leaseTransitions").unwrap_or(0),
        }
    }

    fn spec(&self) -> Value {
        let mut spec = json!({
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        });
        if let Some(t) = &self.acquire_time {
            spec["acquireTime"] = json!(t);
        }
        if let Some(t) = &self.renew_time {
            spec["renewTime"] = json!(t);
        }
        spec
    }
}

/// What a candidate does with the record it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Someone else holds a lease that has not expired by our clock: wait.
    HeldByOther,
    /// Write this record (take or renew) with a compare-and-swap.
    Write(LeaderRecord),
}

/// The pure part of one try: `current` is the stored record, `observed_for` how long
/// (by our clock) it has been unchanged since we first saw it, `now` the wall-clock
/// time for the record's timestamps.
pub fn decide(
    config: &ElectionConfig,
    current: &LeaderRecord,
    observed_for: Duration,
    now: &str,
) -> Decision {
    let mine = current.holder == config.identity;
    // The holder's own promise (as recent client-go reads it), else ours.
    let expires_after = u64::try_from(current.lease_duration_seconds)
        .ok()
        .filter(|s| *s > 0)
        .map_or(config.lease_duration, Duration::from_secs);
    if !current.holder.is_empty() && !mine && observed_for < expires_after {
        return Decision::HeldByOther;
    }
    let lease_duration_seconds = i64::try_from(config.lease_duration.as_secs()).unwrap_or(i64::MAX);
    Decision::Write(if mine {
        LeaderRecord {
            lease_duration_seconds,
            renew_time: Some(now.to_string()),
            ..current.clone()
        }
    } else {
        LeaderRecord {
            holder: config.identity.clone(),
            lease_duration_seconds,
            acquire_time: Some(now.to_string()),
            renew_time: Some(now.to_string()),
            transitions: if current.holder.is_empty() && current.acquire_time.is_none() {
                current.transitions
            } else {
                current.transitions.saturating_add(1)
            },
        }
    })
}

/// Until when this process may act as leader. Cheap to clone; controllers check
/// [`Leadership::is_held`] before each write and wait on [`Leadership::lost`].
#[derive(Clone)]
pub struct Leadership {
    until: watch::Receiver<Option<Instant>>,
}

impl Leadership {
    /// Leadership that lasts while `until` holds a time ahead (for running without an
    /// election); the sender's drop ends it.
    pub fn from_channel(until: watch::Receiver<Option<Instant>>) -> Leadership {
        Leadership { until }
    }

    /// True while the last successful renewal is younger than the renew deadline.
    pub fn is_held(&self) -> bool {
        self.until.borrow().is_some_and(|t| Instant::now() < t)
    }

    /// Resolves once leadership is over (a renewal deadline passed or it was given up).
    pub async fn lost(&self) {
        let mut rx = self.until.clone();
        loop {
            let until = *rx.borrow_and_update();
            let Some(until) = until else { return };
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {
                    if !self.is_held() {
                        return;
                    }
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// One candidate.
pub struct Elector {
    client: Client,
    leases: ApiResource,
    config: ElectionConfig,
    /// The last record seen, its resourceVersion, and when (our clock) it was first seen.
    observed: Option<(LeaderRecord, Instant)>,
    until: watch::Sender<Option<Instant>>,
}

/// Why [`Elector::hold`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded within the renew deadline.
    RenewDeadline,
    /// Another candidate holds the Lease now.
    TakenBy(String),
}

impl Elector {
    pub async fn new(client: Client, config: ElectionConfig) -> Result<Elector> {
        config.validate().map_err(Error::Config)?;
        let leases = client
            .resolve_kind("coordination.k8s.io/v1", "Lease")
            .await?;
        let (until, _) = watch::channel(None);
        Ok(Elector {
            client,
            leases,
            config,
            observed: None,
            until,
        })
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// The leadership this elector grants (not held until [`Elector::acquire`]).
    pub fn leadership(&self) -> Leadership {
        Leadership {
            until: self.until.subscribe(),
        }
    }

    /// The holder of the record last seen ("" when none).
    pub fn observed_holder(&self) -> &str {
        self.observed
            .as_ref()
            .map_or("", |(r, _)| r.holder.as_str())
    }

    /// One try to take or renew the Lease. `Ok(true)`: we hold it, and the leadership
    /// is extended to `renew_deadline` after this try began.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let sent = Instant::now();
        let ns = Some(self.config.namespace.as_str());
        let name = self.config.name.clone();
        let now = micro_time();
        let current = match self.client.get(&self.leases, ns, &name).await {
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
            Ok(lease) => Some(lease),
        };
        let Some(lease) = current else {
            let record = match decide(&self.config, &LeaderRecord::default(), Duration::ZERO, &now)
            {
                Decision::Write(r) => r,
                Decision::HeldByOther => return Ok(false),
            };
            let body = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": self.config.namespace},
                "spec": record.spec(),
            });
            return match self.client.create(&self.leases, ns, &body).await {
                Ok(_) => {
                    self.won(record, sent);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = LeaderRecord::from_lease(&lease);
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record.clone(), first_seen));
        let next = match decide(&self.config, &record, first_seen.elapsed(), &now) {
            Decision::HeldByOther => {
                self.until.send_replace(None);
                return Ok(false);
            }
            Decision::Write(r) => r,
        };
        let mut body = lease.clone();
        body["spec"] = next.spec();
        // `metadata.resourceVersion` stays as read: the write is a compare-and-swap.
        match self.client.replace(&self.leases, ns, &name, &body).await {
            Ok(_) => {
                self.won(next, sent);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, record: LeaderRecord, sent: Instant) {
        self.observed = Some((record, Instant::now()));
        self.until
            .send_replace(Some(sent + self.config.renew_deadline));
    }

    fn pause(&self) -> Duration {
        let jitter = 1.0 + rand_fraction() * (JITTER - 1.0);
        self.config.retry_period.mul_f64(jitter)
    }

    /// Tries every retry period (jittered) until this candidate holds the Lease.
    /// Errors of single tries (a replica down, a timeout) are logged by the caller's
    /// `on_error` and retried.
    pub async fn acquire(&mut self, mut on_error: impl FnMut(&Error)) -> Leadership {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return self.leadership(),
                Ok(false) => {}
                Err(e) => on_error(&e),
            }
            tokio::time::sleep(self.pause()).await;
        }
    }

    /// Renews every retry period while this candidate holds the Lease; returns when it
    /// no longer does (then [`Leadership::is_held`] is false).
    pub async fn hold(&mut self, mut on_error: impl FnMut(&Error)) -> Lost {
        let leadership = self.leadership();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = leadership.lost() => {
                    self.until.send_replace(None);
                    return Lost::RenewDeadline;
                }
            }
            if !leadership.is_held() {
                self.until.send_replace(None);
                return Lost::RenewDeadline;
            }
            // A try that outlives the deadline cannot extend it: bound it.
            let left = self.until.borrow().map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                // A lost compare-and-swap against our own earlier renewal (one that
                // timed out but was written) leaves us the holder: try again.
                Ok(Ok(false)) if self.observed_holder() == self.config.identity => {}
                Ok(Ok(false)) => {
                    self.until.send_replace(None);
                    return Lost::TakenBy(self.observed_holder().to_string());
                }
                Ok(Err(e)) => on_error(&e),
                Err(_) => {}
            }
        }
    }

    /// Gives the Lease up (empty holder, one-second duration) if this candidate still
    /// holds it, so a standby takes over at its next try. Leadership ends first.
    pub async fn release(&mut self) -> Result<bool> {
        let held = self.leadership().is_held();
        self.until.send_replace(None);
        if !held {
            return Ok(false);
        }
        let ns = Some(self.config.namespace.as_str());
        let name = self.config.name.clone();
        let lease = self.client.get(&self.leases, ns, &name).await?;
        let record = LeaderRecord::from_lease(&lease);
        if record.holder != self.config.identity {
            return Ok(false);
        }
        let now = micro_time();
        let released = LeaderRecord {
            holder: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            transitions: record.transitions,
        };
        let mut body = lease.clone();
        body["spec"] = released.spec();
        match self.client.replace(&self.leases, ns, &name, &body).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn is_conflict(e: &Error) -> bool {
    e.status()
        .is_some_and(|s| s.code == 409 || s.reason == "AlreadyExists" || s.reason == "Conflict")
}

/// A number in [0, 1) that differs between processes and calls (the jitter only
/// needs to keep candidates from trying in lockstep).
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed =
        (u64::from(nanos) ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// Now as a Kubernetes `MicroTime`: RFC 3339 in UTC with six fractional digits.
pub fn micro_time() -> String {
    const MICRO: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(MICRO)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> ElectionConfig {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: "trireme-controller".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: &str) -> LeaderRecord {
        LeaderRecord {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some("2026-01-01T00:00:00.000000Z".into()),
            renew_time: Some("2026-01-01T00:00:01.000000Z".into()),
            transitions: 3,
        }
    }

    #[test]
    fn a_lease_held_by_another_is_left_alone_until_it_expires_by_our_clock() {
        let c = config();
        let other = held_by("b");
        assert_eq!(
            decide(&c, &other, Duration::from_secs(14), "t"),
            Decision::HeldByOther
        );
        let Decision::Write(taken) = decide(&c, &other, Duration::from_secs(15), "t") else {
            panic!("an expired lease is taken");
        };
        assert_eq!(taken.holder, "a");
        assert_eq!(taken.transitions, 4);
        assert_eq!(taken.acquire_time.as_deref(), Some("t"));
    }

    #[test]
    fn the_holders_advertised_duration_decides_when_its_lease_expires() {
        let c = config();
        let long = LeaderRecord {
            lease_duration_seconds: 60,
            ..held_by("b")
        };
        let at = |s| decide(&c, &long, Duration::from_secs(s), "t");
        assert_eq!(at(30), Decision::HeldByOther);
        assert!(matches!(at(60), Decision::Write(_)));
        let unset = LeaderRecord {
            lease_duration_seconds: 0,
            ..held_by("b")
        };
        assert_eq!(
            decide(&c, &unset, Duration::from_secs(14), "t"),
            Decision::HeldByOther
        );
    }

    #[test]
    fn an_empty_holder_is_taken_at_once_and_a_renewal_keeps_the_acquire_time() {
        let c = config();
        let released = LeaderRecord {
            holder: String::new(),
            ..held_by("b")
        };
        let Decision::Write(taken) = decide(&c, &released, Duration::ZERO, "t") else {
            panic!("a released lease is taken");
        };
        assert_eq!((taken.holder.as_str(), taken.transitions), ("a", 4));
        let Decision::Write(renewed) = decide(&c, &taken, Duration::ZERO, "u") else {
            panic!("the holder renews");
        };
        assert_eq!(renewed.acquire_time.as_deref(), Some("t"));
        assert_eq!(renewed.renew_time.as_deref(), Some("u"));
        assert_eq!(renewed.transitions, 4);
        let Decision::Write(first) = decide(&c, &LeaderRecord::default(), Duration::ZERO, "t")
        else {
            panic!("a new lease is taken");
        };
        assert_eq!(first.transitions, 0);
    }

    #[test]
    fn timings_are_checked_as_client_go_does() {
        assert!(config().validate().is_ok());
        let bad = |f: fn(&mut ElectionConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.renew_deadline = Duration::from_secs(15)).contains("renew deadline"));
        assert!(bad(|c| c.retry_period = Duration::from_secs(9)).contains("retry period"));
        assert!(bad(|c| c.retry_period = Duration::ZERO).contains("greater than zero"));
        assert!(bad(|c| c.identity.clear()).contains("identity"));
    }

    #[test]
    fn record_round_trips_through_a_lease() {
        let r = held_by("b");
        let lease = json!({"spec": r.spec()});
        assert_eq!(LeaderRecord::from_lease(&lease), r);
        assert_eq!(
            LeaderRecord::from_lease(&json!({})),
            LeaderRecord::default()
        );
    }

    #[test]
    fn micro_time_is_rfc3339_with_microseconds() {
        let t = micro_time();
        assert_eq!(t.len(), "2026-11-25T09:30:00.123456Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }

    #[tokio::test]
    async fn leadership_is_lost_when_its_deadline_passes() {
        let (tx, _) = watch::channel(None);
        let l = Leadership {
            until: tx.subscribe(),
        };
        assert!(!l.is_held());
        tx.send_replace(Some(Instant::now() + Duration::from_secs(3600)));
        assert!(l.is_held());
        tx.send_replace(Some(Instant::now() + Duration::from_millis(50)));
        tokio::time::timeout(Duration::from_secs(10), l.lost())
            .await
            .unwrap();
        assert!(!l.is_held());
    }
}
