//! Watches: every event after a start revision, once, in order, read from the MVCC
//! event history. A watcher never keeps its own copy of live events: it reads the
//! history from its next revision whenever the store revision moves, so catching up
//! and following are the same code and a gap cannot open between them.

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
        let next = if start_revision == 0 {
            current(&store).revision() + 1
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
        }
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
            if self.revision.changed().await.is_err() {
                return Err(StoreError::Storage("the replica stopped".into()));
            }
        }
    }
}
