//! In-process tests over real sockets (127.0.0.1, port 0), real TLS and real
//! `trireme_raft` nodes (real sled logs) with a recording state machine.

mod cluster;
mod refusals;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trireme_raft::{Bootstrap, NodeConfig, NodeHandle, FAST_TICK};

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

pub(crate) use trireme_raft::testing::{propose_retrying, wait_for, RecordingSm};

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
