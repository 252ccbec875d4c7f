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
use trireme_mvcc::{Command, CommandError, CommandResult, Store};
use trireme_raft::durable::write_file_atomic;
use trireme_raft::{AppliedState, ApplyEntry, StateMachine};

use crate::lessor::Lessor;
use crate::proposal::{Applied, ApplyFailure, ApplyOutput, Proposal};

/// The live MVCC store, swapped whole when a snapshot is installed. Readers clone
/// the inner `Arc` and read without holding the lock.
pub type SharedStore = Arc<RwLock<Arc<Store>>>;

pub fn current(shared: &SharedStore) -> Arc<Store> {
    shared.read().unwrap_or_else(|p| p.into_inner()).clone()
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("mvcc storage: {0}")]
    Storage(#[from] trireme_mvcc::StorageError),
    #[error("restore snapshot: {0}")]
    Snapshot(#[from] trireme_mvcc::SnapshotError),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
}

pub struct MvccMachine {
    /// `state/`: holds `CURRENT` and the `sm-N` directories.
    root: PathBuf,
    /// `N` of the live `sm-N`.
    generation: u64,
    store: SharedStore,
    /// The store revision after each apply; watchers wait on it.
    revision: watch::Sender<u64>,
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
        let machine = MvccMachine {
            root: root.to_path_buf(),
            generation,
            store: Arc::new(RwLock::new(Arc::new(store))),
            revision,
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
    Malformed(String),
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
        let store = current(&self.store);
        let mut batch = Vec::with_capacity(entries.len());
        let mut decoded = Vec::with_capacity(entries.len());
        for e in entries {
            let (command, d) = match e.data.as_deref().map(Proposal::decode) {
                None => (None, Decoded::Mvcc),
                Some(Ok(Proposal::Mvcc(c))) => (Some(c), Decoded::Mvcc),
                Some(Ok(Proposal::LeaseKeepAlive { id })) => (None, Decoded::KeepAlive(id)),
                Some(Err(err)) => (None, Decoded::Malformed(err.to_string())),
            };
            decoded.push((d, command.clone()));
            batch.push(trireme_mvcc::ApplyEntry {
                index: e.index,
                term: e.term,
                command,
                conf_state: e.conf_state,
            });
        }
        let results = store.apply_batch(&batch)?;
        let now = Instant::now();
        let mut outputs = Vec::with_capacity(results.len());
        for ((d, command), result) in decoded.into_iter().zip(results) {
            let output = match d {
                Decoded::Malformed(why) => Err(ApplyFailure::Malformed(why)),
                Decoded::KeepAlive(id) => match result {
                    Err(CommandError::AlreadyApplied) => Err(CommandError::AlreadyApplied.into()),
                    _ => match store.lease(id)? {
                        Some(info) => {
                            self.lessor.renew(id, info.ttl_seconds, now);
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
                            self.lessor.renew(*id, *ttl_seconds, now)
                        }
                        (Some(Command::LeaseRevoke { id }), Ok(_))
                        | (
                            Some(Command::LeaseRevoke { id }),
                            Err(CommandError::LeaseNotFound(_)),
                        ) => self.lessor.remove(*id),
                        _ => {}
                    }
                    result.map(Applied::Mvcc).map_err(ApplyFailure::from)
                }
            };
            outputs.push(output);
        }
        self.publish_revision(&store);
        Ok(outputs)
    }

    fn sync(&mut self) -> Result<(), MachineError> {
        current(&self.store).sync()?;
        Ok(())
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
        Applied::LeaseKeepAlive { .. } => Err(crate::StoreError::Malformed(
            "a keep-alive result for a command".into(),
        )),
    }
}
