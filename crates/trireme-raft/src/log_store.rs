//! The Raft log and hard state: an append-only write-ahead file, with the entries since
//! the compaction point also held in memory (as etcd's `MemoryStorage` does).
//!
//! A segment file `<seq as 16 hex digits>.wal` is an 8-byte magic followed by records
//! `[len u32 LE][crc32 u32 LE][kind u8][body]` (`len` counts kind and body, the crc
//! covers the length, kind and body). Kinds:
//! - `BASE`: compaction point (index and term, 8 bytes BE each) + the hard state. The
//!   first record of every segment, so a segment is complete by itself.
//! - `ENTRY`: one entry in raft's protobuf encoding. An entry at an index already in the
//!   log replaces it and drops everything after it (a new leader's conflicting suffix).
//! - `HARD_STATE`: the hard state.
//! - `COMPACT`: index and term of a new compaction point; entries up to it are gone.
//!
//! [`LogStore::append`] writes one Ready's entries and hard state with ONE `pwrite` and,
//! when raft-rs says so, ONE `fdatasync`. The file is extended with zeros ahead of the
//! records (512 KiB at a time), so an append never changes the file's size and its
//! `fdatasync` writes no metadata; zeros where a record header should be end the log.
//! The Ready that extends pays for writing and flushing the zeros, and every replica's
//! fsync behind it on a shared disk waits: 4 MiB at a time stalled them for 5-15 ms
//! (most of the p99 of 64 clients); 512 KiB keeps each stall near a millisecond.
//! A record that is short or fails its checksum ends the log on replay when it is a
//! torn write (of a Ready that was never synced, so never acknowledged: nothing valid
//! after it, or a sector of it is zeros) and the file is cut there; a bad record with
//! a valid one after it and no zero sector is damage to synced data and stops the
//! node. Compaction appends a `COMPACT` record; once the segment has grown past
//! [`SEGMENT_LIMIT`] the live entries are rewritten into a new segment (written,
//! fsynced, renamed, directory fsynced) and the old one removed. A snapshot replaces
//! the log the same way. Every error is fail-stop.
//!
//! The conf state is *not* stored here: it lives with the state machine, written in the
//! same atomic batch as the applied index (see `StateMachine`), and is handed to
//! [`LogStore::set_conf_state`] when the node starts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::durable::sync_dir;
use crate::error::StorageError;

const MAGIC: &[u8; 8] = b"TRWAL\0\0\x01";
const HEADER: usize = 8;
const KIND_BASE: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_COMPACT: u8 = 4;
/// No record is larger (entries are bounded far below by the request size limit).
const MAX_RECORD: usize = 256 << 20;
/// The segment is extended with zeros by this much at a time.
const ZERO_CHUNK: u64 = 512 << 10;
/// Past this size a compaction rewrites the live entries into a new segment.
pub const SEGMENT_LIMIT: u64 = 64 << 20;

/// The durable Raft log of one node. Owned by the node's Ready loop thread.
pub struct LogStore {
    dir: PathBuf,
    /// The segment being appended to, its sequence number and its length.
    file: File,
    seq: u64,
    len: u64,
    /// The file's size: zeros were written up to here ahead of the records, so that an
    /// append does not change the file's size and its fdatasync has no metadata to
    /// write.
    allocated: u64,
    /// Entries `snap_index + 1 ..= last_index`.
    entries: VecDeque<Entry>,
    /// The hard state as last written.
    hard_state: HardState,
    /// The conf state as of the state machine's applied index; only read by
    /// `initial_state` when the `RawNode` is built.
    conf_state: ConfState,
    /// Index and term of the compaction point (0, 0 for a log never compacted).
    snap_index: u64,
    snap_term: u64,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
    /// A compaction past this segment size starts a new segment.
    segment_limit: u64,
    /// The newest snapshot built by the node, offered to raft-rs for lagging followers.
    available_snapshot: RefCell<Option<Snapshot>>,
    /// Set when raft-rs asked for a snapshot and none fit: the node builds one.
    snapshot_wanted: Cell<bool>,
}

