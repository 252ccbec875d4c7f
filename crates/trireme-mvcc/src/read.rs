//! Reads over a [`View`]: ranges at the current or a past revision, the event history,
//! and leases. Used both by [`crate::Store`]'s readers and inside an apply (txn ranges
//! and compares), where the view includes the apply group's pending writes.

use std::ops::Bound;

use crate::error::{ReadError, StorageError};
use crate::keys::{self, HistRecord, KeyRange, LeaseRecord};
use crate::types::{Event, EventKind, KeyValue, LeaseInfo, RangeRequest, RangeResponse};
use crate::view::View;

/// The revisions a range is evaluated against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadCtx {
    /// The store revision (reported in the response; reads above it are refused).
    pub current: u64,
    pub compact: u64,
    /// The revision the `k` records reflect, if they reflect one; `None` inside a txn
    /// that has written (they are then ahead of `current`).
    pub kv_revision: Option<u64>,
}

/// Accumulates matches under a range request's limit and options.
struct Collector<'r> {
    req: &'r RangeRequest,
    kvs: Vec<KeyValue>,
    count: u64,
}

impl<'r> Collector<'r> {
    fn new(req: &'r RangeRequest) -> Self {
        Collector {
            req,
            kvs: Vec::new(),
            count: 0,
        }
    }

    /// Whether the next match would be returned (else it is only counted).
    fn wants_kv(&self) -> bool {
        !self.req.count_only && (self.req.limit == 0 || (self.kvs.len() as u64) < self.req.limit)
    }

    fn push(&mut self, mut kv: KeyValue) {
        if self.wants_kv() {
            if self.req.keys_only {
                kv.value = Vec::new();
            }
            self.kvs.push(kv);
        }
        self.count += 1;
    }

    fn finish(self, revision: u64) -> RangeResponse {
        RangeResponse {
            more: (self.kvs.len() as u64) < self.count && !self.req.count_only,
            kvs: self.kvs,
            count: self.count,
            revision,
        }
    }
}

pub(crate) fn range(
    view: View<'_>,
    req: &RangeRequest,
    ctx: ReadCtx,
) -> Result<RangeResponse, ReadError> {
    if req.key.is_empty() {
        return Err(ReadError::EmptyKey);
    }
    if req.revision > ctx.current {
        return Err(ReadError::FutureRevision {
            current: ctx.current,
        });
    }
    if req.revision > 0 && req.revision < ctx.compact {
        return Err(ReadError::Compacted {
            compact_revision: ctx.compact,
        });
    }
    let keys = KeyRange::new(&req.key, &req.range_end);
    let mut out = Collector::new(req);
    if req.revision == 0 || Some(req.revision) == ctx.kv_revision {
        scan_current(view, &keys, &mut out)?;
    } else {
        scan_history(view, &keys, req.revision, &mut out)?;
    }
    Ok(out.finish(ctx.current))
}

fn scan_current(
    view: View<'_>,
    keys: &KeyRange,
    out: &mut Collector<'_>,
) -> Result<(), StorageError> {
    if let KeyRange::Single(k) = keys {
        if let Some(raw) = view.get(&keys::kv_key(k))? {
            out.push(keys::decode("kv", &raw)?);
        }
        return Ok(());
    }
    let Some((lo, hi)) = keys.kv_bounds() else {
        return Ok(());
    };
    for item in view.scan(lo, hi) {
        let (_, raw) = item?;
        if out.wants_kv() {
            out.push(keys::decode("kv", &raw)?);
        } else {
            out.count += 1;
        }
    }
    Ok(())
}

/// For each key in range, the newest version at or below `at`, if it is not a deletion.
fn scan_history(
    view: View<'_>,
    keys: &KeyRange,
    at: u64,
    out: &mut Collector<'_>,
) -> Result<(), StorageError> {
    let Some((lo, hi)) = keys.hist_bounds() else {
        return Ok(());
    };
    let mut current: Option<Vec<u8>> = None;
    let mut best: Option<(u64, sled::IVec)> = None;
    let flush = |key: Option<Vec<u8>>, best: Option<(u64, sled::IVec)>, out: &mut Collector<'_>| {
        if let (Some(key), Some((rev, raw))) = (key, best) {
            let rec: HistRecord = keys::decode("history record", &raw)?;
            if let Some(kv) = rec.into_kv(key, rev) {
                out.push(kv);
            }
        }
        Ok::<(), StorageError>(())
    };
    for item in view.scan(lo, hi) {
        let (raw_key, raw) = item?;
        let (user, rev, _sub) = keys::parse_hist_key(&raw_key)?;
        if current.as_deref() != Some(user.as_slice()) {
            flush(current.take(), best.take(), out)?;
            current = Some(user);
        }
        if rev <= at {
            best = Some((rev, raw));
        }
    }
    flush(current, best, out)
}

