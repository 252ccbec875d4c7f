//! [`Store`]: the handle shared by the Raft apply loop and the API readers.

use std::collections::btree_map;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::apply::Applier;
use crate::error::{CommandError, ReadError, StorageError};
use crate::index::{self, Index, KeyEntry};
use crate::keys::{self, KeyRange};
use crate::read::{self, ReadCtx};
use crate::types::{
    AppliedState, ApplyEntry, ApplyResult, CommandResult, Event, LeaseInfo, RangeRequest,
    RangeResponse,
};
use crate::view::View;

/// One cluster record: its key (without the store's prefix) and value.
pub type ClusterRecord = (Vec<u8>, Vec<u8>);

/// Name of the one sled tree holding every record.
pub(crate) const TREE: &str = "trireme-mvcc";

/// The MVCC key-value state machine on sled. `Send + Sync`; every method takes `&self`.
///
/// Durability: [`Store::apply_batch`] writes one atomic group, which sled persists
/// on its own schedule; only [`Store::sync`] makes everything applied so far durable.
/// After a crash the store comes back at some applied index at or after the last sync,
/// with exactly the state that index produced.
pub struct Store {
    /// Kept for `flush`; all records live in `tree`.
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    /// The store directory (sled's files are `db`, `conf`, `blobs/*`).
    dir: PathBuf,
    /// A handle on sled's data file, to `sync_all` it (sled's flush is not an fsync).
    db_file: File,
    /// Serializes appliers, so a batch can be built without blocking readers.
    apply_lock: Mutex<()>,
    /// Readers hold it shared; an apply holds it exclusively only while sled applies the
    /// batch and the index takes its changes, so no reader ever sees half a batch (sled
    /// scans are not snapshots).
    state: RwLock<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("state", &self.read_state().state)
            .finish_non_exhaustive()
    }
}

/// What the lock guards: the meta records' copy and the key index.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub state: State,
    pub index: Index,
}

/// The meta-state record ([`keys::META_STATE`]) and its in-memory copy, changed only
/// together.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    pub revision: u64,
    pub compact_revision: u64,
    pub applied: AppliedState,
}