fn corrupt(msg: impl Into<String>) -> StorageError {
    StorageError::Corrupt(msg.into())
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn encode_record(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    buf.push(kind);
    body(buf);
    let len = (buf.len() - start - HEADER) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(len.to_le_bytes(), &buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum covers the length too, so a damaged length is caught like a damaged
/// body.
fn record_crc(len: [u8; 4], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    h.finalize()
}

/// Whether the (bad) record at `at` has an all-zero 512-byte sector within its claimed
/// extent (clamped to the file): part of a write that never reached the disk.
fn looks_torn(bytes: &[u8], at: usize) -> bool {
    const SECTOR: usize = 512;
    let len = bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    let end = at
        .saturating_add(HEADER)
        .saturating_add(len)
        .min(bytes.len());
    if len == 0 {
        return true;
    }
    let mut sector = at.div_ceil(SECTOR) * SECTOR;
    while sector + SECTOR <= end {
        if bytes[sector..sector + SECTOR].iter().all(|b| *b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// The record starting at `at`, if a complete one with a matching checksum is there:
/// (kind, body without the kind, offset after it).
fn record_at(bytes: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let end = at + HEADER + len;
    let body = bytes.get(at + HEADER..end)?;
    (record_crc(len_bytes, body) == crc).then(|| (body[0], &body[1..], end))
}

fn encode_message(
    buf: &mut Vec<u8>,
    kind: u8,
    m: &dyn protobuf::Message,
) -> Result<(), StorageError> {
    let mut result = Ok(());
    encode_record(buf, kind, |b| {
        result = m.write_to_vec(b);
    });
    result.map_err(|e| corrupt(format!("encode record: {e}")))
}

fn encode_point(
    buf: &mut Vec<u8>,
    kind: u8,
    index: u64,
    term: u64,
    hs: Option<&HardState>,
) -> Result<(), StorageError> {
    let mut result = Ok(());
    encode_record(buf, kind, |b| {
        b.extend_from_slice(&index.to_be_bytes());
        b.extend_from_slice(&term.to_be_bytes());
        if let Some(hs) = hs {
            result = hs.write_to_vec(b);
        }
    });
    result.map_err(|e| corrupt(format!("encode record: {e}")))
}

fn read_point(body: &[u8]) -> Result<(u64, u64, &[u8]), StorageError> {
    let u = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt(format!("short record of {} bytes", body.len())))
    };
    Ok((u(0)?, u(8)?, body.get(16..).unwrap_or_default()))
}

/// The records of a segment file, up to the first that is short or damaged.
struct Replay {
    records: Vec<(u8, Vec<u8>)>,
    /// Where the valid records end.
    valid_len: u64,
    /// End of the last non-zero byte after `valid_len` (`valid_len` if none): what a
    /// torn write left behind.
    garbage_end: u64,
    file_len: u64,
}

fn read_segment(path: &Path) -> Result<Replay, StorageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(StorageError::Io)?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(format!(
            "{} is not a Trireme log segment",
            path.display()
        )));
    }
    let mut at = MAGIC.len();
    let mut records = Vec::new();
    while let Some((kind, body, next)) = record_at(&bytes, at) {
        records.push((kind, body.to_vec()));
        at = next;
    }
    let garbage_end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(at, |p| (p + 1).max(at));
    // Records are written in order and each fsync covers everything before it: a torn
    // write is the last thing in the file. A bad record that looks torn (a sector of it
    // never reached the disk: zeros, as etcd's WAL tells them) ends the log, whatever
    // the pages of that same unsynced write after it hold. Otherwise a valid record
    // anywhere after it means synced data was damaged.
    if garbage_end > at && !looks_torn(&bytes, at) {
        if let Some(found) = (at + 1..garbage_end).find(|o| record_at(&bytes, *o).is_some()) {
            return Err(corrupt(format!(
                "{}: the record at offset {at} is damaged but a valid record follows at \
                 {found}: the log is damaged",
                path.display()
            )));
        }
    }
    Ok(Replay {
        records,
        valid_len: at as u64,
        garbage_end: garbage_end as u64,
        file_len: bytes.len() as u64,
    })
}

impl LogStore {
    /// Opens the log in `dir`, creating it empty if it does not exist.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(StorageError::Io)?;
        if dir.join("conf").exists() || dir.join("db").exists() {
            return Err(corrupt(format!(
                "{} holds a log in the sled format of an earlier Trireme; start this replica \
                 with an empty data dir (it catches up from its peers)",
                dir.display()
            )));
        }
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(StorageError::Io)? {
            let entry = entry.map_err(StorageError::Io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wal.tmp") {
                // A rotation that did not finish: the old segment is still complete.
                std::fs::remove_file(entry.path()).map_err(StorageError::Io)?;
            } else if let Some(seq) = name
                .strip_suffix(".wal")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                segments.push(seq);
            }
        }
        segments.sort_unstable();
        let Some(&seq) = segments.last() else {
            // A new log: `rotate` writes segment 1 and replaces the placeholder handle
            // (the directory) with it.
            let mut log = LogStore::empty(dir, File::open(dir).map_err(StorageError::Io)?, 0);
            log.rotate()?;
            return Ok(log);
        };
        // A newer segment exists only once complete (renamed after its fsync): older
        // ones are superseded.
        for old in &segments[..segments.len() - 1] {
            std::fs::remove_file(dir.join(segment_name(*old))).map_err(StorageError::Io)?;
        }
        let path = dir.join(segment_name(seq));
        let replay = read_segment(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StorageError::Io)?;
        let mut log = LogStore::empty(dir, file, seq);
        let mut records = replay.records.into_iter();
        match records.next() {
            Some((KIND_BASE, body)) => {
                let (index, term, hs) = read_point(&body)?;
                log.snap_index = index;
                log.snap_term = term;
                log.hard_state = HardState::parse_from_bytes(hs)
                    .map_err(|e| corrupt(format!("hard state: {e}")))?;
            }
            _ => {
                return Err(corrupt(format!(
                    "{} does not start with its base",
                    path.display()
                )))
            }
        }
        for (kind, body) in records {
            log.replay(kind, &body)?;
        }
        if replay.garbage_end > replay.valid_len {
            tracing::warn!(
                segment = %path.display(),
                at = replay.valid_len,
                dropped = replay.garbage_end - replay.valid_len,
                "the log ends in a torn write (never acknowledged); cutting it there"
            );
            let zeros = vec![0u8; (replay.garbage_end - replay.valid_len) as usize];
            log.file
                .write_all_at(&zeros, replay.valid_len)
                .map_err(StorageError::Io)?;
            log.file.sync_all().map_err(StorageError::Io)?;
        }
        log.len = replay.valid_len;
        log.allocated = replay.file_len;
        Ok(log)
    }

    fn empty(dir: &Path, file: File, seq: u64) -> LogStore {
        LogStore {
            dir: dir.to_path_buf(),
            file,
            seq,
            len: 0,
            allocated: 0,
            entries: VecDeque::new(),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snap_index: 0,
            snap_term: 0,
            buf: Vec::new(),
            segment_limit: SEGMENT_LIMIT,
            available_snapshot: RefCell::new(None),
            snapshot_wanted: Cell::new(false),
        }
    }

    fn replay(&mut self, kind: u8, body: &[u8]) -> Result<(), StorageError> {
        match kind {
            KIND_ENTRY => {
                let e = Entry::parse_from_bytes(body)
                    .map_err(|err| corrupt(format!("entry: {err}")))?;
                self.place(e)
            }
            KIND_HARD_STATE => {
                self.hard_state = HardState::parse_from_bytes(body)
                    .map_err(|e| corrupt(format!("hard state: {e}")))?;
                Ok(())
            }
            KIND_COMPACT => {
                let (index, term, _) = read_point(body)?;
                self.drop_through(index, term)
            }
            other => Err(corrupt(format!("unknown log record kind {other}"))),
        }
    }

    /// Puts `e` at its index, dropping any entry at or after it.
    fn place(&mut self, e: Entry) -> Result<(), StorageError> {
        if e.index <= self.snap_index || e.index > self.last_index_now() + 1 {
            return Err(corrupt(format!(
                "entry {} outside the log ({}..={})",
                e.index,
                self.snap_index + 1,
                self.last_index_now() + 1
            )));
        }
        self.entries
            .truncate((e.index - self.snap_index - 1) as usize);
        self.entries.push_back(e);
        Ok(())
    }

    fn drop_through(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        if index < self.snap_index || index > self.last_index_now() {
            return Err(corrupt(format!(
                "compaction to {index} outside the log ({}..={})",
                self.snap_index,
                self.last_index_now()
            )));
        }
        self.entries.drain(..(index - self.snap_index) as usize);
        self.snap_index = index;
        self.snap_term = term;
        Ok(())
    }

    /// Writes `buf` at the end of the segment, fsyncing if `sync`.
    fn write_buf(&mut self, sync: bool) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            let end = self.len + self.buf.len() as u64;
            if end > self.allocated {
                let target = end.div_ceil(ZERO_CHUNK) * ZERO_CHUNK;
                let zeros = vec![0u8; (target - self.allocated) as usize];
                self.file
                    .write_all_at(&zeros, self.allocated)
                    .map_err(StorageError::Io)?;
                self.allocated = target;
            }
            self.file
                .write_all_at(&self.buf, self.len)
                .map_err(StorageError::Io)?;
            self.len += self.buf.len() as u64;
            self.buf.clear();
        }
        if sync {
            self.file.sync_data().map_err(StorageError::Io)?;
        }
        Ok(())
    }

    /// Starts a new segment holding the compaction point, the hard state and the live
    /// entries, made durable before the old segment is removed.
    fn rotate(&mut self) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        let path = self.dir.join(segment_name(seq));
        let tmp = self.dir.join(format!("{}.tmp", segment_name(seq)));
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        encode_point(
            &mut buf,
            KIND_BASE,
            self.snap_index,
            self.snap_term,
            Some(&self.hard_state),
        )?;
        for e in &self.entries {
            encode_message(&mut buf, KIND_ENTRY, e)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StorageError::Io)?;
        file.write_all_at(&buf, 0).map_err(StorageError::Io)?;
        file.sync_all().map_err(StorageError::Io)?;
        std::fs::rename(&tmp, &path).map_err(StorageError::Io)?;
        sync_dir(&self.dir).map_err(StorageError::Io)?;
        let old = self.dir.join(segment_name(self.seq));
        self.file = file;
        self.seq = seq;
        self.len = buf.len() as u64;
        self.allocated = self.len;
        if seq > 1 {
            match std::fs::remove_file(&old) {
                Ok(()) => sync_dir(&self.dir).map_err(StorageError::Io)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::Io(e)),
            }
        }
        Ok(())
    }

    /// True if nothing was ever written: no entry, no hard state, no compaction point.
    pub fn is_empty(&self) -> bool {
        self.last_index_now() == 0 && self.hard_state == HardState::default()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snap_index
    }

    pub fn last_index_now(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }

    /// The conf state `initial_state` reports: the state machine's, at its applied index.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Persists a Ready: appends `entries` (dropping any conflicting suffix) and the
    /// hard state with one write, then fsyncs if `sync`.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError> {
        if entries.is_empty() && !sync {
            // Only the commit index moved (a term or vote change must sync): keep it in
            // memory, as `set_commit` does, instead of writing a record.
            match hard_state {
                None => return Ok(()),
                Some(hs) if hs.term == self.hard_state.term && hs.vote == self.hard_state.vote => {
                    self.set_commit(hs.commit);
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        if let Some(first) = entries.first() {
            if first.index <= self.snap_index {
                return Err(corrupt(format!(
                    "append at {} at or below the compaction point {}",
                    first.index, self.snap_index
                )));
            }
            if first.index > self.last_index_now() + 1 {
                return Err(corrupt(format!(
                    "append at {} leaves a gap after {}",
                    first.index,
                    self.last_index_now()
                )));
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for e in entries {
            encode_message(&mut buf, KIND_ENTRY, e)?;
        }
        if let Some(hs) = hard_state {
            encode_message(&mut buf, KIND_HARD_STATE, hs)?;
        }
        self.buf = buf;
        self.write_buf(sync)?;
        for e in entries {
            self.place(e.clone())?;
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a new commit index in memory only: it is written with the next hard
    /// state, and on restart the commit index is raised to the state machine's applied
    /// index anyway, so nothing is lost by not writing it now.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Drops every entry up to and including `index`, which must be applied and
    /// durable in the state machine. Fsyncs.
    pub fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        if index <= self.snap_index {
            return Ok(());
        }
        if index > self.last_index_now() {
            return Err(corrupt(format!(
                "compact to {index} past the last index {}",
                self.last_index_now()
            )));
        }
        let term = self.term_of(index)?;
        self.drop_through(index, term)?;
        if self.len > self.segment_limit {
            return self.rotate();
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        encode_point(&mut buf, KIND_COMPACT, index, term, None)?;
        self.buf = buf;
        self.write_buf(true)
    }

    /// Replaces the whole log by a snapshot's compaction point (the state machine has
    /// already restored and synced the snapshot's state). Fsyncs.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.entries.clear();
        self.snap_index = meta.index;
        self.snap_term = meta.term;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        self.rotate()
    }

    /// Forgets the snapshot offered to followers (the configuration changed since it
    /// was built); the next request builds a new one.
    pub fn clear_available_snapshot(&self) {
        *self.available_snapshot.borrow_mut() = None;
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

    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.snap_index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snap_index {
            return Ok(self.snap_term);
        }
        self.entry(index)
            .map(|e| e.term)
            .ok_or_else(|| corrupt(format!("entry {index} missing")))
    }
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
        if high > self.last_index_now() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity(high.saturating_sub(low) as usize);
        let mut size = 0u64;
        for index in low..high {
            let Some(e) = self.entry(index) else { break };
            size += u64::from(e.compute_size());
            // Always return at least one entry, as the trait requires.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
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
        if idx > self.last_index_now() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        self.term_of(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
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

fn to_raft(e: StorageError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
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
    fn appends_past_several_zeroed_chunks_stay_inside_the_zeros_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let sized = |index: u64, len: usize| {
            let mut e = entry(index, 1);
            e.data = vec![index as u8; len].into();
            e
        };
        // Small and large appends, some larger than a chunk: 6 MiB in all.
        let lens = |i: u64| {
            if i.is_multiple_of(10) {
                700 << 10
            } else {
                4 << 10
            }
        };
        let last = 100;
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            for i in 1..=last {
                s.append(&[sized(i, lens(i))], None, true).unwrap();
                assert!(s.len <= s.allocated, "a record past the zeroed end");
                assert!(s.allocated.is_multiple_of(ZERO_CHUNK));
                assert_eq!(s.file.metadata().unwrap().len(), s.allocated);
            }
        }
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.last_index_now(), last);
        let es = s
            .entries(1, last + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(es.len() as u64, last);
        for e in &es {
            assert_eq!(e.data.len(), lens(e.index));
            assert!(e.data.iter().all(|b| *b == e.index as u8));
        }
    }

    #[test]
    fn a_commit_only_hard_state_is_kept_in_memory_and_a_term_change_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let mut hs = HardState::default();
        hs.term = 1;
        hs.vote = 1;
        s.append(&[entry(1, 1), entry(2, 1)], Some(&hs), true)
            .unwrap();
        let len = s.len;
        hs.commit = 2;
        s.append(&[], Some(&hs), false).unwrap();
        assert_eq!((s.len, s.hard_state().commit), (len, 2));
        hs.term = 2;
        s.append(&[], Some(&hs), false).unwrap();
        assert!(s.len > len, "a new term is written");
        drop(s);
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!((s.hard_state().term, s.hard_state().commit), (2, 2));
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

    fn segments(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let es: Vec<_> = (1..=4).map(|i| entry(i, 1)).collect();
        s.append(&es, None, true).unwrap();
        let good = s.len;
        // Half of a fifth record: the header and a few bytes of its body.
        let mut torn = Vec::new();
        encode_message(&mut torn, KIND_ENTRY, &entry(5, 1)).unwrap();
        s.file.write_all_at(&torn[..torn.len() / 2], good).unwrap();
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.last_index_now(), 4);
        assert_eq!(s.len, good);
        s.append(&[entry(5, 2)], None, true).unwrap();
        drop(s);
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.last_index_now(), 5);
        assert_eq!(s.term(5).unwrap(), 2);
    }

    /// Writes entries 1, 2 and 3, lets `damage` change the file given where entry 2's
    /// record starts, and returns the error of opening the log again.
    fn open_after_damaging_entry_2(damage: impl FnOnce(&File, u64)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        s.append(&[entry(1, 1)], None, true).unwrap();
        let second = s.len;
        s.append(&[entry(2, 1), entry(3, 1)], None, true).unwrap();
        damage(&s.file, second);
        drop(s);
        LogStore::open(dir.path()).err().unwrap().to_string()
    }

    #[test]
    fn a_damaged_record_followed_by_valid_ones_is_corruption() {
        // Flip a byte in the body of entry 2: its checksum fails.
        let e = open_after_damaging_entry_2(|file, second| {
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, second + 12).unwrap();
            file.write_all_at(&[byte[0] ^ 0xff], second + 12).unwrap();
        });
        assert!(e.contains("the log is damaged"), "{e}");
    }

    #[test]
    fn a_write_torn_across_pages_is_cut_even_if_later_pages_landed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        s.append(&[entry(1, 1)], None, true).unwrap();
        let at = s.len;
        // One unsynced write of a large entry 2 and a small entry 3, of which a crash
        // kept the last page but lost a page in the middle of entry 2.
        let mut big = entry(2, 1);
        big.data = vec![7u8; 4000].into();
        let mut write = Vec::new();
        encode_message(&mut write, KIND_ENTRY, &big).unwrap();
        encode_message(&mut write, KIND_ENTRY, &entry(3, 1)).unwrap();
        s.file.write_all_at(&write, at).unwrap();
        let lost = (at as usize).div_ceil(512) * 512 + 1024;
        s.file.write_all_at(&[0u8; 512], lost as u64).unwrap();
        drop(s);
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.last_index_now(), 1);
        assert_eq!(s.len, at);
    }

    #[test]
    fn a_damaged_length_followed_by_valid_records_is_corruption() {
        // Entry 2's length now points into the middle of entry 3.
        let e = open_after_damaging_entry_2(|file, second| {
            let mut len = [0u8; 4];
            file.read_exact_at(&mut len, second).unwrap();
            let bigger = u32::from_le_bytes(len) + 7;
            file.write_all_at(&bigger.to_le_bytes(), second).unwrap();
        });
        assert!(e.contains("the log is damaged"), "{e}");
    }

    #[test]
    fn compaction_past_the_segment_limit_rewrites_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        s.segment_limit = 200;
        let es: Vec<_> = (1..=20).map(|i| entry(i, 1)).collect();
        s.append(&es, None, true).unwrap();
        let mut hs = HardState::default();
        hs.term = 1;
        hs.vote = 7;
        hs.commit = 15;
        s.append(&[], Some(&hs), true).unwrap();
        assert_eq!(segments(dir.path()), vec![segment_name(1)]);
        s.compact(15).unwrap();
        assert_eq!(segments(dir.path()), vec![segment_name(2)]);
        s.append(&[entry(21, 2)], None, true).unwrap();
        drop(s);
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.first_index().unwrap(), 16);
        assert_eq!(s.last_index_now(), 21);
        assert_eq!(s.term(15).unwrap(), 1);
        assert_eq!(s.term(21).unwrap(), 2);
        assert_eq!(s.hard_state(), &hs);
    }

    #[test]
    fn an_interrupted_rotation_leaves_the_old_segment_in_charge() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let es: Vec<_> = (1..=3).map(|i| entry(i, 1)).collect();
        s.append(&es, None, true).unwrap();
        drop(s);
        // A crash while writing segment 2: only its temporary file exists.
        std::fs::write(
            dir.path().join(format!("{}.tmp", segment_name(2))),
            b"partial",
        )
        .unwrap();
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.last_index_now(), 3);
        assert_eq!(segments(dir.path()), vec![segment_name(1)]);
    }

    #[test]
    fn a_sled_log_or_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288").unwrap();
        let e = LogStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("sled format"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), b"not a log at all").unwrap();
        let e = LogStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("not a Trireme log segment"), "{e}");
    }
}
