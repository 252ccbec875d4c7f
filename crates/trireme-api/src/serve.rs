//! The HTTP(S) accept loop: tokio-rustls for TLS, hyper-util for HTTP/1.1 and HTTP/2,
//! with the limits a server exposed to clients needs: a TLS handshake timeout, a
//! header read timeout (slow clients are closed), and a cap on open connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
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
                None => serve_connection(tcp, app, &limits, addr).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, app, &limits, addr).await,
                        Ok(Err(e)) => tracing::warn!(%addr, "TLS handshake refused: {e}"),
                        Err(_) => tracing::warn!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<IO>(io: IO, app: Router, limits: &ServeLimits, addr: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let service = TowerToHyperService::new(app);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%addr, "connection ended: {e}");
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
