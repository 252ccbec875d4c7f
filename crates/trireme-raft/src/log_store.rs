//! The Raft log, hard state and compaction point, stored in their own sled database.
//!
//! Layout in sled's default tree:
//! - `e` + index (8 bytes, big endian) -> term (8 bytes BE) + the entry in raft's
//!   protobuf encoding (the term is kept in front so `term()` never decodes an entry);
//! - `hs` -> the `HardState`;
//! - `snap` -> index and term of the compaction point (the last entry no longer in
//!   the log; its term is kept to match `MsgAppend`s against it).
//!
//! The conf state is *not* stored here: it lives with the state machine, written in the
//! same atomic batch as the applied index (see `StateMachine`), and is handed to
//! [`LogStore::set_conf_state`] when the node starts.
//!
//! Durability: [`LogStore::append`] writes entries and hard state in one sled batch and,
//! when raft-rs says the Ready must be synced, makes it durable with
//! [`DurableSled::sync`] before returning. Every error is fail-stop.

use std::cell::{Cell, RefCell};
use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::durable::{sled_to_io, DurableSled};
use crate::error::StorageError;

const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_SNAP: &[u8] = b"snap";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, StorageError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt(format!("short record of {} bytes", bytes.len())))
}

/// The durable Raft log of one node. Owned by the node's Ready loop thread.
pub struct LogStore {
    /// The sled database holding the log (separate from the state machine's).
    sled: DurableSled,
    /// The hard state as last written.
    hard_state: HardState,
    /// The conf state as of the state machine's applied index; only read by
    /// `initial_state` when the `RawNode` is built.
    conf_state: ConfState,
    /// Index and term of the compaction point (0, 0 for a log never compacted).
    snap_index: u64,
    snap_term: u64,
    /// Index of the last entry in the log (`snap_index` when empty).
    last_index: u64,
    /// The newest snapshot built by the node, offered to raft-rs for lagging followers.
    available_snapshot: RefCell<Option<Snapshot>>,
    /// Set when raft-rs asked for a snapshot and none fit: the node builds one.
    snapshot_wanted: Cell<bool>,
}

impl LogStore {
    /// Opens the log in `dir`, creating it empty if it does not exist.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let sled = DurableSled::open(dir).map_err(StorageError::Io)?;
        let db = &sled.db;
        let hard_state = match db.get(KEY_HARD_STATE).map_err(sled_err)? {
            Some(v) => HardState::parse_from_bytes(&v)
                .map_err(|e| StorageError::Corrupt(format!("hard state: {e}")))?,
            None => HardState::default(),
        };
        let (snap_index, snap_term) = match db.get(KEY_SNAP).map_err(sled_err)? {
            Some(v) => (read_u64(&v, 0)?, read_u64(&v, 8)?),
            None => (0, 0),
        };
        let last_index = match db.scan_prefix([ENTRY_PREFIX]).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(sled_err)?;
                read_u64(&k, 1)?
            }
            None => snap_index,
        };
        Ok(LogStore {
            sled,
            hard_state,
            conf_state: ConfState::default(),
            snap_index,
            snap_term,
            last_index: last_index.max(snap_index),
            available_snapshot: RefCell::new(None),
            snapshot_wanted: Cell::new(false),
        })
    }

    /// True if nothing was ever written: no entry, no hard state, no compaction point.
    pub fn is_empty(&self) -> bool {
        self.last_index == 0 && self.hard_state == HardState::default()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snap_index
    }

    pub fn last_index_now(&self) -> u64 {
        self.last_index
    }

    /// The conf state `initial_state` reports: the state machine's, at its applied index.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Persists a Ready: appends `entries` (dropping any conflicting suffix first) and
    /// the hard state in ONE sled batch, then fsyncs if `sync`.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        let mut new_last = self.last_index;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            if first.index <= self.snap_index {
                return Err(StorageError::Corrupt(format!(
                    "append at {} at or below the compaction point {}",
                    first.index, self.snap_index
                )));
            }
            if first.index > self.last_index + 1 {
                return Err(StorageError::Corrupt(format!(
                    "append at {} leaves a gap after {}",
                    first.index, self.last_index
                )));
            }
            // Entries at and after `first.index` are replaced; those past `last.index`
            // belong to the conflicting suffix and must go in the same batch.
            for index in last.index + 1..=self.last_index {
                batch.remove(&entry_key(index));
            }
            for e in entries {
                let mut v = Vec::with_capacity(8 + e.compute_size() as usize);
                v.extend_from_slice(&e.term.to_be_bytes());
                e.write_to_vec(&mut v)
                    .map_err(|err| StorageError::Corrupt(format!("encode entry: {err}")))?;
                batch.insert(&entry_key(e.index), v);
            }
            new_last = last.index;
        }
        if let Some(hs) = hard_state {
            let v = hs
                .write_to_bytes()
                .map_err(|err| StorageError::Corrupt(format!("encode hard state: {err}")))?;
            batch.insert(KEY_HARD_STATE, v);
        }
        self.sled.db.apply_batch(batch).map_err(sled_err)?;
        if sync {
            self.sled.sync().map_err(StorageError::Io)?;
        }
        self.last_index = new_last;
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a new commit index (no fsync: on restart the commit index is raised to
    /// the state machine's applied index, so losing this write is harmless).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        if commit <= self.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.append(&[], Some(&hs), false)
    }

    /// Drops every entry up to and including `index`, which must be applied and
    /// durable in the state machine. Fsyncs.
    pub fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        if index <= self.snap_index {
            return Ok(());
        }
        if index > self.last_index {
            return Err(StorageError::Corrupt(format!(
                "compact to {index} past the last index {}",
                self.last_index
            )));
        }
        let term = self.term_of(index)?;
        let mut batch = sled::Batch::default();
        for i in self.snap_index + 1..=index {
            batch.remove(&entry_key(i));
        }
        batch.insert(KEY_SNAP, snap_record(index, term).to_vec());
        self.sled.db.apply_batch(batch).map_err(sled_err)?;
        self.sled.sync().map_err(StorageError::Io)?;
        self.snap_index = index;
        self.snap_term = term;
        Ok(())
    }

    /// Replaces the whole log by a snapshot's compaction point (the state machine has
    /// already restored and synced the snapshot's state). Fsyncs.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for i in self.snap_index + 1..=self.last_index {
            batch.remove(&entry_key(i));
        }
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        batch.insert(KEY_SNAP, snap_record(meta.index, meta.term).to_vec());
        batch.insert(
            KEY_HARD_STATE,
            hs.write_to_bytes()
                .map_err(|err| StorageError::Corrupt(format!("encode hard state: {err}")))?,
        );
        self.sled.db.apply_batch(batch).map_err(sled_err)?;
        self.sled.sync().map_err(StorageError::Io)?;
        self.snap_index = meta.index;
        self.snap_term = meta.term;
        self.last_index = meta.index;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    /// Offers a snapshot the node has built to raft-rs.
    pub fn set_available_snapshot(&self, snap: Snapshot) {
        *self.available_snapshot.borrow_mut() = Some(snap);
        self.snapshot_wanted.set(false);
    }

    /// The snapshot currently offered, if any.
    pub fn available_snapshot(&self) -> Option<Snapshot> {
        self.available_snapshot.borrow().clone()
    }

    /// True once per request from raft-rs for a snapshot newer than the one offered.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snap_index {
            return Ok(self.snap_term);
        }
        match self.sled.db.get(entry_key(index)).map_err(sled_err)? {
            Some(v) => read_u64(&v, 0),
            None => Err(StorageError::Corrupt(format!("entry {index} missing"))),
        }
    }
}

