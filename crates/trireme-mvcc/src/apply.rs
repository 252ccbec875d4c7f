//! [`Applier`]: executes commands of one apply group into an in-memory overlay of
//! pending writes, which [`crate::Store::apply_batch`] then writes as ONE sled batch.
//!
//! Each command runs against the overlay, so it sees the writes of the entries before it
//! in the group. A command refused with a [`CommandError`] is rolled back from an undo
//! log, so it writes nothing.

use crate::error::{CommandError, StorageError};
use crate::keys::{self, HistRecord, KeyRange, LeaseRecord};
use crate::read;
use crate::types::{
    AppliedState, ApplyResult, Command, CommandResult, DeleteRangeRequest, DeleteRangeResponse,
    EventKind, KeyValue, PutRequest, PutResponse,
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

/// A pending-map key and the entry it had before (`None`: it had none).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

pub(crate) struct Applier<'a> {
    tree: &'a sled::Tree,
    /// Writes of this apply group not yet in sled.
    pending: Pending,
    /// How to undo the current command's writes to `pending`: (key, previous entry).
    undo: Vec<Undo>,
    /// Store revision including the commands applied so far in this group.
    pub revision: u64,
    pub compact_revision: u64,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(tree: &'a sled::Tree, revision: u64, compact_revision: u64) -> Self {
        Applier {
            tree,
            pending: Pending::new(),
            undo: Vec::new(),
            revision,
            compact_revision,
        }
    }

    pub(crate) fn view(&self) -> View<'_> {
        View::new(self.tree, Some(&self.pending))
    }

    pub(crate) fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let old = self.pending.insert(key.clone(), value);
        self.undo.push((key, old));
    }

    fn rollback(&mut self) {
        while let Some((key, old)) = self.undo.pop() {
            match old {
                None => {
                    self.pending.remove(&key);
                }
                Some(v) => {
                    self.pending.insert(key, v);
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
        let prev = read::get_kv(self.view(), &req.key)?;
        let sub = w.next_sub();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (w.rev, 1),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: w.rev,
            version,
            value: req.value.clone(),
            lease: req.lease,
        };
        let hist = HistRecord::Put {
            create_revision,
            version,
            lease: req.lease,
            value: req.value.clone(),
        };
        self.set(keys::kv_key(&req.key), Some(keys::encode("kv", &kv)?));
        self.set(
            keys::hist_key(&req.key, w.rev, sub),
            Some(keys::encode("history record", &hist)?),
        );
        self.set(
            keys::event_key(w.rev, sub),
            Some(keys::event_value(EventKind::Put, &req.key)),
        );
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != req.lease {
                self.set(keys::attach_key(p.lease, &req.key), None);
            }
        }
        if req.lease != 0 {
            self.set(keys::attach_key(req.lease, &req.key), Some(Vec::new()));
        }
        Ok(PutResponse {
            revision: 0,
            prev_kv: if req.prev_kv { prev } else { None },
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
        let kvs = read::current_kvs(self.view(), &KeyRange::new(&req.key, &req.range_end))?;
        for kv in &kvs {
            self.delete_key(kv, w)?;
        }
        Ok(DeleteRangeResponse {
            revision: 0,
            deleted: kvs.len() as u64,
            prev_kvs: if req.prev_kv { kvs } else { Vec::new() },
        })
    }

    fn delete_key(&mut self, kv: &KeyValue, w: &mut WriteRev) -> Result<(), StorageError> {
        let sub = w.next_sub();
        self.set(keys::kv_key(&kv.key), None);
        self.set(
            keys::hist_key(&kv.key, w.rev, sub),
            Some(keys::encode("history record", &HistRecord::Delete)?),
        );
        self.set(
            keys::event_key(w.rev, sub),
            Some(keys::event_value(EventKind::Delete, &kv.key)),
        );
        if kv.lease != 0 {
            self.set(keys::attach_key(kv.lease, &kv.key), None);
        }
        Ok(())
    }

    /// Drops events below `revision` and every version not needed to read at or above
    /// it: of the versions at or below it, only the newest of each key stays, and only
    /// if it is not a deletion.
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
        let mut removes = Vec::new();
        {
            let (lo, hi) = keys::prefix_range(&[keys::HIST]);
            let mut current: Option<Vec<u8>> = None;
            // The newest version <= revision seen so far of `current`: (raw key, is_put).
            let mut newest: Option<(Vec<u8>, bool)> = None;
            for item in self.view().scan(lo, hi) {
                let (raw_key, raw) = item?;
                let (user, rev, _) = keys::parse_hist_key(&raw_key)?;
                if current.as_deref() != Some(user.as_slice()) {
                    if let Some((k, false)) = newest.take() {
                        removes.push(k);
                    }
                    current = Some(user);
                }
                if rev <= revision {
                    let rec: HistRecord = keys::decode("history record", &raw)?;
                    if let Some((older, _)) = newest.take() {
                        removes.push(older);
                    }
                    newest = Some((raw_key.to_vec(), matches!(rec, HistRecord::Put { .. })));
                }
            }
            if let Some((k, false)) = newest {
                removes.push(k);
            }
            let events = self.view().scan(
                keys::event_key(0, 0),
                std::ops::Bound::Excluded(keys::event_key(revision, 0)),
            );
            for item in events {
                removes.push(item?.0.to_vec());
            }
        }
        for k in removes {
            self.set(k, None);
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
            if let Some(kv) = read::get_kv(self.view(), &k)? {
                self.delete_key(&kv, &mut w)?;
            }
            self.set(keys::attach_key(id, &k), None);
        }
        self.set(key, None);
        let revision = self.finish(&w);
        Ok(CommandResult::LeaseRevoke { revision })
    }

    /// Ends the group: the pending writes plus the new meta records as one sled batch.
    pub(crate) fn into_batch(
        mut self,
        applied: &AppliedState,
    ) -> Result<sled::Batch, StorageError> {
        self.pending.insert(
            keys::META_REVISION.to_vec(),
            Some(self.revision.to_be_bytes().to_vec()),
        );
        self.pending.insert(
            keys::META_COMPACT.to_vec(),
            Some(self.compact_revision.to_be_bytes().to_vec()),
        );
        self.pending.insert(
            keys::META_APPLIED.to_vec(),
            Some(keys::encode("applied state", applied)?),
        );
        let mut batch = sled::Batch::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        Ok(batch)
    }
}
