//! The HTTP(S) accept loop: tokio-rustls for TLS, hyper-util for HTTP/1.1 and HTTP/2,
//! with the limits a server exposed to clients needs: a TLS handshake timeout, a
//! header read timeout (slow clients are closed), and a cap on open connections.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`
/// resolves; then stops accepting. Connections already open finish on their own.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%addr, "connection limit reached; closing the new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(tcp, app, ClientIdentity::Insecure, &limits, addr).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let identity =
                                ClientIdentity::from_tls(stream.get_ref().1.peer_certificates());
                            serve_connection(stream, app, identity, &limits, addr).await
                        }
                        Ok(Err(e)) => tracing::warn!(%addr, "TLS handshake refused: {e}"),
                        Err(_) => tracing::warn!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Who is on the other end of a connection, handed to every request as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A TLS client certificate verified against the cluster CA: CN is the user, O the
    /// groups (as Kubernetes reads them).
    Certificate { user: String, groups: Vec<String> },
    /// A TLS client without a certificate.
    Anonymous,
    /// The plain-HTTP listener, enabled only explicitly for local benchmarks: trusted.
    Insecure,
}

impl ClientIdentity {
    fn from_tls(certs: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Self {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return ClientIdentity::Anonymous;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            return ClientIdentity::Anonymous;
        };
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(String::from);
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect();
        match user {
            Some(user) => ClientIdentity::Certificate { user, groups },
            None => ClientIdentity::Anonymous,
        }
    }

    /// Whether a request came through `serve` without a certificate of the cluster CA
    /// on the TLS listener. Requests that did not come through `serve` (tests calling
    /// the router) carry no identity and are not anonymous.
    pub(crate) fn is_anonymous(extensions: &axum::http::Extensions) -> bool {
        extensions
            .get::<ClientIdentity>()
            .is_some_and(|i| !i.is_authenticated())
    }

    /// True when the request may use the authenticated APIs.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, ClientIdentity::Anonymous)
    }
}

async fn serve_connection<IO>(
    io: IO,
    app: Router,
    identity: ClientIdentity,
    limits: &ServeLimits,
    addr: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Pings find HTTP/2 clients that vanished without closing (a watch or keep-alive
    // stream would otherwise hold its tasks and connection slot until TCP gives up).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    let service = TowerToHyperService::new(tower::Layer::layer(&axum::Extension(identity), app));
    let io = FirstBytesDeadline::new(io, limits.header_read_timeout);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%addr, "connection ended: {e}");
    }
}

const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The length of HTTP/2's connection preface: what hyper-util reads to tell HTTP/2
/// from HTTP/1.1.
const PREFACE_LEN: usize = 24;

/// Bounds the time until a connection's first bytes arrive. hyper-util's `auto`
/// builder reads the first bytes to tell HTTP/2 from HTTP/1.1 *before* hyper's header
/// read timeout starts, with no timeout of its own: a client that finished the TLS
/// handshake and then sent nothing (or a few bytes of the HTTP/2 preface) held its
/// connection slot forever. Until `PREFACE_LEN` bytes have been read, a read that is
/// still waiting when the deadline passes fails with `TimedOut`, which ends the
/// connection; after that this is a plain pass-through.
struct FirstBytesDeadline<IO> {
    io: IO,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    remaining: usize,
}

impl<IO> FirstBytesDeadline<IO> {
    fn new(io: IO, timeout: Duration) -> Self {
        FirstBytesDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            remaining: PREFACE_LEN,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len().saturating_sub(before);
                this.remaining = this.remaining.saturating_sub(n);
                if n == 0 || this.remaining == 0 {
                    this.deadline = None;
                }
            }
            Poll::Ready(Err(_)) => this.deadline = None,
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.deadline = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )));
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A rustls server config for the API: the replica's serving certificate, HTTP/2 and
/// HTTP/1.1 by ALPN, and client certificates verified against `client_ca` when a
/// client offers one (clients without one are let through; authorization decides).
pub fn server_tls_config(
    cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    client_ca: Option<rustls::RootCertStore>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert_chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
