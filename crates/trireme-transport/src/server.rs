//! The peer server: our own accept loop (TCP, TLS handshake under a timeout, peer
//! certificate policy) hands verified streams to tonic, which serves the `Peer` service.
//!
//! Refusals happen here, before any gRPC byte is read, and are logged with the remote
//! address: plain TCP and certificates of another CA fail the handshake (rustls checks
//! the chain), and a certificate of our CA that is not a peer certificate (an admin or
//! API certificate) is refused right after it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use trireme_raft::Mailbox;

use crate::error::{PeerError, ServerError};
use crate::identity::{member_id, PeerIdentity};
use crate::proto::peer_server::PeerServer as GrpcPeerServer;
use crate::service::PeerService;
use crate::tls::{peer_name, PeerTls};

/// Where the server delivers: the local node's [`Mailbox`], plugged in once the node
/// runs (the server may start first) and replaceable when the node restarts. Until
/// then inbound messages are dropped. Cheap to clone; clones share the slot.
#[derive(Clone, Default)]
pub struct MailboxSlot(Arc<RwLock<Option<Mailbox>>>);

impl MailboxSlot {
    pub fn new() -> Self {
        MailboxSlot::default()
    }

    /// A slot that already holds `mailbox`.
    pub fn with(mailbox: Mailbox) -> Self {
        let slot = MailboxSlot::new();
        slot.set(mailbox);
        slot
    }

    pub fn set(&self, mailbox: Mailbox) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(mailbox);
    }

    /// Empties the slot (the node stopped): inbound traffic is dropped.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn get(&self) -> Option<Mailbox> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Tunables of the peer server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection that has not finished its TLS handshake by then is closed.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; connections beyond are closed at once.
    pub max_handshakes: usize,
    /// Largest gRPC message accepted (a batch, a snapshot chunk). Raft's
    /// `max_size_per_msg` must stay well below it.
    pub max_message_size: usize,
    /// HTTP/2 pings to notice dead peers.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_message_size: 16 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// The peer port of one member. Bind, then [`PeerServer::serve`] until the shutdown
/// future completes.
pub struct PeerServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: PeerTls,
    mailbox: MailboxSlot,
    config: ServerConfig,
}

impl PeerServer {
    /// Binds `addr` (port 0 picks a free port; see [`PeerServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        tls: PeerTls,
        mailbox: MailboxSlot,
    ) -> Result<PeerServer, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        PeerServer::from_listener(listener, tls, mailbox)
    }

    /// Serves on a listener bound elsewhere.
    pub fn from_listener(
        listener: TcpListener,
        tls: PeerTls,
        mailbox: MailboxSlot,
    ) -> Result<PeerServer, ServerError> {
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        Ok(PeerServer {
            listener,
            local_addr,
            tls,
            mailbox,
            config: ServerConfig::default(),
        })
    }

    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts and serves peers until `shutdown` completes; then stops accepting, ends
    /// every open stream, and returns once the connections are closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (conn_tx, conn_rx) = mpsc::channel::<PeerStream>(64);
        let accept = tokio::spawn(accept_loop(
            self.listener,
            TlsAcceptor::from(self.tls.server_config()),
            self.config.clone(),
            conn_tx,
            stop_rx.clone(),
        ));
        let service = GrpcPeerServer::new(PeerService::new(self.mailbox, stop_rx))
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size);
        let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, io::Error>);
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tracing::info!(addr = %self.local_addr, member = self.tls.name(), "peer server listening");
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.config.keepalive_interval))
            .http2_keepalive_timeout(Some(self.config.keepalive_timeout))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, signal)
            .await;
        accept.abort();
        tracing::info!(addr = %self.local_addr, "peer server stopped");
        result.map_err(ServerError::from)
    }
}

/// Completes once the server is stopping.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server is stopping too.
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    config: ServerConfig,
    conns: mpsc::Sender<PeerStream>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!("peer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            tracing::warn!(%remote, "peer connection refused: too many handshakes in progress");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let timeout = config.handshake_timeout;
        tokio::spawn(async move {
            let verified = handshake(acceptor, tcp, remote, timeout).await;
            drop(permit);
            if let Some(stream) = verified {
                let _ = conns.send(stream).await;
            }
        });
    }
}

/// TLS handshake, then the peer policy. Every refusal is logged with the address.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
) -> Option<PeerStream> {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_) => {
            tracing::warn!(%remote, "peer connection refused: TLS handshake timed out");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(%remote, "peer connection refused: TLS handshake failed: {e}");
            return None;
        }
        Ok(Ok(tls)) => tls,
    };
    let name = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(PeerError::NoCertificate)
        .and_then(peer_name);
    match name {
        Ok(name) => {
            let identity = PeerIdentity {
                id: member_id(&name),
                name,
                remote,
            };
            tracing::debug!(%remote, peer = %identity.name, "peer connected");
            Some(PeerStream {
                inner: tls,
                identity,
            })
        }
        Err(e) => {
            tracing::warn!(%remote, "peer connection refused: {e}");
            None
        }
    }
}

/// A verified peer connection; carries the peer's identity to the handlers.
pub(crate) struct PeerStream {
    inner: TlsStream<TcpStream>,
    identity: PeerIdentity,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
