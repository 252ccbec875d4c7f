//! The sending side: [`PeerTransport`], the node's `Transport`.
//!
//! One tokio task per peer owns a bounded queue and ONE long-lived client stream to
//! that peer. `send` (called on the Raft thread) only `try_send`s into the queue: a full
//! queue drops the message and reports the peer unreachable (Raft retries). The task
//! coalesces whatever is queued into batches of at most `max_batch_bytes`. When the
//! peer cannot be dialled or its stream breaks, the task reports it unreachable, drops
//! what queued up meanwhile (stale by then), and redials with exponential backoff.
//! Snapshots go on their own connection, one task per snapshot.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use prost::bytes::Bytes;
use protobuf::Message as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use trireme_raft::eraftpb::Message;
use trireme_raft::{Mailbox, SnapshotFile, Transport};

use crate::error::{PeerError, TransportError};
use crate::identity::member_id;
use crate::proto::peer_client::PeerClient;
use crate::proto::MessageBatch;
use crate::snapshot;
use crate::tls::{peer_name, PeerTls};

/// Tunables of the sending side.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Messages queued per peer before `send` drops.
    pub queue_capacity: usize,
    /// A batch closes once it holds this many encoded bytes.
    pub max_batch_bytes: usize,
    /// Largest gRPC message (must match the servers' `max_message_size`); a single
    /// Raft message above it is dropped.
    pub max_message_size: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TCP connect and TLS handshake, each.
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_capacity: 4096,
            max_batch_bytes: 2 * 1024 * 1024,
            max_message_size: 16 * 1024 * 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a peer is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerAddr {
    /// The URL as given, for logs and to notice changes.
    url: String,
    /// Host as written (DNS name or IP, no brackets) and port.
    host: String,
    port: u16,
    /// What the server's certificate must name: the host of the URL.
    server_name: ServerName<'static>,
}

fn parse_url(url: &str) -> Result<PeerAddr, TransportError> {
    let bad = |reason: &str| TransportError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let uri: Uri = with_scheme.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        _ => return Err(bad("the scheme must be https (peers always use TLS)")),
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("a peer URL has no path"));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&format!("{e}")))?;
    Ok(PeerAddr {
        url: url.to_string(),
        host,
        port,
        server_name,
    })
}

/// A peer as the transport knows it.
struct PeerEntry {
    addr: Arc<PeerAddr>,
    queue: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

/// The feedback mailbox the node passed last: where unreachable reports go.
type Feedback = Arc<RwLock<Option<Mailbox>>>;

/// The node's `Transport` over mutual-TLS gRPC streams. Create it, `set_peer` every
/// other member, hand it to `NodeHandle::start`; keep a clone of the `Arc` to change
/// peers as membership changes.
pub struct PeerTransport {
    /// The runtime the peer tasks run on (`send` comes from the Raft thread).
    runtime: Handle,
    tls: PeerTls,
    config: TransportConfig,
    peers: RwLock<HashMap<u64, PeerEntry>>,
    feedback: Feedback,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("member", &self.tls.name())
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    pub fn new(runtime: Handle, tls: PeerTls) -> Arc<PeerTransport> {
        PeerTransport::with_config(runtime, tls, TransportConfig::default())
    }

    pub fn with_config(runtime: Handle, tls: PeerTls, config: TransportConfig) -> Arc<Self> {
        Arc::new(PeerTransport {
            runtime,
            tls,
            config,
            peers: RwLock::new(HashMap::new()),
            feedback: Arc::new(RwLock::new(None)),
        })
    }

    /// Adds peer `id` at `url` (`https://host:port`, or `host:port`), or moves it. The
    /// server's certificate must name the URL's host and be the peer certificate of a
    /// member whose `member_id` is `id`.
    pub fn set_peer(&self, id: u64, url: &str) -> Result<(), TransportError> {
        if id == 0 {
            return Err(TransportError::ZeroId);
        }
        let addr = Arc::new(parse_url(url)?);
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if peers.get(&id).is_some_and(|p| p.addr.url == addr.url) {
            return Ok(());
        }
        let (queue, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        let task = self.runtime.spawn(run_peer(PeerTask {
            to: id,
            addr: Arc::clone(&addr),
            tls: self.tls.clone(),
            config: self.config.clone(),
            feedback: Arc::clone(&self.feedback),
            queue: rx,
        }));
        if let Some(old) = peers.insert(id, PeerEntry { addr, queue, task }) {
            old.task.abort();
        }
        Ok(())
    }

    /// Forgets peer `id` and closes its stream; its messages are dropped from now on.
    pub fn remove_peer(&self, id: u64) {
        let removed = self
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(p) = removed {
            p.task.abort();
        }
    }

    /// The peers and their URLs.
    pub fn peers(&self) -> Vec<(u64, String)> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = peers
            .iter()
            .map(|(id, p)| (*id, p.addr.url.clone()))
            .collect();
        v.sort();
        v
    }

