//! The Raft thread's own tokio runtime, and the queues that wake it.
//!
//! The Raft thread runs its Ready loop inside a single-threaded runtime
//! ([`RaftRuntime`]). A transport that spawns its peer streams and its peer server on
//! that runtime ([`RaftRuntime::handle`]) then moves a message between the Raft loop and
//! a socket without waking another thread: on a follower, the bytes of an append are
//! read, decoded, stepped, written to the log and acknowledged on one thread. Every
//! hand-off between threads costs a wake-up, tens of microseconds on a small VM, and a
//! quorum write crosses the transport four times.
//!
//! The loop sleeps on a [`Notify`] with the tick as its timeout; everything that queues
//! work for it ([`ToRaft`]) notifies after queueing, so a wake-up is never lost (a
//! notification with no waiter is kept for the next wait).

use std::future::Future;
use std::sync::Arc;

use crossbeam_channel::{SendError, Sender, TrySendError};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::Notify;

/// The single-threaded runtime a node's Raft thread drives. Tasks spawned on
/// [`handle`](RaftRuntime::handle) run on the Raft thread, between Readies and while
/// it waits; they must not block. Build it before the transport, hand its handle to
/// the transport, then give it to `NodeHandle::start_on`; when the node stops, the
/// runtime and every task on it stop with it.
pub struct RaftRuntime(Option<Runtime>);

impl RaftRuntime {
    pub fn new() -> std::io::Result<Self> {
        let rt = Builder::new_current_thread()
            .enable_all()
            .thread_name("raft-io")
            .build()?;
        Ok(RaftRuntime(Some(rt)))
    }

    /// Where to spawn work that should run on the Raft thread.
    pub fn handle(&self) -> Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            // Only `Drop` takes the runtime out.
            None => unreachable!("a RaftRuntime is never used after it is dropped"),
        }
    }

    /// Drives `fut` and every task spawned on this runtime until `fut` finishes.
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match &self.0 {
            Some(rt) => rt.block_on(fut),
            None => unreachable!("a RaftRuntime is never used after it is dropped"),
        }
    }
}

impl std::fmt::Debug for RaftRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftRuntime").finish_non_exhaustive()
    }
}

impl Drop for RaftRuntime {
    /// Stops the tasks without waiting for them: a plain runtime drop blocks, which
    /// tokio forbids inside async code (a node that fails to start drops its runtime
    /// in the caller's task).
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A bounded queue to the Raft thread that wakes its loop.
pub(crate) struct ToRaft<T> {
    tx: Sender<T>,
    wake: Arc<Notify>,
}

impl<T> Clone for ToRaft<T> {
    fn clone(&self) -> Self {
        ToRaft {
            tx: self.tx.clone(),
            wake: Arc::clone(&self.wake),
        }
    }
}

impl<T> ToRaft<T> {
    pub(crate) fn new(tx: Sender<T>, wake: Arc<Notify>) -> Self {
        ToRaft { tx, wake }
    }

    pub(crate) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(v)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Waits for room (blocks the calling thread).
    pub(crate) fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.tx.send(v)?;
        self.wake.notify_one();
        Ok(())
    }
}
