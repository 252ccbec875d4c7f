//! In-process tests over real sockets (127.0.0.1, port 0), real TLS and real
//! `trireme_raft` nodes (real sled logs) with a recording state machine.

mod cluster;
mod refusals;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trireme_raft::{
    AppliedState, ApplyEntry, Bootstrap, NodeConfig, NodeHandle, StateMachine, FAST_TICK,
};

use crate::pki::{self, Ca};
use crate::{member_id, MailboxSlot, PeerServer, PeerTls, PeerTransport, ServerError};

/// Everything logged by any test, for checking that refusals are logged.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct W;
        impl Write for W {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Some(l) = LOGS.get() {
                    l.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(buf);
                }
                std::io::stderr().write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| W)
            .try_init();
        Mutex::new(Vec::new())
    })
}

pub(crate) fn init_logs() {
    let _ = logs();
}

/// Waits until the logs contain every one of `needles` on one line.
pub(crate) async fn logged(needles: &[&str], limit: Duration) -> bool {
    wait_for(limit, || {
        let l = logs().lock().unwrap();
        String::from_utf8_lossy(&l)
            .lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
            .then_some(())
    })
    .await
    .is_some()
}

/// Records every applied payload.
#[derive(Default)]
pub(crate) struct Recorded {
    applied: AppliedState,
    entries: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone, Default)]
pub(crate) struct RecordingSm(Arc<Mutex<Recorded>>);

impl RecordingSm {
    pub(crate) fn payloads(&self) -> Vec<Vec<u8>> {
        let r = self.0.lock().unwrap();
        r.entries.iter().map(|(_, d)| d.clone()).collect()
    }
}

impl StateMachine for RecordingSm {
    type Output = u64;
    type Error = std::io::Error;

    fn applied(&self) -> AppliedState {
        self.0.lock().unwrap().applied.clone()
    }

    fn apply(&mut self, entries: Vec<ApplyEntry>) -> Result<Vec<u64>, Self::Error> {
        let mut r = self.0.lock().unwrap();
        let mut out = Vec::new();
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

    fn write_snapshot(&mut self, w: &mut dyn Write) -> Result<AppliedState, Self::Error> {
        let r = self.0.lock().unwrap();
        for v in [
            r.applied.index,
            r.applied.term,
            r.applied.conf_state.len() as u64,
        ] {
            w.write_all(&v.to_be_bytes())?;
        }
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
        fn u64_of(rd: &mut dyn Read) -> std::io::Result<u64> {
            let mut b = [0u8; 8];
            rd.read_exact(&mut b)?;
            Ok(u64::from_be_bytes(b))
        }
        fn bytes_of(rd: &mut dyn Read, n: u64) -> std::io::Result<Vec<u8>> {
            let mut v = vec![0u8; n as usize];
            rd.read_exact(&mut v)?;
            Ok(v)
        }
        let index = u64_of(rd)?;
        let term = u64_of(rd)?;
        let n = u64_of(rd)?;
        let conf_state = bytes_of(rd, n)?;
        let count = u64_of(rd)?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let i = u64_of(rd)?;
            let n = u64_of(rd)?;
            entries.push((i, bytes_of(rd, n)?));
        }
        let mut r = self.0.lock().unwrap();
        r.applied = AppliedState {
            index,
            term,
            conf_state,
        };
        r.entries = entries;
        Ok(r.applied.clone())
    }
}

/// Polls `f` every 10 ms until it returns Some or `limit` passes.
pub(crate) async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

/// Proposes with retries on retryable errors until `limit`.
pub(crate) async fn propose_retrying(h: &NodeHandle<u64>, data: &[u8], limit: Duration) -> u64 {
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

pub(crate) fn node_config(
    id: u64,
    dir: &std::path::Path,
    voters: Vec<u64>,
    threshold: u64,
) -> NodeConfig {
    let mut c = NodeConfig::new(id, dir, Bootstrap::Initial(voters));
    c.tick = FAST_TICK;
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.snapshot_threshold = threshold;
    c.compaction_margin = 0;
    c.max_size_per_msg = 64 * 1024;
    c.request_timeout = Duration::from_secs(3);
    c
}

/// A peer certificate of `ca` for `name` on 127.0.0.1, as a `PeerTls` trusting `trust`.
pub(crate) fn peer_tls(ca: &Ca, trust: &Ca, name: &str) -> PeerTls {
    let cert = pki::issue_peer(ca, name, &["127.0.0.1".into()]).unwrap();
    PeerTls::from_pem(
        trust.cert_pem().as_bytes(),
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
    .unwrap()
}

/// A running peer server and how to stop it.
pub(crate) struct RunningServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    pub(crate) async fn start(tls: PeerTls, slot: MailboxSlot) -> RunningServer {
        let server = PeerServer::bind("127.0.0.1:0".parse().unwrap(), tls, slot)
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        RunningServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server; it must close every connection, long-lived streams included.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops within 10 s");
        r.unwrap().unwrap();
    }
}

/// One member: its node, its server, its transport.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) id: u64,
    pub(crate) tls: PeerTls,
    pub(crate) slot: MailboxSlot,
    pub(crate) server: Option<RunningServer>,
    pub(crate) transport: Arc<PeerTransport>,
    pub(crate) handle: Arc<NodeHandle<u64>>,
    pub(crate) sm: RecordingSm,
    pub(crate) dir: tempfile::TempDir,
}

/// Starts `names` as the founding voters of one cluster, each with a peer server on
/// 127.0.0.1 and a transport that knows every other member.
pub(crate) async fn start_cluster(ca: &Ca, names: &[&str], threshold: u64) -> Vec<Member> {
    init_logs();
    let ids: Vec<u64> = names.iter().map(|n| member_id(n)).collect();
    let mut pending = Vec::new();
    for name in names {
        let tls = peer_tls(ca, ca, name);
        let slot = MailboxSlot::new();
        let server = RunningServer::start(tls.clone(), slot.clone()).await;
        pending.push((name.to_string(), tls, slot, server));
    }
    let urls: Vec<(u64, String)> = pending
        .iter()
        .map(|(n, _, _, s)| (member_id(n), s.url()))
        .collect();
    let mut members = Vec::new();
    for (name, tls, slot, server) in pending {
        let id = member_id(&name);
        let transport = PeerTransport::new(tokio::runtime::Handle::current(), tls.clone());
        for (peer, url) in &urls {
            if *peer != id {
                transport.set_peer(*peer, url).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let sm = RecordingSm::default();
        let handle = NodeHandle::start(
            node_config(id, dir.path(), ids.clone(), threshold),
            sm.clone(),
            Arc::clone(&transport),
        )
        .unwrap();
        slot.set(handle.mailbox());
        members.push(Member {
            name,
            id,
            tls,
            slot,
            server: Some(server),
            transport,
            handle,
            sm,
            dir,
        });
    }
    members
}
