//! Test support shared by every crate that runs in-process clusters: a state machine
//! that records what it applies, and a bounded poll.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::node::NodeHandle;
use crate::state_machine::{AppliedState, ApplyEntry, BackgroundSync, StateMachine};

/// How a [`RecordingSm`] answers [`StateMachine::background_sync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackgroundSyncMode {
    /// It has none: the node calls `sync` on its own thread.
    #[default]
    None,
    /// It has one, which counts its calls and succeeds.
    Succeed,
    /// It has one, which fails with "injected sync failure".
    Fail,
}

#[derive(Default)]
struct Recorded {
    applied: AppliedState,
    entries: Vec<(u64, Vec<u8>)>,
    background: BackgroundSyncMode,
    background_syncs: u64,
}

/// Records every applied payload in memory (not durable: for tests without restarts).
/// Clones share the record, so a test keeps one and gives one to the node.
#[derive(Clone, Default)]
pub struct RecordingSm(Arc<Mutex<Recorded>>);

impl RecordingSm {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A state machine with a background sync that behaves as `mode` says.
    pub fn with_background_sync(mode: BackgroundSyncMode) -> RecordingSm {
        let sm = RecordingSm::default();
        sm.lock().background = mode;
        sm
    }

    /// Calls of the background sync so far.
    pub fn background_syncs(&self) -> u64 {
        self.lock().background_syncs
    }

    /// How many clones are alive: a test's own clone plus the node's until the node
    /// drops its state machine.
    pub fn clones_alive(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Every payload applied, in order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.lock().entries.iter().map(|(_, d)| d.clone()).collect()
    }
}

fn read_u64(rd: &mut dyn Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    rd.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_bytes(rd: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let n = read_u64(rd)?;
    if n > 1 << 30 {
        return Err(std::io::Error::other("record too large"));
    }
    let mut v = vec![0u8; n as usize];
    rd.read_exact(&mut v)?;
    Ok(v)
}

impl StateMachine for RecordingSm {
    /// The entry's index.
    type Output = u64;
    type Error = std::io::Error;

    fn applied(&self) -> AppliedState {
        self.lock().applied.clone()
    }

    fn apply(&mut self, entries: Vec<ApplyEntry>) -> Result<Vec<u64>, Self::Error> {
        let mut r = self.lock();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(e.index);
            if e.index <= r.applied.index {
                continue;
            }
            if let Some(d) = e.data {
                r.entries.push((e.index, d));
            }
            r.applied.index = e.index;
            r.applied.term = e.term;
            if let Some(cs) = e.conf_state {
                r.applied.conf_state = cs;
            }
        }
        Ok(out)
    }

    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn background_sync(&self) -> Option<BackgroundSync> {
        let mode = self.lock().background;
        let me = self.clone();
        match mode {
            BackgroundSyncMode::None => None,
            BackgroundSyncMode::Succeed => Some(Box::new(move || {
                me.lock().background_syncs += 1;
                Ok(())
            })),
            BackgroundSyncMode::Fail => Some(Box::new(|| Err("injected sync failure".into()))),
        }
    }

    fn write_snapshot(&mut self, w: &mut dyn Write) -> Result<AppliedState, Self::Error> {
        let r = self.lock();
        w.write_all(&r.applied.index.to_be_bytes())?;
        w.write_all(&r.applied.term.to_be_bytes())?;
        w.write_all(&(r.applied.conf_state.len() as u64).to_be_bytes())?;
        w.write_all(&r.applied.conf_state)?;
        w.write_all(&(r.entries.len() as u64).to_be_bytes())?;
        for (i, d) in &r.entries {
            w.write_all(&i.to_be_bytes())?;
            w.write_all(&(d.len() as u64).to_be_bytes())?;
            w.write_all(d)?;
        }
        Ok(r.applied.clone())
    }

    fn restore(&mut self, rd: &mut dyn Read) -> Result<AppliedState, Self::Error> {
        let index = read_u64(rd)?;
        let term = read_u64(rd)?;
        let conf_state = read_bytes(rd)?;
        let count = read_u64(rd)?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let i = read_u64(rd)?;
            entries.push((i, read_bytes(rd)?));
        }
        let mut r = self.lock();
        r.applied = AppliedState {
            index,
            term,
            conf_state,
        };
        r.entries = entries;
        Ok(r.applied.clone())
    }
}

/// Polls `f` every 10 ms until it returns `Some` or `limit` passes.
pub async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes `data` until it is applied here, retrying retryable errors until `limit`;
/// panics (failing the test) otherwise. Returns the entry's index.
pub async fn propose_retrying(h: &NodeHandle<u64>, data: &[u8], limit: Duration) -> u64 {
    let end = Instant::now() + limit;
    loop {
        match h.propose(data.to_vec()).await {
            Ok(index) => return index,
            Err(e) if e.is_retryable() && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("proposal failed: {e}"),
        }
    }
}
