//! The etcd v3 data model: commands, requests, responses, key-values and events.
//!
//! Every type here crosses the wire with postcard, so all derive `Serialize` and
//! `Deserialize`. None of them knows about sled. Byte strings are serialized as
//! bytes (`serde_bytes`): postcard writes them exactly as it writes a `Vec<u8>` as a
//! sequence (a varint length, then the bytes), but in one copy instead of one call
//! per byte, so entries already in logs decode the same.

use serde::{Deserialize, Serialize};

use crate::error::CommandError;

/// One committed Raft entry handed to [`crate::Store::apply_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyEntry {
    /// Raft log index; entries at or below the applied index are skipped.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// The decoded command, or `None` for an empty or conf-change entry.
    pub command: Option<Command>,
    /// A new opaque conf state from the Raft layer, replacing the stored one.
    pub conf_state: Option<Vec<u8>>,
    /// Cluster records this entry writes (the member table of the layer above),
    /// in the same atomic batch as everything else the entry does.
    pub cluster: Vec<ClusterWrite>,
}

/// A write of one cluster record: metadata the layer above replicates through the
/// store (the member table) outside the user key space. Cluster records have no
/// revision, no history and no events; range requests never see them, the state
/// hash leaves them out, and snapshots carry them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterWrite {
    pub key: Vec<u8>,
    /// `None` deletes the record.
    pub value: Option<Vec<u8>>,
}

/// What the last applied entry was; written atomically with the state it produced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub index: u64,
    pub term: u64,
    /// Opaque bytes owned by the Raft layer (its encoded `ConfState`).
    #[serde(with = "serde_bytes")]
    pub conf_state: Vec<u8>,
}

/// A state-changing command, replicated through Raft.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact { revision: u64 },
    LeaseGrant { id: i64, ttl_seconds: i64 },
    LeaseRevoke { id: i64 },
}

/// The outcome of a successfully applied command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact {
        revision: u64,
    },
    LeaseGrant {
        id: i64,
        ttl_seconds: i64,
        revision: u64,
    },
    LeaseRevoke {
        revision: u64,
    },
    /// An entry without a command (empty or conf-change entry): only the applied
    /// index moved. `revision` is the store revision after it.
    Noop {
        revision: u64,
    },
}

/// The per-entry result of [`crate::Store::apply_batch`].
pub type ApplyResult = Result<CommandResult, CommandError>;

/// A key's state at one revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// 1 on create, +1 per put, reset by a delete.
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Attached lease id, 0 for none.
    pub lease: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change in the event history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Delete`: only `key` and `mod_revision` (the delete's revision) are set.
    pub kv: KeyValue,
    /// The key's previous value, if asked for, if it existed and is not compacted away.
    pub prev_kv: Option<KeyValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Empty: just `key`; `[0]`: every key >= `key`; otherwise `[key, range_end)`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// At most this many kvs, 0 for no limit.
    pub limit: u64,
    /// Read as of this revision, 0 for the current one.
    pub revision: u64,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True if `limit` cut the result.
    pub more: bool,
    /// Number of matching keys, ignoring `limit`.
    pub count: u64,
    /// Store revision the read saw.
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none.
    pub lease: i64,
    pub prev_kv: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: u64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: u64,
    pub deleted: u64,
    /// The deleted key-values in key order, if `prev_kv` was asked for.
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    /// The txn's revision: a new one if the chosen branch wrote, else the current one.
    pub revision: u64,
}

/// One txn guard, with etcd semantics (a missing key has version, create and mod
/// revision 0, lease 0, and fails every `Value` compare).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Empty for a single key; otherwise every key in range must satisfy the compare.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A granted lease and the keys attached to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl_seconds: i64,
    /// Attached keys in key order.
    pub keys: Vec<Vec<u8>>,
}

/// What [`crate::Store::write_snapshot`] captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The applied state the image is at.
    pub applied: AppliedState,
    /// Bytes written to the stream.
    pub bytes: u64,
    /// Records in the image.
    pub records: u64,
}

/// etcd's `GetPrefixRangeEnd`: the range end that selects every key starting with
/// `prefix`. An all-`0xff` (or empty) prefix gives `[0]`, meaning "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::{prefix_end, Compare, CompareResult, CompareTarget, PutRequest};

    /// The layout before byte strings were `serde_bytes`, which entries in existing
    /// logs were written with.
    #[derive(Serialize, Deserialize)]
    struct PutBefore {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
        prev_kv: bool,
    }

    #[derive(Serialize, Deserialize)]
    enum TargetBefore {
        Version(u64),
        CreateRevision(u64),
        ModRevision(u64),
        Value(Vec<u8>),
        Lease(i64),
    }

    #[derive(Serialize, Deserialize)]
    struct CompareBefore {
        key: Vec<u8>,
        range_end: Vec<u8>,
        target: TargetBefore,
        result: CompareResult,
    }

    #[test]
    fn byte_strings_keep_their_postcard_encoding() {
        // 300 bytes: the length takes two varint bytes.
        let put = PutRequest {
            key: b"/registry/configmaps/default/a".to_vec(),
            value: (0..300u16).map(|i| (i % 251) as u8).collect(),
            lease: 7,
            prev_kv: true,
        };
        let before = PutBefore {
            key: put.key.clone(),
            value: put.value.clone(),
            lease: put.lease,
            prev_kv: put.prev_kv,
        };
        let old = postcard::to_allocvec(&before).unwrap();
        assert_eq!(postcard::to_allocvec(&put).unwrap(), old);
        assert_eq!(postcard::from_bytes::<PutRequest>(&old).unwrap(), put);

        let cmp = Compare {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Value(b"v1".to_vec()),
            result: CompareResult::NotEqual,
        };
        let before = CompareBefore {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target: TargetBefore::Value(b"v1".to_vec()),
            result: CompareResult::NotEqual,
        };
        let old = postcard::to_allocvec(&before).unwrap();
        assert_eq!(postcard::to_allocvec(&cmp).unwrap(), old);
        assert_eq!(postcard::from_bytes::<Compare>(&old).unwrap(), cmp);
    }

    #[test]
    fn prefix_end_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a", b"b"),
            (b"abc", b"abd"),
            (b"a\xff", b"b"),
            (b"a\xff\xff", b"b"),
            (b"\xff", b"\0"),
            (b"", b"\0"),
            (b"/registry/pods/", b"/registry/pods0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "prefix {prefix:?}");
        }
    }
}