/// sled's page cache (its default is 1 GiB, which a replica's memory then grows
/// towards): hot keys and the B-tree's inner nodes fit, and the OS page cache holds
/// the rest of the file. sled's real use runs well above this figure: after the
/// side-by-side benchmark a replica peaks near 120 MB with 8 MiB, 135 with 16 and 145
/// with 32, for the same range throughput (sled reads the rest from the OS cache).
const CACHE_BYTES: u64 = 8 << 20;

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        Store::from_db(dir, db)
    }

    pub(crate) fn from_db(dir: &Path, db: sled::Db) -> Result<Store, StorageError> {
        let tree = db.open_tree(TREE)?;
        match tree.get(keys::META_FORMAT)? {
            Some(raw) => {
                let v = keys::decode_u64("format version", &raw)?;
                if v != keys::FORMAT_VERSION {
                    return Err(StorageError::corrupt(
                        "format version",
                        format!(
                            "{v}, this build reads {}: start this replica with an empty data dir",
                            keys::FORMAT_VERSION
                        ),
                    ));
                }
            }
            None if tree.is_empty() => {
                tree.insert(keys::META_FORMAT, &keys::FORMAT_VERSION.to_be_bytes())?;
            }
            None => return Err(StorageError::corrupt("format version", "missing")),
        }
        let state = load_state(&tree)?;
        let dropped = drop_uncommitted(&tree, state.revision)?;
        if dropped > 0 {
            tracing::info!(
                dir = %dir.display(),
                records = dropped,
                revision = state.revision,
                "dropped the records of an apply group cut by a crash"
            );
        }
        let index = index::rebuild(&tree)?;
        let db_file = File::open(dir.join("db"))?;
        Ok(Store {
            db,
            tree,
            dir: dir.to_path_buf(),
            db_file,
            apply_lock: Mutex::new(()),
            state: RwLock::new(Shared { state, index }),
        })
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, Shared> {
        // A panic never leaves `State` half-updated (it is replaced after the batch), so
        // a poisoned lock still guards consistent data.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, Shared> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_apply(&self) -> MutexGuard<'_, ()> {
        self.apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Current store revision, 0 for an empty store.
    pub fn revision(&self) -> u64 {
        self.read_state().state.revision
    }

    /// Revision of the last compaction, 0 if never compacted.
    pub fn compact_revision(&self) -> u64 {
        self.read_state().state.compact_revision
    }

    pub fn applied(&self) -> AppliedState {
        self.read_state().state.applied.clone()
    }

    /// Applies committed entries in order, all in ONE atomic group together with the new
    /// [`AppliedState`]. An entry whose index is <= the applied index is skipped with
    /// `Err(CommandError::AlreadyApplied)`; `command: None` only moves the applied index;
    /// `conf_state: Some(..)` replaces the stored conf state. One result per entry.
    pub fn apply_batch(&self, entries: &[ApplyEntry]) -> Result<Vec<ApplyResult>, StorageError> {
        let mut out = Vec::new();
        self.apply_batch_answering(entries, |results| out = results)?;
        Ok(out)
    }

    /// [`Store::apply_batch`], handing the results to `decided` as soon as they are
    /// decided and readers are locked out, before the records are written: a read that
    /// starts after `decided` was called waits for the batch and sees it. `decided` is
    /// called once if this returns `Ok`, and must not use this store (it holds the
    /// state's write lock). Lets the caller answer clients while the batch is written.
    pub fn apply_batch_answering(
        &self,
        entries: &[ApplyEntry],
        decided: impl FnOnce(Vec<ApplyResult>),
    ) -> Result<(), StorageError> {
        let _applying = self.lock_apply();
        // Only appliers change the index, and they are serialized: reading it under the
        // shared lock while the batch is built lets readers go on meanwhile.
        let shared = self.read_state();
        let start = shared.state.clone();
        let mut applier = Applier::new(
            &self.tree,
            &shared.index,
            start.revision,
            start.compact_revision,
        );
        let mut applied = start.applied.clone();
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index <= applied.index {
                results.push(Err(CommandError::AlreadyApplied));
                continue;
            }
            results.push(match &entry.command {
                Some(cmd) => applier.apply(cmd)?,
                None => Ok(CommandResult::Noop {
                    revision: applier.revision,
                }),
            });
            for w in &entry.cluster {
                applier.set(keys::cluster_key(&w.key), w.value.clone());
            }
            applied.index = entry.index;
            applied.term = entry.term;
            if let Some(cs) = &entry.conf_state {
                applied.conf_state.clone_from(cs);
            }
        }
        if applied.index == start.applied.index {
            decided(results);
            return Ok(());
        }
        let new_state = State {
            revision: applier.revision,
            compact_revision: applier.compact_revision,
            applied,
        };
        let group = applier.finish_group();
        let meta = keys::encode("meta state", &new_state)?;
        drop(shared);
        let mut shared = self.write_state();
        decided(results);
        if group.appends_only {
            // Plain inserts, the meta state last. sled recovers its log in order up to
            // the first torn write, so after a crash either the meta state is there
            // (and every record before it), or the records that made it are above the
            // recovered revision and `open` drops them. A sled batch would make the
            // group atomic too, but each one forces sled to seal and write an IO buffer.
            for (k, v) in group.writes {
                if let Some(v) = v {
                    self.tree.insert(k, v)?;
                }
            }
            self.tree.insert(keys::META_STATE, meta)?;
        } else {
            let mut batch = sled::Batch::default();
            for (k, v) in group.writes {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            batch.insert(keys::META_STATE, meta);
            self.tree.apply_batch(batch)?;
        }
        shared.state = new_state;
        for (key, change) in group.touched {
            match shared.index.entry(key) {
                btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().apply(change);
                    if e.get().versions.is_empty() {
                        e.remove();
                    }
                }
                btree_map::Entry::Vacant(e) => {
                    if !change.added.is_empty() {
                        let mut entry = KeyEntry::default();
                        entry.apply(change);
                        e.insert(entry);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, ReadError> {
        let shared = self.read_state();
        let state = &shared.state;
        let ctx = ReadCtx {
            current: state.revision,
            compact: state.compact_revision,
            kv_revision: Some(state.revision),
        };
        read::range(View::committed(&self.tree, &shared.index), req, ctx)
    }

    /// Events with revision >= `from_revision` whose key is in `[key, range_end)` (etcd
    /// `range_end` conventions), in (revision, sub-revision) order, at most `limit`
    /// (0: no limit; a revision may be cut in half). `with_prev_kv` fills
    /// [`Event::prev_kv`] (None if the key did not exist or it was compacted away).
    pub fn events(
        &self,
        from_revision: u64,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<Event>, ReadError> {
        let shared = self.read_state();
        if from_revision < shared.state.compact_revision {
            return Err(ReadError::Compacted {
                compact_revision: shared.state.compact_revision,
            });
        }
        let keys = KeyRange::new(key, range_end);
        Ok(read::events(
            &self.tree,
            View::committed(&self.tree, &shared.index),
            (from_revision, shared.state.revision),
            &keys,
            limit,
            with_prev_kv,
        )?)
    }

    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, StorageError> {
        let shared = self.read_state();
        read::lease(View::committed(&self.tree, &shared.index), id)
    }

    /// Every lease, in id order.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, StorageError> {
        let shared = self.read_state();
        read::leases(View::committed(&self.tree, &shared.index))
    }

    /// Every cluster record (key without the store's prefix, value), in key order,
    /// with the applied state they belong to: both read under one lock, so they come
    /// from the same apply group.
    pub fn cluster_records(&self) -> Result<(AppliedState, Vec<ClusterRecord>), StorageError> {
        let state = self.read_state();
        let (lo, hi) = keys::prefix_range(&[keys::CLUSTER]);
        let mut records = Vec::new();
        for item in self.tree.range((std::ops::Bound::Included(lo), hi)) {
            let (k, v) = item?;
            let key = k.get(1..).unwrap_or_default().to_vec();
            records.push((key, v.to_vec()));
        }
        Ok((state.state.applied.clone(), records))
    }

    /// crc32 of all MVCC data (every kept version, events, leases, revision, compact
    /// revision), but not the applied index, term or conf state, nor the cluster
    /// records: replicas that applied the same entries, or restored the same snapshot,
    /// have the same hash.
    pub fn hash(&self) -> Result<u32, StorageError> {
        let shared = self.read_state();
        let mut h = crc32fast::Hasher::new();
        h.update(&shared.state.revision.to_be_bytes());
        h.update(&shared.state.compact_revision.to_be_bytes());
        for item in self.tree.iter() {
            let (k, v) = item?;
            if k.as_ref() == keys::META_STATE || k.first() == Some(&keys::CLUSTER) {
                continue;
            }
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update(&(v.len() as u64).to_be_bytes());
            h.update(&v);
        }
        Ok(h.finalize())
    }

    /// Makes everything applied so far durable: sled `flush()`, then `sync_all` on sled's
    /// data file, its blob files and the directories. An fsync error is returned, never
    /// retried: the caller must stop.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.db_file.sync_all()?;
        let blobs = self.dir.join("blobs");
        if blobs.is_dir() {
            for entry in std::fs::read_dir(&blobs)? {
                File::open(entry?.path())?.sync_all()?;
            }
            File::open(&blobs)?.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

fn load_state(tree: &sled::Tree) -> Result<State, StorageError> {
    match tree.get(keys::META_STATE)? {
        Some(raw) => keys::decode("meta state", &raw),
        None => Ok(State::default()),
    }
}

/// Removes the `r` records above the store revision: what an apply group that was
/// cut by a crash before its meta-state record had appended. Returns how many.
fn drop_uncommitted(tree: &sled::Tree, revision: u64) -> Result<usize, StorageError> {
    let Some(next) = revision.checked_add(1) else {
        return Ok(0);
    };
    let lo = keys::rev_key(next, 0);
    let mut dropped = 0;
    for item in tree.range(&lo[..]..&[keys::REV + 1][..]) {
        let (k, _) = item?;
        tree.remove(k)?;
        dropped += 1;
    }
    if dropped > 0 {
        // Make the removal durable before anything is appended after it.
        tree.flush()?;
    }
    Ok(dropped)
}
