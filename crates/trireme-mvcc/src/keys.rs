//! The on-disk layout: every record lives in ONE sled tree, told apart by a one-byte
//! prefix, so that one apply group is one atomic sled batch.
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `m`    | meta name                             | u64 BE or postcard             |
//! | `k`    | user key                              | latest [`KeyValue`] (postcard) |
//! | `h`    | esc(user key), rev BE u64, sub BE u32 | [`HistRecord`] (postcard)      |
//! | `e`    | rev BE u64, sub BE u32                | kind byte + user key           |
//! | `l`    | lease id (order-preserving u64)       | [`LeaseRecord`] (postcard)     |
//! | `a`    | lease id, user key                    | empty (attachment)             |
//! | `c`    | cluster record key (opaque)           | opaque (the layer above's)     |
//!
//! `esc` is order-preserving and prefix-free: each `0x00` becomes `0x00 0xff` and the
//! key ends with `0x00 0x01`, so the versions of `a` never interleave with `a\0..`.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::types::{EventKind, KeyValue};

pub(crate) const KV: u8 = b'k';
pub(crate) const HIST: u8 = b'h';
pub(crate) const EVENT: u8 = b'e';
pub(crate) const LEASE: u8 = b'l';
pub(crate) const ATTACH: u8 = b'a';
/// Cluster records ([`crate::ClusterWrite`]): outside revisions, history and the hash.
pub(crate) const CLUSTER: u8 = b'c';

pub(crate) const META_FORMAT: &[u8] = b"mformat";
pub(crate) const META_REVISION: &[u8] = b"mrevision";
pub(crate) const META_COMPACT: &[u8] = b"mcompact";
/// Excluded from [`crate::Store::hash`]: replicas differ in it.
pub(crate) const META_APPLIED: &[u8] = b"mapplied";
pub(crate) const FORMAT_VERSION: u64 = 1;

/// A key version in the history: what a read at its revision sees.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) enum HistRecord {
    Put {
        create_revision: u64,
        version: u64,
        lease: i64,
        value: Vec<u8>,
    },
    Delete,
}

impl HistRecord {
    /// The key-value this record describes, or `None` for a deletion.
    pub(crate) fn into_kv(self, key: Vec<u8>, mod_revision: u64) -> Option<KeyValue> {
        match self {
            HistRecord::Put {
                create_revision,
                version,
                lease,
                value,
            } => Some(KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            }),
            HistRecord::Delete => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub ttl_seconds: i64,
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|e| StorageError::corrupt(what, format!("encoding: {e}")))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::corrupt(what, e))
}

pub(crate) fn decode_u64(what: &'static str, bytes: &[u8]) -> Result<u64, StorageError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::corrupt(what, format!("{} bytes, want 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn cluster_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(CLUSTER);
    k.extend_from_slice(key);
    k
}

pub(crate) fn kv_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(KV);
    k.extend_from_slice(key);
    k
}

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

pub(crate) fn hist_key(key: &[u8], rev: u64, sub: u32) -> Vec<u8> {
    let mut k = hist_key_prefix(key);
    k.extend_from_slice(&rev.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

/// `h` + esc(key) + terminator: every version of exactly `key` starts with this.
pub(crate) fn hist_key_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 15);
    k.push(HIST);
    escape_into(&mut k, key);
    k.extend_from_slice(&[0, 1]);
    k
}

/// Splits an `h` key into (user key, revision, sub-revision).
pub(crate) fn parse_hist_key(raw: &[u8]) -> Result<(Vec<u8>, u64, u32), StorageError> {
    let bad = || StorageError::corrupt("history key", format!("{raw:?}"));
    let body = raw.strip_prefix(&[HIST]).ok_or_else(bad)?;
    let mut user = Vec::with_capacity(body.len());
    let mut i = 0;
    loop {
        let b = *body.get(i).ok_or_else(bad)?;
        if b != 0 {
            user.push(b);
            i += 1;
            continue;
        }
        match body.get(i + 1) {
            Some(0xff) => {
                user.push(0);
                i += 2;
            }
            Some(1) => {
                i += 2;
                break;
            }
            _ => return Err(bad()),
        }
    }
    let tail = body.get(i..).ok_or_else(bad)?;
    if tail.len() != 12 {
        return Err(bad());
    }
    let (rev, sub) = tail.split_at(8);
    let rev = u64::from_be_bytes(rev.try_into().map_err(|_| bad())?);
    let sub = u32::from_be_bytes(sub.try_into().map_err(|_| bad())?);
    Ok((user, rev, sub))
}

