//! Watches: every event after a start revision, once, in order, read from the MVCC
//! event history. A watcher never keeps its own copy of live events: it reads the
//! history from its next revision whenever the store revision moves, so catching up
//! and following are the same code and a gap cannot open between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use trireme_mvcc::Event;

use crate::machine::{current, SharedStore};
use crate::StoreError;

/// Most events returned by one [`Watcher::next`].
const MAX_BATCH: usize = 1000;

pub struct Watcher {
    store: SharedStore,
    revision: watch::Receiver<u64>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    /// The next revision this watcher delivers.
    next: u64,
    /// See [`Watcher::progress`].
    progress: Arc<AtomicU64>,
}

impl Watcher {
    pub(crate) fn new(
        store: SharedStore,
        revision: watch::Receiver<u64>,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start_revision: u64,
        prev_kv: bool,
    ) -> Self {
        let now = current(&store).revision();
        let next = if start_revision == 0 {
            now + 1
        } else {
            start_revision
        };
        Watcher {
            store,
            revision,
            key,
            range_end,
            prev_kv,
            next,
            progress: Arc::new(AtomicU64::new((next - 1).min(now))),
        }
    }

    /// The revision up to which this watcher has nothing more to report: every event
    /// of its range up to it was returned by an earlier [`Watcher::next`] (one its
    /// caller finished with, since it called `next` again) or does not exist. Never
    /// above the store's revision. Readable from other tasks while `next` waits, for
    /// progress notifications.
    pub fn progress(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.progress)
    }

    /// The revision of the next event this watcher will deliver.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// Waits for the next events (at least one). `Err(Compacted)` when the history
    /// from the next revision is gone; `Err(Storage)` if this replica stopped.
    pub async fn next(&mut self) -> Result<Vec<Event>, StoreError> {
        loop {
            // Mark the current revision as seen *before* reading, so a write that
            // lands after the read wakes `changed()` below.
            let _ = self.revision.borrow_and_update();
            let store: Arc<_> = current(&self.store);
            // The read below covers at least this revision.
            let upto = store.revision();
            // The caller is done with what the last call returned (capped: a start in
            // the future is not progress).
            self.progress
                .fetch_max(self.next.saturating_sub(1).min(upto), Ordering::AcqRel);
            let mut events = store.events(
                self.next,
                &self.key,
                &self.range_end,
                MAX_BATCH,
                self.prev_kv,
            )?;
            if events.len() == MAX_BATCH {
                // The limit may have cut the last revision in half: deliver only whole
                // revisions (all of one if a single revision fills the batch).
                let last_rev = events[MAX_BATCH - 1].kv.mod_revision;
                events.retain(|e| e.kv.mod_revision < last_rev);
                if events.is_empty() {
                    events =
                        store.events(self.next, &self.key, &self.range_end, 0, self.prev_kv)?;
                    events.retain(|e| e.kv.mod_revision == last_rev);
                }
            }
            if let Some(last) = events.last() {
                self.next = last.kv.mod_revision + 1;
                return Ok(events);
            }
            // Nothing in the range up to `upto`: the next read starts after it.
            self.next = self.next.max(upto + 1);
            self.progress.fetch_max(upto, Ordering::AcqRel);
            if self.revision.changed().await.is_err() {
                return Err(StoreError::Storage("the replica stopped".into()));
            }
        }
    }
}
