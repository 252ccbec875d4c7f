//! The peer port of a real replica refuses what it cannot authenticate as a peer, logs
//! the refusal with the remote address, and keeps serving (issue: replica daemon, §7).
//! Message-level checks (a peer certificate claiming another member's id, garbage and
//! oversized frames) are in `crates/trireme-transport/tests/`.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{Cluster, BIN};

/// A TLS client config trusting `ca` and presenting `cert`/`key`.
fn client_config(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in trireme_transport::pki::load_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let chain = trireme_transport::pki::load_certs(cert).unwrap();
    let key = trireme_transport::pki::load_key(key).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Speaks HTTP/2's preface over `stream` and reports whether the server kept the
/// connection open long enough to answer with its SETTINGS frame.
async fn server_answers<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> bool {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    if s.write_all(preface).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 9];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    )
}

async fn tls_attempt(addr: &str, cfg: Arc<rustls::ClientConfig>) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    match connector.connect(name, tcp).await {
        Ok(tls) => server_answers(tls).await,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_plain_tcp_other_cas_and_client_certificates() {
    let c = Cluster::start(3).await;
    let addr = format!("127.0.0.1:{}", c.members[0].peer_port);
    let pki = c.pki();

    // Sanity: a peer certificate of this cluster gets an HTTP/2 answer.
    let peer = client_config(
        &pki.join("ca.crt"),
        &pki.join("replica-2-peer.crt"),
        &pki.join("replica-2-peer.key"),
    );
    assert!(tls_attempt(&addr, peer).await, "a real peer is served");

    // Plain TCP.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    assert!(!server_answers(tcp).await, "plain TCP is refused");

    // A certificate from another CA (a second `certs init`).
    let other = c.dir.path().join("other-pki");
    let out = std::process::Command::new(BIN)
        .args(["certs", "init", "--out"])
        .arg(&other)
        .args(["--replica", "replica-2=127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let foreign = client_config(
        &pki.join("ca.crt"),
        &other.join("replica-2-peer.crt"),
        &other.join("replica-2-peer.key"),
    );
    assert!(
        !tls_attempt(&addr, foreign).await,
        "another CA's certificate is refused"
    );

    // The admin client certificate of this very cluster cannot speak the peer protocol.
    let admin = client_config(
        &pki.join("ca.crt"),
        &pki.join("admin.crt"),
        &pki.join("admin.key"),
    );
    assert!(
        !tls_attempt(&addr, admin).await,
        "the admin certificate is refused"
    );

    // Each refusal is logged with the remote address; the replica keeps serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = c.log(0);
        let refusals = log
            .lines()
            .filter(|l| l.contains("127.0.0.1:") && (l.contains("refus") || l.contains("reject")))
            .count();
        if refusals >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals with addresses in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let rev = c.put(leader, "still", "serving").await;
    assert_eq!(c.get(0, "still").await, Some(("serving".into(), rev)));
}