pub(crate) fn event_key(rev: u64, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(EVENT);
    k.extend_from_slice(&rev.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

pub(crate) fn parse_event_key(raw: &[u8]) -> Result<(u64, u32), StorageError> {
    let bad = || StorageError::corrupt("event key", format!("{raw:?}"));
    let body = raw.strip_prefix(&[EVENT]).ok_or_else(bad)?;
    if body.len() != 12 {
        return Err(bad());
    }
    let (rev, sub) = body.split_at(8);
    Ok((
        u64::from_be_bytes(rev.try_into().map_err(|_| bad())?),
        u32::from_be_bytes(sub.try_into().map_err(|_| bad())?),
    ))
}

pub(crate) fn event_value(kind: EventKind, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.push(match kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    v.extend_from_slice(key);
    v
}

pub(crate) fn parse_event_value(raw: &[u8]) -> Result<(EventKind, Vec<u8>), StorageError> {
    match raw.split_first() {
        Some((0, key)) => Ok((EventKind::Put, key.to_vec())),
        Some((1, key)) => Ok((EventKind::Delete, key.to_vec())),
        _ => Err(StorageError::corrupt("event", format!("{raw:?}"))),
    }
}

/// Maps an i64 lease id onto a u64 whose big-endian bytes sort like the i64.
fn lease_id_bytes(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

fn lease_id_from(bytes: &[u8]) -> Result<i64, StorageError> {
    let raw = decode_u64("lease id", bytes)?;
    Ok((raw ^ (1 << 63)) as i64)
}

pub(crate) fn lease_key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LEASE);
    k.extend_from_slice(&lease_id_bytes(id));
    k
}

pub(crate) fn parse_lease_key(raw: &[u8]) -> Result<i64, StorageError> {
    match raw.split_first() {
        Some((&LEASE, id)) => lease_id_from(id),
        _ => Err(StorageError::corrupt("lease key", format!("{raw:?}"))),
    }
}

pub(crate) fn attach_prefix(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ATTACH);
    k.extend_from_slice(&lease_id_bytes(id));
    k
}

pub(crate) fn attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = attach_prefix(id);
    k.extend_from_slice(key);
    k
}

/// The user key of an attachment record under `prefix` (from [`attach_prefix`]).
pub(crate) fn parse_attach_key(prefix: &[u8], raw: &[u8]) -> Result<Vec<u8>, StorageError> {
    raw.strip_prefix(prefix)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| StorageError::corrupt("attachment key", format!("{raw:?}")))
}

/// The half-open raw key range `[lo, hi)` with everything starting with `prefix`.
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Bound<Vec<u8>>) {
    let hi = crate::types::prefix_end(prefix);
    let hi = if hi == [0] {
        Bound::Unbounded
    } else {
        Bound::Excluded(hi)
    };
    (prefix.to_vec(), hi)
}

/// A user key range after applying etcd's `range_end` conventions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// Exactly one key.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means no upper bound.
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    /// `range_end <= key`: matches nothing.
    Empty,
}