    fn remember_feedback(&self, feedback: &Mailbox) {
        *self
            .feedback
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(feedback.clone());
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        let peers = self.peers.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (_, p) in peers.drain() {
            p.task.abort();
        }
    }
}

impl Transport for PeerTransport {
    fn send(&self, msgs: Vec<Message>, feedback: &Mailbox) {
        self.remember_feedback(feedback);
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        let mut reported: Vec<u64> = Vec::new();
        for m in msgs {
            let to = m.to;
            let ok = match peers.get(&to) {
                Some(p) => match p.queue.try_send(m) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(to, "peer queue full: dropping a message");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
                None => {
                    tracing::debug!(to, "no such peer: dropping a message");
                    false
                }
            };
            if !ok && !reported.contains(&to) {
                reported.push(to);
                feedback.unreachable(to);
            }
        }
    }

    fn send_snapshot(&self, msg: Message, file: SnapshotFile, feedback: Mailbox) {
        let to = msg.to;
        let addr = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&to)
            .map(|p| Arc::clone(&p.addr));
        let Some(addr) = addr else {
            tracing::warn!(to, "snapshot for an unknown peer: dropped");
            feedback.unreachable(to);
            feedback.snapshot_done(to, false);
            return;
        };
        let tls = self.tls.clone();
        let config = self.config.clone();
        self.runtime.spawn(async move {
            let started = Instant::now();
            let result = match connect(to, &addr, &tls, &config).await {
                Ok(channel) => snapshot::send(channel, config.max_message_size, msg, file)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tracing::info!(to, elapsed = ?started.elapsed(), "snapshot sent");
                    feedback.snapshot_done(to, true);
                }
                Err(e) => {
                    tracing::warn!(to, url = %addr.url, "snapshot send failed: {e}");
                    feedback.unreachable(to);
                    feedback.snapshot_done(to, false);
                }
            }
        });
    }
}

