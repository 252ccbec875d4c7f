//! The load tool's connections: each client owns one keep-alive HTTP/1.1 connection
//! (hyper's connection API, no pool). A closed-loop client has one request in flight,
//! so it needs nothing a pooled client does per request (URL parsing, pool checkout,
//! header defaults); measured with `reqwest`, the load tool spent about as much CPU per
//! request as the replica answering it, on the same cores as the clusters it measures.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trireme_transport::pki;

/// Where one client sends its requests: an endpoint's address and the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to dial.
    addr: String,
    /// The `Host` header.
    host_header: String,
    /// The TLS server name, for https.
    tls_name: Option<String>,
    path: String,
}

impl Target {
    /// `endpoint` is `http://HOST[:PORT]` or `https://HOST[:PORT]`, without a path.
    pub fn new(endpoint: &str, path: &str) -> anyhow::Result<Target> {
        let uri: hyper::Uri = endpoint
            .parse()
            .with_context(|| format!("endpoint {endpoint}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(anyhow!("endpoint {endpoint}: not http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("endpoint {endpoint}: no host"))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // An IPv6 literal keeps its brackets in the address and the header.
        let host_port = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            addr: host_port.clone(),
            host_header: host_port,
            tls_name: tls.then(|| host.trim_matches(['[', ']']).to_string()),
            path: path.to_string(),
        })
    }
}

/// TLS for https endpoints: the server must chain to `cacert`; `identity` is the
/// client certificate and key, both PEM files.
pub fn tls_connector(
    cacert: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki::load_certs(cacert).context("--cacert: no certificate to trust")? {
        roots
            .add(cert)
            .with_context(|| format!("--cacert: {}", cacert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(pki::load_certs(cert)?, pki::load_key(key)?)
            .context("client certificate and key")?,
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One client's connection, dialled on first use and again after any failure.
pub struct Conn {
    target: Target,
    tls: Option<TlsConnector>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Target, tls: Option<TlsConnector>, timeout: Duration) -> Conn {
        Conn {
            target,
            tls,
            timeout,
            sender: None,
        }
    }

    /// POSTs a JSON `body`; the status and the whole answer, or the failure's kind
    /// (`transport: timeout|connect|request|body`). The timeout covers dialling too.
    pub async fn post(&mut self, body: Vec<u8>) -> Result<(u16, Bytes), String> {
        let result = match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(r) => r,
            Err(_) => Err("timeout"),
        };
        result.map_err(|kind| {
            // The connection's state is unknown after a failure: start over.
            self.sender = None;
            format!("transport: {kind}")
        })
    }

    async fn exchange(&mut self, body: Vec<u8>) -> Result<(u16, Bytes), &'static str> {
        let usable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = Some(self.dial().await?);
        }
        let sender = self.sender.as_mut().ok_or("connect")?;
        let req = hyper::Request::post(self.target.path.as_str())
            .header(HOST, self.target.host_header.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| "request")?;
        let resp = sender.send_request(req).await.map_err(|_| "request")?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| "body")?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, &'static str> {
        let tcp = TcpStream::connect(&self.target.addr)
            .await
            .map_err(|_| "connect")?;
        let _ = tcp.set_nodelay(true);
        match (&self.tls, &self.target.tls_name) {
            (Some(tls), Some(name)) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| "connect")?;
                let stream = tls.connect(name, tcp).await.map_err(|_| "connect")?;
                handshake(stream).await
            }
            (None, Some(_)) => Err("connect"),
            _ => handshake(tcp).await,
        }
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| "connect")?;
    // Drives the connection; ends when the client drops its sender or the server
    // closes the connection.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_endpoints() {
        let t = Target::new("http://127.0.0.1:2379", "/v3/kv/put").unwrap();
        assert_eq!(t.addr, "127.0.0.1:2379");
        assert_eq!(t.host_header, "127.0.0.1:2379");
        assert_eq!(t.tls_name, None);
        assert_eq!(t.path, "/v3/kv/put");
        let t = Target::new("https://localhost", "/x").unwrap();
        assert_eq!(t.addr, "localhost:443");
        assert_eq!(t.tls_name.as_deref(), Some("localhost"));
        let t = Target::new("http://[::1]:8080", "/x").unwrap();
        assert_eq!(t.addr, "[::1]:8080");
        assert_eq!(t.tls_name, None);
        let t = Target::new("https://[::1]:8443", "/x").unwrap();
        assert_eq!(t.tls_name.as_deref(), Some("::1"));
        assert!(Target::new("ftp://a:1", "/x").is_err());
        assert!(Target::new("not a url", "/x").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        assert!(tls_connector(&missing, None).is_err());
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        let e = tls_connector(&empty, None).err().unwrap();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        // A port nothing listens on: bind, note it, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = Target::new(&format!("http://127.0.0.1:{port}"), "/x").unwrap();
        let mut c = Conn::new(target, None, Duration::from_secs(5));
        assert_eq!(
            c.post(b"{}".to_vec()).await.unwrap_err(),
            "transport: connect"
        );
    }
}