fn snap_record(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v[8..].copy_from_slice(&term.to_be_bytes());
    v
}

fn sled_err(e: sled::Error) -> StorageError {
    StorageError::Io(sled_to_io(e))
}

fn to_raft(e: StorageError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snap_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for kv in self.sled.db.range(entry_key(low)..entry_key(high)) {
            let (_, v) = kv.map_err(|e| to_raft(sled_err(e)))?;
            let body = v
                .get(8..)
                .ok_or_else(|| to_raft(StorageError::Corrupt("short entry".into())))?;
            let e = Entry::parse_from_bytes(body)
                .map_err(|err| to_raft(StorageError::Corrupt(format!("entry: {err}"))))?;
            size += u64::from(e.compute_size());
            // Always return at least one entry, as the trait requires.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && high > low {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_index {
            return Ok(self.snap_term);
        }
        if idx < self.snap_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        self.term_of(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if let Some(s) = self.available_snapshot.borrow().as_ref() {
            let index = s.get_metadata().index;
            if index >= request_index && index >= self.snap_index {
                return Ok(s.clone());
            }
        }
        // Building a snapshot walks the whole state machine: the node does it after
        // this Ready, and raft-rs asks again on the follower's next response.
        self.snapshot_wanted.set(true);
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("e{index}").into_bytes().into();
        e
    }

    #[test]
    fn append_replaces_conflicting_suffix_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            assert!(s.is_empty());
            let es: Vec<_> = (1..=5).map(|i| entry(i, 1)).collect();
            s.append(&es, None, true).unwrap();
            // A new leader overwrites from 3 with a shorter suffix of term 2.
            s.append(&[entry(3, 2)], None, true).unwrap();
            assert_eq!(s.last_index_now(), 3);
            let mut hs = HardState::default();
            hs.term = 2;
            hs.commit = 2;
            s.append(&[], Some(&hs), true).unwrap();
        }
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.hard_state().commit, 2);
        let es = s
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(es.len(), 3);
        assert!(matches!(
            s.term(4),
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        ));
    }

    #[test]
    fn compaction_keeps_the_term_of_the_compaction_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let es: Vec<_> = (1..=10).map(|i| entry(i, i / 4 + 1)).collect();
        s.append(&es, None, true).unwrap();
        s.compact(6).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.term(6).unwrap(), 2);
        assert!(matches!(
            s.term(5),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        drop(s);
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(Storage::last_index(&s).unwrap(), 10);
    }

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let es: Vec<_> = (1..=10).map(|i| entry(i, 1)).collect();
        s.append(&es, None, true).unwrap();
        let got = s
            .entries(1, 11, 1, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
        let got = s
            .entries(1, 11, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let es: Vec<_> = (1..=3).map(|i| entry(i, 1)).collect();
        s.append(&es, None, true).unwrap();
        let mut meta = SnapshotMetadata::default();
        meta.index = 20;
        meta.term = 4;
        s.apply_snapshot(&meta).unwrap();
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(Storage::last_index(&s).unwrap(), 20);
        assert_eq!(s.term(20).unwrap(), 4);
        assert_eq!(s.hard_state().commit, 20);
        s.append(&[entry(21, 4)], None, true).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 21);
    }
}