impl KeyRange {
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::Span {
                start: key.to_vec(),
                end: None,
            }
        } else if range_end <= key {
            KeyRange::Empty
        } else {
            KeyRange::Span {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => s == k,
            KeyRange::Span { start, end } => {
                k >= start.as_slice() && end.as_deref().is_none_or(|e| k < e)
            }
            KeyRange::Empty => false,
        }
    }

    /// Raw `[lo, hi)` over the `k` records of this range (None if empty).
    pub(crate) fn kv_bounds(&self) -> Option<(Vec<u8>, Bound<Vec<u8>>)> {
        match self {
            KeyRange::Single(k) => {
                let lo = kv_key(k);
                let mut hi = lo.clone();
                hi.push(0);
                Some((lo, Bound::Excluded(hi)))
            }
            KeyRange::Span { start, end } => Some((
                kv_key(start),
                Bound::Excluded(match end {
                    Some(e) => kv_key(e),
                    None => vec![KV + 1],
                }),
            )),
            KeyRange::Empty => None,
        }
    }

    /// Raw `[lo, hi)` over the `h` records of this range (None if empty).
    pub(crate) fn hist_bounds(&self) -> Option<(Vec<u8>, Bound<Vec<u8>>)> {
        let esc = |k: &[u8]| {
            let mut v = vec![HIST];
            escape_into(&mut v, k);
            v
        };
        match self {
            KeyRange::Single(k) => {
                let lo = hist_key_prefix(k);
                let mut hi = esc(k);
                hi.extend_from_slice(&[0, 2]);
                Some((lo, Bound::Excluded(hi)))
            }
            KeyRange::Span { start, end } => Some((
                esc(start),
                Bound::Excluded(match end {
                    Some(e) => esc(e),
                    None => vec![HIST + 1],
                }),
            )),
            KeyRange::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_key_roundtrip_and_order() {
        let keys: &[&[u8]] = &[
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"a\x01", b"ab", b"b",
        ];
        let mut raws = Vec::new();
        for k in keys {
            for rev in [1u64, 2, 300] {
                for sub in [0u32, 5] {
                    let raw = hist_key(k, rev, sub);
                    assert_eq!(parse_hist_key(&raw).unwrap(), (k.to_vec(), rev, sub));
                    raws.push(raw);
                }
            }
        }
        // keys are listed in order, so the encoded records must already be sorted and
        // the versions of one key must be contiguous.
        let mut sorted = raws.clone();
        sorted.sort();
        assert_eq!(raws, sorted);
    }

    #[test]
    fn hist_bounds_select_exactly_the_range() {
        let keys: &[&[u8]] = &[b"a", b"a\0", b"a\0\0", b"ab", b"b", b"b\0", b"c"];
        let ranges: &[(&[u8], &[u8])] = &[
            (b"a", b""),
            (b"a\0", b""),
            (b"a", b"b"),
            (b"a\0", b"b\0"),
            (b"a", b"a\0"),
            (b"b", b"\0"),
            (b"c", b"a"),
        ];
        for (start, end) in ranges {
            let range = KeyRange::new(start, end);
            for k in keys {
                let raw = hist_key(k, 7, 1);
                let in_bounds = range.hist_bounds().is_some_and(|(lo, hi)| {
                    raw >= lo
                        && match hi {
                            Bound::Excluded(h) => raw < h,
                            _ => true,
                        }
                });
                assert_eq!(in_bounds, range.contains(k), "{start:?}..{end:?} key {k:?}");
            }
        }
    }

    #[test]
    fn lease_ids_sort_like_i64() {
        let ids = [i64::MIN, -5, -1, 1, 2, i64::MAX];
        let raws: Vec<_> = ids.iter().map(|&i| lease_key(i)).collect();
        let mut sorted = raws.clone();
        sorted.sort();
        assert_eq!(raws, sorted);
        for (&id, raw) in ids.iter().zip(&raws) {
            assert_eq!(parse_lease_key(raw).unwrap(), id);
        }
    }

    #[test]
    fn corrupt_keys_are_errors_not_panics() {
        assert!(parse_hist_key(b"h").is_err());
        assert!(parse_hist_key(b"hab\0").is_err());
        assert!(parse_hist_key(b"hab\0\x01\0").is_err());
        assert!(parse_event_key(b"e\0").is_err());
        assert!(parse_event_value(b"").is_err());
        assert!(parse_event_value(b"\x07k").is_err());
        assert!(parse_lease_key(b"l12").is_err());
    }
}