/// Dials a peer: TCP, TLS (the server must chain to the CA and name the host), then
/// the peer policy on the server's certificate (a peer certificate of member `to`).
async fn connect(
    to: u64,
    addr: &Arc<PeerAddr>,
    tls: &PeerTls,
    config: &TransportConfig,
) -> Result<Channel, String> {
    // The TLS is ours (in the connector); tonic sees plain "http" so that it never
    // tries its own.
    let endpoint = Endpoint::from_shared(format!("http://{}:{}", uri_host(&addr.host), addr.port))
        .map_err(|e| e.to_string())?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true);
    let addr = Arc::clone(addr);
    let connector = TlsConnector::from(tls.client_config());
    let timeout = config.connect_timeout;
    let dial = tower::service_fn(move |_: Uri| {
        let addr = Arc::clone(&addr);
        let connector = connector.clone();
        async move {
            let tcp =
                tokio::time::timeout(timeout, TcpStream::connect((addr.host.as_str(), addr.port)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })??;
            let _ = tcp.set_nodelay(true);
            let stream =
                tokio::time::timeout(timeout, connector.connect(addr.server_name.clone(), tcp))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or(PeerError::NoCertificate)
                .and_then(peer_name)
                .map_err(std::io::Error::other)?;
            let got = member_id(&name);
            if got != to {
                return Err(std::io::Error::other(PeerError::WrongMember {
                    name,
                    got,
                    expected: to,
                }));
            }
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(dial)
        .await
        .map_err(|e| error_chain(&e))
}

fn uri_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// An error and its sources on one line (tonic's Display alone says "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

struct PeerTask {
    to: u64,
    addr: Arc<PeerAddr>,
    tls: PeerTls,
    config: TransportConfig,
    feedback: Feedback,
    queue: mpsc::Receiver<Message>,
}

impl PeerTask {
    fn feedback(&self) -> Option<Mailbox> {
        self.feedback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The peer says this node is not a member (as of its applied index).
    fn not_a_member(&self, applied: u64) {
        if let Some(f) = self.feedback() {
            f.not_a_member(self.to, applied);
        }
    }

    fn unreachable(&self) {
        let feedback = self
            .feedback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(f) = feedback {
            f.unreachable(self.to);
        }
    }
}

/// A stream healthy this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(1);

async fn run_peer(mut task: PeerTask) {
    let mut backoff = task.config.backoff_min;
    let mut failing = false;
    loop {
        // Dial only when there is something to send.
        let Some(first) = task.queue.recv().await else {
            return;
        };
        let started = Instant::now();
        let outcome = match connect(task.to, &task.addr, &task.tls, &task.config).await {
            Ok(channel) => {
                if failing {
                    tracing::info!(to = task.to, url = %task.addr.url, "peer reachable again");
                    failing = false;
                }
                stream_to(&mut task, channel, first).await
            }
            Err(e) => Err(format!("connect: {e}")),
        };
        let Err(reason) = outcome else {
            return; // the queue closed: the peer was removed
        };
        if started.elapsed() >= HEALTHY {
            backoff = task.config.backoff_min;
        }
        if failing {
            tracing::debug!(to = task.to, url = %task.addr.url, "peer still unreachable: {reason}");
        } else {
            tracing::warn!(to = task.to, url = %task.addr.url, "peer unreachable: {reason}");
            failing = true;
        }
        task.unreachable();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(task.config.backoff_max);
        // What queued up meanwhile is stale: Raft resends what still matters.
        while task.queue.try_recv().is_ok() {}
    }
}

/// Runs one client stream until it fails (`Err`) or the queue closes (`Ok`).
async fn stream_to(task: &mut PeerTask, channel: Channel, first: Message) -> Result<(), String> {
    let (batches, rx) = mpsc::channel::<MessageBatch>(16);
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(task.config.max_message_size)
        .max_encoding_message_size(task.config.max_message_size);
    let rpc = client.stream(ReceiverStream::new(rx));
    tokio::pin!(rpc);
    let mut pending = Some(first);
    loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => tokio::select! {
                r = &mut rpc => return Err(stream_ended(task, r)),
                m = task.queue.recv() => match m {
                    Some(m) => m,
                    None => return Ok(()),
                },
            },
        };
        let mut batch = MessageBatch::default();
        let mut bytes = 0usize;
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            let encoded = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(to = task.to, "cannot encode a raft message: {e}");
                    next = task.queue.try_recv().ok();
                    continue;
                }
            };
            // Room for the batch's own framing.
            if encoded.len() + 64 > task.config.max_message_size {
                tracing::warn!(
                    to = task.to,
                    size = encoded.len(),
                    "raft message too large: dropped"
                );
                next = task.queue.try_recv().ok();
                continue;
            }
            if !batch.messages.is_empty()
                && bytes + encoded.len() + 64
                    > task
                        .config
                        .max_message_size
                        .min(task.config.max_batch_bytes.max(1))
            {
                pending = Some(m);
                break;
            }
            bytes += encoded.len() + 8;
            batch.messages.push(Bytes::from(encoded));
            if bytes >= task.config.max_batch_bytes {
                break;
            }
            next = task.queue.try_recv().ok();
        }
        if batch.messages.is_empty() {
            continue;
        }
        tokio::select! {
            r = &mut rpc => return Err(stream_ended(task, r)),
            sent = batches.send(batch) => if sent.is_err() {
                return Err("stream closed".into());
            },
        }
    }
}

fn stream_ended(
    task: &PeerTask,
    r: Result<tonic::Response<crate::proto::Ack>, tonic::Status>,
) -> String {
    match r {
        Ok(_) => "the peer ended the stream".into(),
        Err(status) => {
            if let Some(applied) = crate::service::parse_not_a_member(&status) {
                task.not_a_member(applied);
            }
            format!("stream failed: {}: {}", status.code(), status.message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_parse_to_host_port_and_server_name() {
        let a = parse_url("https://127.0.0.1:2380").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 2380));
        assert!(matches!(a.server_name, ServerName::IpAddress(_)));
        let b = parse_url("replica-1.example:2380").unwrap();
        assert_eq!(b.host, "replica-1.example");
        assert!(matches!(b.server_name, ServerName::DnsName(_)));
        let c = parse_url("https://[::1]:7").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 7));
        assert_eq!(uri_host(&c.host), "[::1]");
        for bad in [
            "http://127.0.0.1:1",
            "https://127.0.0.1",
            "https://h:1/x",
            "::::",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
