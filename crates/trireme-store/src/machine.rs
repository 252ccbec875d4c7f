//! [`MvccMachine`]: the MVCC store as the Raft node's state machine.
//!
//! The MVCC store lives in `state/sm-N/`, where `state/CURRENT` names the live `N`. A
//! snapshot is restored into a fresh `sm-(N+1)/`, synced, and only then does
//! `CURRENT` switch to it (a durable rename): a crash during a restore leaves the old
//! state, never half of each.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::watch;
use trireme_mvcc::{ClusterWrite, Command, CommandError, CommandResult, Store};
use trireme_raft::durable::write_file_atomic;
use trireme_raft::eraftpb::ConfState;
use trireme_raft::{decode_conf_state, AppliedState, ApplyEntry, StateMachine};

use crate::lessor::Lessor;
use crate::member::{self, conf_ids, encode_attrs, member_key, Member, MemberAttrs};
use crate::proposal::{Applied, ApplyFailure, ApplyOutput, Proposal};

/// The live MVCC store, swapped whole when a snapshot is installed. Readers clone
/// the inner `Arc` and read without holding the lock.
pub type SharedStore = Arc<RwLock<Arc<Store>>>;

pub fn current(shared: &SharedStore) -> Arc<Store> {
    shared.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The members of `store`'s applied configuration, with their attributes (one
/// consistent read).
pub(crate) fn members_of(store: &Store) -> Result<Vec<Member>, MachineError> {
    let (applied, records) = store.cluster_records()?;
    let cs = decode_conf(&applied.conf_state)?;
    let table = member::decode_table(&records).map_err(MachineError::Corrupt)?;
    Ok(member::list(&cs, &table))
}

fn decode_conf(bytes: &[u8]) -> Result<ConfState, MachineError> {
    decode_conf_state(bytes).map_err(|e| MachineError::Corrupt(format!("conf state: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("mvcc storage: {0}")]
    Storage(#[from] trireme_mvcc::StorageError),
    #[error("restore snapshot: {0}")]
    Snapshot(#[from] trireme_mvcc::SnapshotError),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

pub struct MvccMachine {
    /// `state/`: holds `CURRENT` and the `sm-N` directories.
    root: PathBuf,
    /// `N` of the live `sm-N`.
    generation: u64,
    store: SharedStore,
    /// The store revision after each apply; watchers wait on it.
    revision: watch::Sender<u64>,
    /// The member list after each apply that changed it.
    members: watch::Sender<Vec<Member>>,
    lessor: Arc<Lessor>,
}

fn sm_dir(root: &Path, generation: u64) -> PathBuf {
    root.join(format!("sm-{generation}"))
}

impl MvccMachine {
    /// Opens the live store under `root` (creating the first one), removing any
    /// directory a crashed restore left behind.
    pub fn open(root: &Path, lessor: Arc<Lessor>) -> Result<Self, MachineError> {
        std::fs::create_dir_all(root)?;
        let current_file = root.join("CURRENT");
        let generation = match std::fs::read_to_string(&current_file) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| std::io::Error::other(format!("{}: {e}", current_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file_atomic(&current_file, b"1")?;
                1
            }
            Err(e) => return Err(e.into()),
        };
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("sm-") && name != format!("sm-{generation}") {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let store = Store::open(&sm_dir(root, generation))?;
        let (revision, _) = watch::channel(store.revision());
        let (members, _) = watch::channel(members_of(&store)?);
        let machine = MvccMachine {
            root: root.to_path_buf(),
            generation,
            store: Arc::new(RwLock::new(Arc::new(store))),
            revision,
            members,
            lessor,
        };
        machine.reset_lessor()?;
        Ok(machine)
    }

    pub fn shared_store(&self) -> SharedStore {
        Arc::clone(&self.store)
    }

    pub fn revision_watch(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The member list, republished whenever an apply or a restore changes it.
    pub fn member_watch(&self) -> watch::Receiver<Vec<Member>> {
        self.members.subscribe()
    }

    fn publish_members(&self, store: &Store) -> Result<(), MachineError> {
        let list = members_of(store)?;
        self.members.send_if_modified(|m| {
            let changed = *m != list;
            *m = list;
            changed
        });
        Ok(())
    }

    fn reset_lessor(&self) -> Result<(), MachineError> {
        let leases = current(&self.store).leases()?;
        self.lessor.reset(
            leases.into_iter().map(|l| (l.id, l.ttl_seconds)),
            Instant::now(),
        );
        Ok(())
    }

    fn publish_revision(&self, store: &Store) {
        let rev = store.revision();
        self.revision.send_if_modified(|r| {
            let changed = *r != rev;
            *r = rev;
            changed
        });
    }
}

/// What one entry decoded to, kept to build its output after the batch.
enum Decoded {
    Mvcc,
    KeepAlive(i64),
    Member(u64),
    NotMember(u64),
    Malformed(String),
}

/// One output per entry, from what the store decided for it.
fn outputs(
    store: &Store,
    lessor: &Lessor,
    decoded: Vec<(Decoded, Option<Command>)>,
    results: Vec<trireme_mvcc::ApplyResult>,
    now: Instant,
) -> Result<Vec<ApplyOutput>, MachineError> {
    let mut outputs = Vec::with_capacity(results.len());
    for ((d, command), result) in decoded.into_iter().zip(results) {
        let output = match d {
            Decoded::Malformed(why) => Err(ApplyFailure::Malformed(why)),
            Decoded::Member(id) => match result {
                Err(CommandError::AlreadyApplied) => Err(CommandError::AlreadyApplied.into()),
                _ => Ok(Applied::Member { id }),
            },
            Decoded::NotMember(id) => match result {
                Err(CommandError::AlreadyApplied) => Err(CommandError::AlreadyApplied.into()),
                _ => Err(ApplyFailure::NotMember(id)),
            },
            Decoded::KeepAlive(id) => match result {
                Err(CommandError::AlreadyApplied) => Err(CommandError::AlreadyApplied.into()),
                _ => match store.lease(id)? {
                    Some(info) => {
                        lessor.renew(id, info.ttl_seconds, now);
                        Ok(Applied::LeaseKeepAlive {
                            id,
                            ttl_seconds: info.ttl_seconds,
                        })
                    }
                    None => Err(CommandError::LeaseNotFound(id).into()),
                },
            },
            Decoded::Mvcc => {
                match (&command, &result) {
                    (Some(Command::LeaseGrant { id, ttl_seconds }), Ok(_)) => {
                        lessor.renew(*id, *ttl_seconds, now)
                    }
                    (Some(Command::LeaseRevoke { id }), Ok(_))
                    | (Some(Command::LeaseRevoke { id }), Err(CommandError::LeaseNotFound(_))) => {
                        lessor.remove(*id)
                    }
                    _ => {}
                }
                result.map(Applied::Mvcc).map_err(ApplyFailure::from)
            }
        };
        outputs.push(output);
    }
    Ok(outputs)
}

fn set_member(id: u64, attrs: &MemberAttrs) -> ClusterWrite {
    ClusterWrite {
        key: member_key(id),
        value: Some(encode_attrs(attrs)),
    }
}

impl StateMachine for MvccMachine {
    type Output = ApplyOutput;
    type Error = MachineError;

    fn applied(&self) -> AppliedState {
        let a = current(&self.store).applied();
        AppliedState {
            index: a.index,
            term: a.term,
            conf_state: a.conf_state,
        }
    }

    fn apply(&mut self, entries: Vec<ApplyEntry>) -> Result<Vec<ApplyOutput>, MachineError> {
        let mut out = Vec::new();
        self.apply_answering(entries, &mut |outputs| out = outputs)?;
        Ok(out)
    }

    /// Answers before the batch's records are written (`Store::apply_batch_answering`)
    /// unless an entry's output must read the store: a lease keep-alive's TTL.
    fn apply_answering(
        &mut self,
        entries: Vec<ApplyEntry>,
        answer: &mut dyn FnMut(Vec<ApplyOutput>),
    ) -> Result<(), MachineError> {
        let store = current(&self.store);
        let applied_index = store.applied().index;
        // The configuration as of the entry being looked at (membership decides
        // whether a publish is taken, and a removal deletes the member's record).
        let mut conf: Option<ConfState> = None;
        let mut members_changed = false;
        let mut batch = Vec::with_capacity(entries.len());
        let mut decoded = Vec::with_capacity(entries.len());
        for e in entries {
            // The store skips what it applied already; so does the member logic.
            let fresh = e.index > applied_index;
            let mut cluster = Vec::new();
            let (command, d) = match e.data.as_deref().map(Proposal::decode) {
                None => (None, Decoded::Mvcc),
                Some(Ok(Proposal::Mvcc(c))) => (Some(c), Decoded::Mvcc),
                Some(Ok(Proposal::LeaseKeepAlive { id })) => (None, Decoded::KeepAlive(id)),
                Some(Ok(Proposal::MemberAdd { id, attrs })) => {
                    cluster.push(set_member(id, &attrs));
                    (None, Decoded::Member(id))
                }
                Some(Ok(Proposal::MemberPublish { id, attrs })) => {
                    let cs = match conf.take() {
                        Some(cs) => cs,
                        None => decode_conf(&store.applied().conf_state)?,
                    };
                    let member = conf_ids(&cs).contains(&id);
                    conf = Some(cs);
                    if member {
                        cluster.push(set_member(id, &attrs));
                        (None, Decoded::Member(id))
                    } else {
                        (None, Decoded::NotMember(id))
                    }
                }
                Some(Err(err)) => (None, Decoded::Malformed(err.to_string())),
            };
            if let (Some(bytes), true) = (&e.conf_state, fresh) {
                let old = match conf.take() {
                    Some(cs) => cs,
                    None => decode_conf(&store.applied().conf_state)?,
                };
                let new = decode_conf(bytes)?;
                let still = conf_ids(&new);
                for id in conf_ids(&old) {
                    if !still.contains(&id) {
                        // A removed member's record goes with it: the same name can
                        // be added again later, with new URLs.
                        cluster.push(ClusterWrite {
                            key: member_key(id),
                            value: None,
                        });
                    }
                }
                conf = Some(new);
                members_changed = true;
            }
            if !fresh {
                cluster.clear();
            }
            members_changed |= !cluster.is_empty();
            decoded.push((d, command.clone()));
            batch.push(trireme_mvcc::ApplyEntry {
                index: e.index,
                term: e.term,
                command,
                conf_state: e.conf_state,
                cluster,
            });
        }
        let now = Instant::now();
        if decoded
            .iter()
            .any(|(d, _)| matches!(d, Decoded::KeepAlive(_)))
        {
            let results = store.apply_batch(&batch)?;
            answer(outputs(&store, &self.lessor, decoded, results, now)?);
        } else {
            // No output reads the store, so they can be built under its write lock.
            let mut failed = None;
            store.apply_batch_answering(&batch, |results| {
                match outputs(&store, &self.lessor, decoded, results, now) {
                    Ok(o) => answer(o),
                    Err(e) => failed = Some(e),
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.publish_revision(&store);
        if members_changed {
            self.publish_members(&store)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), MachineError> {
        current(&self.store).sync()?;
        Ok(())
    }

    fn background_sync(&self) -> Option<trireme_raft::BackgroundSync> {
        let store = Arc::clone(&self.store);
        Some(Box::new(move || {
            current(&store).sync().map_err(|e| e.to_string())
        }))
    }

    fn write_snapshot(&mut self, w: &mut dyn Write) -> Result<AppliedState, MachineError> {
        let info = current(&self.store).write_snapshot(w)?;
        Ok(AppliedState {
            index: info.applied.index,
            term: info.applied.term,
            conf_state: info.applied.conf_state,
        })
    }

    fn restore(&mut self, r: &mut dyn Read) -> Result<AppliedState, MachineError> {
        let next = self.generation + 1;
        let dir = sm_dir(&self.root, next);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let restored = Store::restore(&dir, r)?;
        // The new state is synced; switching CURRENT is the atomic commit point.
        write_file_atomic(&self.root.join("CURRENT"), next.to_string().as_bytes())?;
        let old = sm_dir(&self.root, self.generation);
        self.generation = next;
        let restored = Arc::new(restored);
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&restored);
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(dir = %old.display(), "removing the replaced state: {e}");
        }
        self.reset_lessor()?;
        self.publish_revision(&restored);
        self.publish_members(&restored)?;
        let a = restored.applied();
        Ok(AppliedState {
            index: a.index,
            term: a.term,
            conf_state: a.conf_state,
        })
    }
}

/// Convenience for callers matching a command's result.
pub(crate) fn expect_mvcc(applied: Applied) -> Result<CommandResult, crate::StoreError> {
    match applied {
        Applied::Mvcc(r) => Ok(r),
        Applied::LeaseKeepAlive { .. } | Applied::Member { .. } => Err(
            crate::StoreError::Malformed("another entry's result for a command".into()),
        ),
    }
}
