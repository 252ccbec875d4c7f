//! An in-memory network for in-process cluster tests: every node's transport delivers
//! straight into the other nodes' mailboxes, and the test can cut links (isolate a
//! node, split the cluster), drop a share of messages, or delay them. Like the peer
//! transport, a receiver that does not count the sender as a member tells it so
//! (`Mailbox::non_member` / `Mailbox::not_a_member`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft::eraftpb::Message;
use rand::Rng;

use crate::node::Mailbox;
use crate::transport::{SnapshotFile, Transport};

#[derive(Default)]
struct Inner {
    nodes: HashMap<u64, Mailbox>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(u64, u64)>,
    /// Share of messages dropped at random, 0.0..=1.0.
    drop_rate: f64,
    delay: Option<Duration>,
}

/// The in-memory "wire" between nodes of one test cluster.
#[derive(Default)]
pub struct MemoryNetwork {
    inner: Mutex<Inner>,
}

impl MemoryNetwork {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryNetwork::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another test thread must not hide this test's own result.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport node `from` sends through.
    pub fn transport(self: &Arc<Self>, from: u64) -> Arc<MemoryTransport> {
        Arc::new(MemoryTransport {
            net: Arc::clone(self),
            from,
        })
    }

    /// Makes a (re)started node reachable.
    pub fn register(&self, mailbox: Mailbox) {
        self.lock().nodes.insert(mailbox.id(), mailbox);
    }

    /// Makes a stopped node unreachable.
    pub fn unregister(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: u64) {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                inner.cut.insert((id, other));
                inner.cut.insert((other, id));
            }
        }
    }

    /// Splits the nodes into groups that cannot talk to each other.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut inner = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            inner.cut.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    /// Restores every link and stops dropping and delaying.
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.cut.clear();
        inner.drop_rate = 0.0;
        inner.delay = None;
    }

    pub fn set_drop_rate(&self, rate: f64) {
        self.lock().drop_rate = rate.clamp(0.0, 1.0);
    }

    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    /// The mailbox of `to` if the link from `from` is up and the message survives the
    /// random drop.
    fn route(&self, from: u64, to: u64) -> Route {
        let inner = self.lock();
        if inner.cut.contains(&(from, to)) {
            return Route::Cut;
        }
        if inner.drop_rate > 0.0 && rand::thread_rng().gen_bool(inner.drop_rate) {
            return Route::Dropped;
        }
        match inner.nodes.get(&to) {
            Some(m) => Route::To(m.clone(), inner.delay),
            None => Route::Cut,
        }
    }
}

enum Route {
    To(Mailbox, Option<Duration>),
    Dropped,
    Cut,
}

/// One node's sending side of a [`MemoryNetwork`].
pub struct MemoryTransport {
    net: Arc<MemoryNetwork>,
    from: u64,
}

impl Transport for MemoryTransport {
    fn send(&self, msgs: Vec<Message>, feedback: &Mailbox) {
        for m in msgs {
            let route = self.net.route(self.from, m.to);
            if let Route::To(mailbox, _) = &route {
                // What the peer transport does: a member answers a non-member's
                // traffic with "you are not a member", with its applied index.
                if let Some(applied) = mailbox.non_member(m.from) {
                    feedback.not_a_member(m.to, applied);
                }
            }
            match route {
                Route::To(mailbox, None) => mailbox.step(m),
                Route::To(mailbox, Some(delay)) => {
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        mailbox.step(m);
                    });
                }
                Route::Dropped => {}
                Route::Cut => feedback.unreachable(m.to),
            }
        }
    }

    fn send_snapshot(&self, msg: Message, file: SnapshotFile, feedback: Mailbox) {
        let net = Arc::clone(&self.net);
        let from = self.from;
        std::thread::spawn(move || {
            let to = msg.to;
            let ok = match net.route(from, to) {
                Route::To(mailbox, _) => match copy_in_chunks(&file, &mailbox) {
                    Ok(path) => {
                        mailbox.receive_snapshot(msg, path);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(from, to, "snapshot copy failed: {e}");
                        false
                    }
                },
                Route::Dropped | Route::Cut => false,
            };
            feedback.snapshot_done(to, ok);
        });
    }
}

/// Streams the file into the receiver's snapshot directory in 64 KiB chunks and
/// checks size and crc32, as a network transport would.
fn copy_in_chunks(file: &SnapshotFile, to: &Mailbox) -> std::io::Result<std::path::PathBuf> {
    let name = format!("recv-{}-{}.snap", to.id(), rand::random::<u64>());
    let dest = to.snapshot_dir().join(name);
    let mut r = BufReader::new(File::open(&file.path)?);
    let mut w = BufWriter::new(File::create(&dest)?);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        w.write_all(&buf[..n])?;
    }
    w.flush()?;
    if size != file.size || hasher.finalize() != file.crc32 {
        let _ = std::fs::remove_file(&dest);
        return Err(std::io::Error::other("snapshot checksum mismatch"));
    }
    Ok(dest)
}
