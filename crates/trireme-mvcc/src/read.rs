//! Reads over a [`View`]: ranges at the current or a past revision, the event history,
//! and leases. Used both by [`crate::Store`]'s readers and inside an apply (txn ranges
//! and compares), where the view includes the apply group's pending writes.

use crate::error::{ReadError, StorageError};
use crate::index::{EntryRef, Ver};
use crate::keys::{self, KeyRange, LeaseRecord};
use crate::types::{Event, EventKind, KeyValue, LeaseInfo, RangeRequest, RangeResponse};
use crate::view::View;

/// The revisions a range is evaluated against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadCtx {
    /// The store revision (reported in the response; reads above it are refused).
    pub current: u64,
    pub compact: u64,
    /// The revision the live entries of the index reflect, if they reflect one; `None`
    /// inside a txn that has written (they are then ahead of `current`).
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
        if let Some(kv) = get_kv(view, k)? {
            out.push(kv);
        }
        return Ok(());
    }
    collect(view, keys, out, |e| e.live())
}

/// For each key in range, the newest version at or below `at`, if it is not a deletion.
fn scan_history(
    view: View<'_>,
    keys: &KeyRange,
    at: u64,
    out: &mut Collector<'_>,
) -> Result<(), StorageError> {
    collect(view, keys, out, |e| e.at(at).filter(|v| v.put))
}

/// Adds the version `pick` chooses of each key in range, if any (its value is read only
/// when the collector still wants key-values).
fn collect(
    view: View<'_>,
    keys: &KeyRange,
    out: &mut Collector<'_>,
    pick: impl Fn(&EntryRef<'_>) -> Option<Ver>,
) -> Result<(), StorageError> {
    for (_, entry) in view.index.range(keys) {
        let Some(ver) = pick(&entry) else {
            continue;
        };
        if !out.wants_kv() {
            out.count += 1;
        } else if let Some(kv) = view.kv(ver)? {
            out.push(kv);
        }
    }
    Ok(())
}

/// The live key-values in `keys`, in key order, including pending writes.
pub(crate) fn current_kvs(view: View<'_>, keys: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
    let req = RangeRequest::default();
    let mut out = Collector::new(&req);
    scan_current(view, keys, &mut out)?;
    Ok(out.kvs)
}

/// A live key as the index knows it, without reading its value.
pub(crate) struct LiveKey {
    pub key: Vec<u8>,
    pub lease: i64,
}

/// The live keys in `keys`, in key order, including pending writes.
pub(crate) fn live_keys(view: View<'_>, keys: &KeyRange) -> Vec<LiveKey> {
    view.index
        .range(keys)
        .filter_map(|(key, entry)| {
            entry.live().map(|_| LiveKey {
                key: key.to_vec(),
                lease: entry.meta.lease,
            })
        })
        .collect()
}

pub(crate) fn get_kv(view: View<'_>, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
    match view.index.get(key).and_then(|e| e.live()) {
        Some(ver) => view.kv(ver),
        None => Ok(None),
    }
}

/// Events with `from` <= revision <= `to` on keys in `keys`, in (revision, sub) order
/// (`to`: the store revision; a record above it belongs to no committed apply group).
pub(crate) fn events(
    tree: &sled::Tree,
    view: View<'_>,
    (from, to): (u64, u64),
    keys: &KeyRange,
    limit: usize,
    with_prev_kv: bool,
) -> Result<Vec<Event>, StorageError> {
    let mut out = Vec::new();
    let lo = keys::rev_key(from, 0);
    let hi = keys::rev_key(to, u32::MAX);
    let scan = tree.range(&lo[..]..=&hi[..]);
    for item in scan {
        let (raw_key, raw) = item?;
        let (rev, sub) = keys::parse_rev_key(&raw_key)?;
        let rec = keys::parse_record(&raw)?;
        if !keys.contains(rec.key) {
            continue;
        }
        let prev_kv = if with_prev_kv {
            let prev = view.index.get(rec.key).and_then(|e| e.before(rev, sub));
            match prev.filter(|v| v.put) {
                Some(ver) => view.kv(ver)?,
                None => None,
            }
        } else {
            None
        };
        let rec = rec.to_owned();
        let kind = rec.kind();
        let kv = match kind {
            EventKind::Put => rec.into_kv(rev).unwrap_or_default(),
            EventKind::Delete => KeyValue {
                key: rec.key,
                mod_revision: rev,
                ..KeyValue::default()
            },
        };
        out.push(Event { kind, kv, prev_kv });
        if limit > 0 && out.len() >= limit {
            break;
        }
    }
    Ok(out)
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
