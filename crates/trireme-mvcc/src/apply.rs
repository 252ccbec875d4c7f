//! [`Applier`]: executes commands of one apply group into an in-memory overlay of
//! pending writes, which [`crate::Store::apply_batch`] then writes as one atomic group.
//!
//! Each command runs against the overlay, so it sees the writes of the entries before it
//! in the group. A command refused with a [`CommandError`] is rolled back from an undo
//! log, so it writes nothing.

use crate::error::{CommandError, StorageError};
use crate::index::{Change, Index, IndexView, Meta, Touched, Ver};
use crate::keys::{self, KeyRange, LeaseRecord};
use crate::read::{self, LiveKey};
use crate::types::{
    ApplyResult, Command, CommandResult, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse,
};
use crate::view::{Pending, View};

/// Inside an apply: either a deterministic refusal or a fatal storage error.
#[derive(Debug)]
pub(crate) enum ApplyError {
    Command(CommandError),
    Storage(StorageError),
}

impl From<CommandError> for ApplyError {
    fn from(e: CommandError) -> Self {
        ApplyError::Command(e)
    }
}

impl From<StorageError> for ApplyError {
    fn from(e: StorageError) -> Self {
        ApplyError::Storage(e)
    }
}

/// The revision a command writes at, and the next sub-revision.
pub(crate) struct WriteRev {
    pub rev: u64,
    sub: u32,
}

impl WriteRev {
    fn next_sub(&mut self) -> u32 {
        let s = self.sub;
        self.sub += 1;
        s
    }

    /// Whether anything was written, which makes `rev` the new store revision.
    pub(crate) fn wrote(&self) -> bool {
        self.sub > 0
    }
}

/// How to undo one change of the current command.
enum Undo {
    /// A pending-map key and the entry it had before (`None`: it had none).
    Record(Vec<u8>, Option<Option<Vec<u8>>>),
    /// A changed index key and its change before (`None`: it had none).
    Index(Vec<u8>, Option<Change>),
}

