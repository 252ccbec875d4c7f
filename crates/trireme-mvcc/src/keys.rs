//! The on-disk layout: every record lives in ONE sled tree, told apart by a one-byte
//! prefix, so that an apply group can be one atomic sled batch.
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `m`    | meta name                             | u64 BE (format) or postcard    |
//! | `r`    | rev BE u64, sub BE u32                | [`RevRecord`] (see its encoding) |
//! | `l`    | lease id (order-preserving u64)       | [`LeaseRecord`] (postcard)     |
//! | `a`    | lease id, user key                    | empty (attachment)             |
//! | `c`    | cluster record key (opaque)           | opaque (the layer above's)     |
//!
//! Every key version is one `r` record, keyed by the revision that wrote it, as in
//! etcd's backend: a put appends one record at the end of the tree instead of
//! rewriting a random leaf, the records in key order are the event history, and the
//! [`crate::index`] (built from them at open) finds a key's versions.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::types::{EventKind, KeyValue};

pub(crate) const REV: u8 = b'r';
pub(crate) const LEASE: u8 = b'l';
pub(crate) const ATTACH: u8 = b'a';
/// Cluster records ([`crate::ClusterWrite`]): outside revisions, history and the hash.
pub(crate) const CLUSTER: u8 = b'c';

pub(crate) const META_FORMAT: &[u8] = b"mformat";
/// The store revision, compact revision and [`crate::AppliedState`], in ONE record:
/// writing it commits an apply group (see [`crate::Store::apply_batch`]). Excluded
/// from [`crate::Store::hash`] (replicas differ in the applied index), which hashes
/// the two revisions on their own.
pub(crate) const META_STATE: &[u8] = b"mstate";
/// 1 was the layout with a latest-value record per key and history keyed by user key.
pub(crate) const FORMAT_VERSION: u64 = 2;

/// One key version: what revision (rev, sub) did to `key`.
///
/// Encoding (integers big-endian): a put is `p`, create_revision u64, version u64,
/// lease i64, key length u32, key, value (the rest); a deletion is `d`, key length
/// u32, key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RevRecord {
    pub key: Vec<u8>,
    pub op: RevOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RevOp {
    Put {
        create_revision: u64,
        version: u64,
        lease: i64,
        value: Vec<u8>,
    },
    Delete,
}

const REC_PUT: u8 = b'p';
const REC_DELETE: u8 = b'd';

impl RevRecord {
    pub(crate) fn kind(&self) -> EventKind {
        match self.op {
            RevOp::Put { .. } => EventKind::Put,
            RevOp::Delete => EventKind::Delete,
        }
    }

    /// The key-value this record describes, or `None` for a deletion.
    pub(crate) fn into_kv(self, mod_revision: u64) -> Option<KeyValue> {
        match self.op {
            RevOp::Put {
                create_revision,
                version,
                lease,
                value,
            } => Some(KeyValue {
                key: self.key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            }),
            RevOp::Delete => None,
        }
    }
}

/// Encodes a put record without building a [`RevRecord`] (no copy of the value).
pub(crate) fn encode_put(
    key: &[u8],
    create_revision: u64,
    version: u64,
    lease: i64,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(29 + key.len() + value.len());
    out.push(REC_PUT);
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&lease.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

pub(crate) fn encode_delete(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len());
    out.push(REC_DELETE);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// What a record holds, borrowed from its bytes.
pub(crate) struct RevRecordRef<'a> {
    pub key: &'a [u8],
    /// `(create_revision, version, lease, value)` for a put, `None` for a deletion.
    pub put: Option<(u64, u64, i64, &'a [u8])>,
}

impl RevRecordRef<'_> {
    pub(crate) fn to_owned(&self) -> RevRecord {
        RevRecord {
            key: self.key.to_vec(),
            op: match self.put {
                Some((create_revision, version, lease, value)) => RevOp::Put {
                    create_revision,
                    version,
                    lease,
                    value: value.to_vec(),
                },
                None => RevOp::Delete,
            },
        }
    }
}