/// The live key-values in `keys`, in key order, including pending writes.
pub(crate) fn current_kvs(view: View<'_>, keys: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
    let req = RangeRequest::default();
    let mut out = Collector::new(&req);
    scan_current(view, keys, &mut out)?;
    Ok(out.kvs)
}

pub(crate) fn get_kv(view: View<'_>, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
    view.get(&keys::kv_key(key))?
        .map(|raw| keys::decode("kv", &raw))
        .transpose()
}

/// Events with revision >= `from` on keys in `keys`, in (revision, sub) order.
pub(crate) fn events(
    tree: &sled::Tree,
    from: u64,
    keys: &KeyRange,
    limit: usize,
    with_prev_kv: bool,
) -> Result<Vec<Event>, StorageError> {
    let view = View::new(tree, None);
    let mut out = Vec::new();
    let scan = view.scan(
        keys::event_key(from, 0),
        Bound::Excluded(vec![keys::EVENT + 1]),
    );
    for item in scan {
        let (raw_key, raw) = item?;
        let (rev, sub) = keys::parse_event_key(&raw_key)?;
        let (kind, key) = keys::parse_event_value(&raw)?;
        if !keys.contains(&key) {
            continue;
        }
        let kv = match kind {
            EventKind::Put => {
                let raw = tree.get(keys::hist_key(&key, rev, sub))?.ok_or_else(|| {
                    StorageError::corrupt("event", format!("no version for {rev}.{sub}"))
                })?;
                let rec: HistRecord = keys::decode("history record", &raw)?;
                rec.into_kv(key.clone(), rev).ok_or_else(|| {
                    StorageError::corrupt("event", format!("put {rev}.{sub} is a tombstone"))
                })?
            }
            EventKind::Delete => KeyValue {
                key: key.clone(),
                mod_revision: rev,
                ..KeyValue::default()
            },
        };
        let prev_kv = if with_prev_kv {
            prev_version(tree, &key, rev, sub)?
        } else {
            None
        };
        out.push(Event { kind, kv, prev_kv });
        if limit > 0 && out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The version of `key` just before (rev, sub), if it is kept and not a deletion.
fn prev_version(
    tree: &sled::Tree,
    key: &[u8],
    rev: u64,
    sub: u32,
) -> Result<Option<KeyValue>, StorageError> {
    let lo = keys::hist_key_prefix(key);
    let hi = keys::hist_key(key, rev, sub);
    let Some(item) = tree.range(lo..hi).next_back() else {
        return Ok(None);
    };
    let (raw_key, raw) = item?;
    let (_, prev_rev, _) = keys::parse_hist_key(&raw_key)?;
    let rec: HistRecord = keys::decode("history record", &raw)?;
    Ok(rec.into_kv(key.to_vec(), prev_rev))
}

pub(crate) fn lease(view: View<'_>, id: i64) -> Result<Option<LeaseInfo>, StorageError> {
    let Some(raw) = view.get(&keys::lease_key(id))? else {
        return Ok(None);
    };
    let rec: LeaseRecord = keys::decode("lease", &raw)?;
    Ok(Some(LeaseInfo {
        id,
        ttl_seconds: rec.ttl_seconds,
        keys: lease_keys(view, id)?,
    }))
}

/// The keys attached to lease `id`, in key order.
pub(crate) fn lease_keys(view: View<'_>, id: i64) -> Result<Vec<Vec<u8>>, StorageError> {
    let prefix = keys::attach_prefix(id);
    let (lo, hi) = keys::prefix_range(&prefix);
    view.scan(lo, hi)
        .map(|item| keys::parse_attach_key(&prefix, &item?.0))
        .collect()
}

pub(crate) fn leases(view: View<'_>) -> Result<Vec<LeaseInfo>, StorageError> {
    let (lo, hi) = keys::prefix_range(&[keys::LEASE]);
    let mut out = Vec::new();
    for item in view.scan(lo, hi) {
        let (raw_key, raw) = item?;
        let id = keys::parse_lease_key(&raw_key)?;
        let rec: LeaseRecord = keys::decode("lease", &raw)?;
        out.push(LeaseInfo {
            id,
            ttl_seconds: rec.ttl_seconds,
            keys: lease_keys(view, id)?,
        });
    }
    Ok(out)
}