pub(crate) struct Applier<'a> {
    tree: &'a sled::Tree,
    index: &'a Index,
    /// Writes of this apply group not yet in sled.
    pending: Pending,
    /// How this apply group changed index entries, not yet in `index`.
    touched: Touched,
    /// How to undo the current command's changes, newest last.
    undo: Vec<Undo>,
    /// Store revision including the commands applied so far in this group.
    pub revision: u64,
    pub compact_revision: u64,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(
        tree: &'a sled::Tree,
        index: &'a Index,
        revision: u64,
        compact_revision: u64,
    ) -> Self {
        Applier {
            tree,
            index,
            pending: Pending::new(),
            touched: Touched::new(),
            undo: Vec::new(),
            revision,
            compact_revision,
        }
    }

    pub(crate) fn view(&self) -> View<'_> {
        View::new(
            self.tree,
            Some(&self.pending),
            IndexView {
                base: self.index,
                touched: Some(&self.touched),
            },
        )
    }

    pub(crate) fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let old = self.pending.insert(key.clone(), value);
        self.undo.push(Undo::Record(key, old));
    }

    /// This group's change of `key` so far, or one that changes nothing of an entry
    /// whose meta is `meta` (the caller has already looked the key up).
    fn change(&self, key: &[u8], meta: Meta) -> Change {
        self.touched
            .get(key)
            .cloned()
            .unwrap_or_else(|| Change::none(meta))
    }

    fn set_change(&mut self, key: Vec<u8>, change: Change) {
        let old = self.touched.insert(key.clone(), change);
        self.undo.push(Undo::Index(key, old));
    }

    /// Adds version (rev, sub) of `key` with the key's meta after it.
    fn add_version(&mut self, key: &[u8], ver: Ver, meta: Meta, record: Vec<u8>) {
        // The meta is replaced below: no need to know the entry's.
        let mut change = self.change(key, meta);
        change.added.push(ver);
        change.meta = meta;
        self.set(keys::rev_key(ver.rev, ver.sub).to_vec(), Some(record));
        self.set_change(key.to_vec(), change);
    }

    fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Record(key, None) => {
                    self.pending.remove(&key);
                }
                Undo::Record(key, Some(v)) => {
                    self.pending.insert(key, v);
                }
                Undo::Index(key, None) => {
                    self.touched.remove(&key);
                }
                Undo::Index(key, Some(e)) => {
                    self.touched.insert(key, e);
                }
            }
        }
    }

    /// Applies one command; a [`CommandError`] leaves no trace.
    pub(crate) fn apply(&mut self, cmd: &Command) -> Result<ApplyResult, StorageError> {
        let saved = (self.revision, self.compact_revision);
        self.undo.clear();
        match self.exec(cmd) {
            Ok(r) => Ok(Ok(r)),
            Err(ApplyError::Command(e)) => {
                self.rollback();
                (self.revision, self.compact_revision) = saved;
                Ok(Err(e))
            }
            Err(ApplyError::Storage(e)) => Err(e),
        }
    }

    fn exec(&mut self, cmd: &Command) -> Result<CommandResult, ApplyError> {
        match cmd {
            Command::Put(req) => {
                let mut w = self.begin();
                let mut resp = self.put(req, &mut w)?;
                resp.revision = self.finish(&w);
                Ok(CommandResult::Put(resp))
            }
            Command::DeleteRange(req) => {
                let mut w = self.begin();
                let mut resp = self.delete_range(req, &mut w)?;
                resp.revision = self.finish(&w);
                Ok(CommandResult::DeleteRange(resp))
            }
            Command::Txn(req) => Ok(CommandResult::Txn(self.txn(req)?)),
            Command::Compact { revision } => self.compact(*revision),
            Command::LeaseGrant { id, ttl_seconds } => self.lease_grant(*id, *ttl_seconds),
            Command::LeaseRevoke { id } => self.lease_revoke(*id),
        }
    }

    pub(crate) fn begin(&self) -> WriteRev {
        WriteRev {
            rev: self.revision + 1,
            sub: 0,
        }
    }

    /// Ends a command: the store revision moves iff it wrote. Returns the revision.
    pub(crate) fn finish(&mut self, w: &WriteRev) -> u64 {
        if w.wrote() {
            self.revision = w.rev;
        }
        self.revision
    }

    /// The response's `revision` is left for the caller to fill.
    pub(crate) fn put(
        &mut self,
        req: &PutRequest,
        w: &mut WriteRev,
    ) -> Result<PutResponse, ApplyError> {
        if req.key.is_empty() {
            return Err(CommandError::EmptyKey.into());
        }
        if req.lease != 0 && self.view().get(&keys::lease_key(req.lease))?.is_none() {
            return Err(CommandError::LeaseNotFound(req.lease).into());
        }
        let prev_kv = if req.prev_kv {
            read::get_kv(self.view(), &req.key)?
        } else {
            None
        };
        let live = self
            .view()
            .index
            .get(&req.key)
            .and_then(|e| e.live().map(|_| e.meta));
        let prev_lease = live.map(|m| m.lease);
        let meta = Meta {
            create_revision: live.map_or(w.rev, |m| m.create_revision),
            version: live.map_or(1, |m| m.version + 1),
            lease: req.lease,
        };
        let ver = Ver {
            rev: w.rev,
            sub: w.next_sub(),
            put: true,
        };
        let record = keys::encode_put(
            &req.key,
            meta.create_revision,
            meta.version,
            req.lease,
            &req.value,
        );
        self.add_version(&req.key, ver, meta, record);
        if let Some(p) = prev_lease {
            if p != 0 && p != req.lease {
                self.set(keys::attach_key(p, &req.key), None);
            }
        }
        if req.lease != 0 {
            self.set(keys::attach_key(req.lease, &req.key), Some(Vec::new()));
        }
        Ok(PutResponse {
            revision: 0,
            prev_kv,
        })
    }

    /// The response's `revision` is left for the caller to fill.
    pub(crate) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
        w: &mut WriteRev,
    ) -> Result<DeleteRangeResponse, ApplyError> {
        if req.key.is_empty() {
            return Err(CommandError::EmptyKey.into());
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let prev_kvs = if req.prev_kv {
            read::current_kvs(self.view(), &range)?
        } else {
            Vec::new()
        };
        let live = read::live_keys(self.view(), &range);
        for key in &live {
            self.delete_key(key, w);
        }
        Ok(DeleteRangeResponse {
            revision: 0,
            deleted: live.len() as u64,
            prev_kvs,
        })
    }

    fn delete_key(&mut self, live: &LiveKey, w: &mut WriteRev) {
        let ver = Ver {
            rev: w.rev,
            sub: w.next_sub(),
            put: false,
        };
        let record = keys::encode_delete(&live.key);
        self.add_version(&live.key, ver, Meta::default(), record);
        if live.lease != 0 {
            self.set(keys::attach_key(live.lease, &live.key), None);
        }
    }

    /// Drops every version not needed to read or watch at or above `revision`: of the
    /// versions at or below it only the newest of each key stays, and a deletion only
    /// if it is exactly at `revision` (a watch from there still sees it). See
    /// [`crate::index::EntryRef::compacted_by`].
    fn compact(&mut self, revision: u64) -> Result<CommandResult, ApplyError> {
        if revision > self.revision {
            return Err(CommandError::FutureRevision {
                current: self.revision,
            }
            .into());
        }
        if revision <= self.compact_revision {
            return Err(CommandError::Compacted {
                compact_revision: self.compact_revision,
            }
            .into());
        }
        // (key, its meta, versions to drop, how many of its versions are indexed ones)
        let mut compacted = Vec::new();
        for (key, entry) in self.view().index.range(&KeyRange::all()) {
            let n = entry.compacted_by(revision);
            if n > 0 {
                let gone: Vec<Ver> = entry.versions().take(n).collect();
                compacted.push((key.to_vec(), entry.meta, gone, entry.indexed()));
            }
        }
        for (key, meta, gone, indexed) in compacted {
            let mut change = self.change(&key, meta);
            change.drop_oldest(gone.len(), indexed);
            for ver in gone {
                self.set(keys::rev_key(ver.rev, ver.sub).to_vec(), None);
            }
            self.set_change(key, change);
        }
        self.compact_revision = revision;
        Ok(CommandResult::Compact { revision })
    }

    fn lease_grant(&mut self, id: i64, ttl_seconds: i64) -> Result<CommandResult, ApplyError> {
        if id == 0 || ttl_seconds <= 0 {
            return Err(CommandError::InvalidLease { id, ttl_seconds }.into());
        }
        let key = keys::lease_key(id);
        if self.view().get(&key)?.is_some() {
            return Err(CommandError::LeaseExists(id).into());
        }
        self.set(
            key,
            Some(keys::encode("lease", &LeaseRecord { ttl_seconds })?),
        );
        Ok(CommandResult::LeaseGrant {
            id,
            ttl_seconds,
            revision: self.revision,
        })
    }

    /// Deletes every attached key in one revision and removes the lease.
    fn lease_revoke(&mut self, id: i64) -> Result<CommandResult, ApplyError> {
        let key = keys::lease_key(id);
        if self.view().get(&key)?.is_none() {
            return Err(CommandError::LeaseNotFound(id).into());
        }
        let attached = read::lease_keys(self.view(), id)?;
        let mut w = self.begin();
        for k in attached {
            let live = self.view().index.get(&k).and_then(|e| {
                e.live().map(|_| LiveKey {
                    key: k.clone(),
                    lease: e.meta.lease,
                })
            });
            if let Some(live) = live {
                self.delete_key(&live, &mut w);
            }
            self.set(keys::attach_key(id, &k), None);
        }
        self.set(key, None);
        let revision = self.finish(&w);
        Ok(CommandResult::LeaseRevoke { revision })
    }

    /// Ends the group: its record writes in key order, whether they only add new
    /// revision records (see [`Group::appends_only`]), and the index entries it changed.
    pub(crate) fn finish_group(self) -> Group {
        let appends_only = self
            .pending
            .iter()
            .all(|(k, v)| k.first() == Some(&keys::REV) && v.is_some());
        Group {
            writes: self.pending,
            appends_only,
            touched: self.touched,
        }
    }
}

/// What an apply group writes, before its meta-state record.
pub(crate) struct Group {
    pub writes: Pending,
    /// Every write adds a new `r` record, above the store revision: nothing existing
    /// is changed, so a crash in the middle is undone by dropping the records above
    /// the recovered revision.
    pub appends_only: bool,
    pub touched: Touched,
}