pub(crate) fn parse_record(raw: &[u8]) -> Result<RevRecordRef<'_>, StorageError> {
    let bad = || StorageError::corrupt("revision record", format!("{} bytes", raw.len()));
    let u64_at = |at: usize| -> Result<u64, StorageError> {
        let b = raw.get(at..at + 8).ok_or_else(bad)?;
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| bad())?))
    };
    let key_at = |at: usize| -> Result<(&[u8], usize), StorageError> {
        let b = raw.get(at..at + 4).ok_or_else(bad)?;
        let len = u32::from_be_bytes(b.try_into().map_err(|_| bad())?) as usize;
        let end = at + 4 + len;
        Ok((raw.get(at + 4..end).ok_or_else(bad)?, end))
    };
    match raw.first() {
        Some(&REC_PUT) => {
            let create_revision = u64_at(1)?;
            let version = u64_at(9)?;
            let lease = u64_at(17)? as i64;
            let (key, end) = key_at(25)?;
            let value = raw.get(end..).ok_or_else(bad)?;
            Ok(RevRecordRef {
                key,
                put: Some((create_revision, version, lease, value)),
            })
        }
        Some(&REC_DELETE) => {
            let (key, end) = key_at(1)?;
            if end != raw.len() {
                return Err(bad());
            }
            Ok(RevRecordRef { key, put: None })
        }
        _ => Err(bad()),
    }
}

pub(crate) fn rev_key(rev: u64, sub: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = REV;
    k[1..9].copy_from_slice(&rev.to_be_bytes());
    k[9..13].copy_from_slice(&sub.to_be_bytes());
    k
}

pub(crate) fn parse_rev_key(raw: &[u8]) -> Result<(u64, u32), StorageError> {
    let bad = || StorageError::corrupt("revision key", format!("{raw:?}"));
    let body = raw.strip_prefix(&[REV]).ok_or_else(bad)?;
    if body.len() != 12 {
        return Err(bad());
    }
    let (rev, sub) = body.split_at(8);
    Ok((
        u64::from_be_bytes(rev.try_into().map_err(|_| bad())?),
        u32::from_be_bytes(sub.try_into().map_err(|_| bad())?),
    ))
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

/// Lower and upper bound of a [`KeyRange`] over user keys.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

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

    /// Every key.
    pub(crate) fn all() -> KeyRange {
        KeyRange::Span {
            start: Vec::new(),
            end: None,
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

    /// The user-key bounds of this range (None if it is empty).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeyRange::Span { start, end } => Some((
                Bound::Included(start),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            )),
            KeyRange::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_rev_keys_sort_by_revision() {
        let put = encode_put(b"a\0b", 3, 2, -7, b"value");
        let rec = parse_record(&put).unwrap();
        assert_eq!(rec.key, b"a\0b");
        assert_eq!(rec.put, Some((3, 2, -7, &b"value"[..])));
        assert_eq!(
            rec.to_owned().into_kv(9),
            Some(KeyValue {
                key: b"a\0b".to_vec(),
                create_revision: 3,
                mod_revision: 9,
                version: 2,
                value: b"value".to_vec(),
                lease: -7,
            })
        );
        let empty = encode_put(b"k", 1, 1, 0, b"");
        let empty = parse_record(&empty).unwrap();
        assert_eq!(empty.put, Some((1, 1, 0, &b""[..])));
        let del = encode_delete(b"k");
        let del = parse_record(&del).unwrap();
        assert_eq!((del.key, del.put), (&b"k"[..], None));
        assert_eq!(del.to_owned().kind(), EventKind::Delete);
        let revs = [
            (1u64, 0u32),
            (1, 1),
            (1, 256),
            (2, 0),
            (256, 0),
            (u64::MAX, 7),
        ];
        let raws: Vec<_> = revs.iter().map(|&(r, s)| rev_key(r, s)).collect();
        let mut sorted = raws.clone();
        sorted.sort();
        assert_eq!(raws, sorted);
        for (&want, raw) in revs.iter().zip(&raws) {
            assert_eq!(parse_rev_key(raw).unwrap(), want);
        }
    }

    #[test]
    fn range_bounds_select_exactly_the_range() {
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
                let in_bounds = range
                    .bounds()
                    .is_some_and(|b| std::ops::RangeBounds::contains(&b, k));
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
    fn corrupt_records_are_errors_not_panics() {
        let put = encode_put(b"key", 1, 1, 0, b"v");
        for cut in 0..29 {
            assert!(parse_record(&put[..cut]).is_err(), "cut at {cut}");
        }
        let mut long_key = put.clone();
        long_key[28] = 200;
        assert!(parse_record(&long_key).is_err());
        let mut del = encode_delete(b"k");
        del.push(0);
        assert!(parse_record(&del).is_err());
        assert!(parse_record(b"x").is_err());
        assert!(parse_rev_key(b"r\0").is_err());
        assert!(parse_rev_key(b"l0123456789ab").is_err());
        assert!(parse_lease_key(b"l12").is_err());
    }
}
