//! What the peer port refuses, and that refusals are logged with the address.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prost::bytes::Bytes;
use protobuf::Message as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use trireme_raft::eraftpb::{Message, MessageType};
use trireme_raft::Transport;

use super::*;
use crate::proto::peer_client::PeerClient;
use crate::proto::snapshot_chunk::Chunk;
use crate::proto::{MessageBatch, SnapshotChunk, SnapshotHeader};

/// A single-member cluster "replica-1" (its own leader) behind a peer server.
struct Target {
    ca: Ca,
    handle: Arc<NodeHandle<u64>>,
    server: RunningServer,
    _transport: Arc<PeerTransport>,
    dir: tempfile::TempDir,
}

impl Target {
    async fn start() -> Target {
        init_logs();
        let ca = pki::generate_ca("target CA").unwrap();
        let tls = peer_tls(&ca, &ca, "replica-1");
        let id = member_id("replica-1");
        let transport = PeerTransport::new(tokio::runtime::Handle::current(), tls.clone());
        let dir = tempfile::tempdir().unwrap();
        let handle = NodeHandle::start(
            node_config(id, dir.path(), vec![id], 10_000),
            RecordingSm::default(),
            Arc::clone(&transport),
        )
        .unwrap();
        let server = RunningServer::start(tls, MailboxSlot::with(handle.mailbox())).await;
        let t = Target {
            ca,
            handle,
            server,
            _transport: transport,
            dir,
        };
        let led = wait_for(Duration::from_secs(10), || {
            (t.handle.status().role == trireme_raft::Role::Leader).then_some(())
        })
        .await;
        assert!(led.is_some(), "the single member leads");
        t
    }

    fn term(&self) -> u64 {
        self.handle.status().term
    }

    async fn stop(self) {
        self.handle.shutdown().await;
        self.server.stop().await;
    }
}

/// A heartbeat that, if stepped, moves the target to term 100.
fn heartbeat(from: &str, to: u64) -> Bytes {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = member_id(from);
    m.to = to;
    m.term = 100;
    Bytes::from(m.write_to_bytes().unwrap())
}

/// A gRPC channel over TLS with an arbitrary client configuration. Returns the
/// channel and the local address of its connection.
async fn raw_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(Channel, SocketAddr), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let local = tcp.local_addr().unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let slot = Arc::new(Mutex::new(Some(tls)));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let tls = slot.lock().unwrap().take();
            async move {
                tls.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .map_err(|e| e.to_string())?;
    Ok((channel, local))
}

/// Sends one batch on the Stream RPC and returns the RPC's outcome.
async fn send_batch(channel: Channel, messages: Vec<Bytes>) -> Result<(), tonic::Status> {
    let mut client = PeerClient::new(channel);
    let batch = MessageBatch { messages };
    let rpc = client.stream(tokio_stream::iter(vec![batch]));
    tokio::time::timeout(Duration::from_secs(10), rpc)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("test timeout"))?
        .map(|_| ())
}

fn client_config(trust: &Ca, cert: &pki::CertifiedKey) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::parse_certs(trust.cert_pem().as_bytes(), std::path::Path::new("ca")).unwrap() {
        roots.add(c).unwrap();
    }
    let chain = pki::parse_certs(cert.cert_pem.as_bytes(), std::path::Path::new("c")).unwrap();
    let key = pki::parse_key(cert.key_pem.as_bytes(), std::path::Path::new("k")).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_is_closed_at_the_handshake_and_logged_with_its_address() {
    let t = Target::start().await;
    let term = t.term();
    let mut tcp = TcpStream::connect(t.server.addr).await.unwrap();
    let local = tcp.local_addr().unwrap().to_string();
    // An HTTP/2 preface and a heartbeat in the clear.
    let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let _ = tcp.write_all(&heartbeat("replica-2", t.handle.id())).await;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a TLS alert
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes the connection");
    assert!(
        logged(&["peer connection refused", &local], Duration::from_secs(5)).await,
        "the refusal is logged with the address {local}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.term(), term, "nothing reached the node");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_at_the_first_rpc() {
    let t = Target::start().await;
    let term = t.term();
    let other = pki::generate_ca("another CA").unwrap();
    let cert = pki::issue_peer(&other, "replica-2", &["127.0.0.1".into()]).unwrap();
    // Trusts the target's CA, so only the server can object.
    let config = client_config(&t.ca, &cert);
    // Under TLS 1.3 the client may believe it connected; the first RPC must fail.
    let result = match raw_channel(t.server.addr, config).await {
        Ok((channel, local)) => {
            let r = send_batch(channel, vec![heartbeat("replica-2", t.handle.id())]).await;
            assert!(
                logged(
                    &["peer connection refused", &local.to_string()],
                    Duration::from_secs(5)
                )
                .await,
                "the refusal is logged with the address {local}"
            );
            r.map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    assert!(result.is_err(), "{result:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.term(), term, "nothing reached the node");

    // And the transport itself refuses a server of another CA.
    let stranger = peer_tls(&other, &other, "replica-1");
    let url = t.server.url();
    let transport = PeerTransport::new(tokio::runtime::Handle::current(), stranger);
    transport.set_peer(t.handle.id(), &url).unwrap();
    transport.send(
        vec![{
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.from = member_id("replica-1");
            m.to = t.handle.id();
            m.term = 100;
            m
        }],
        &t.handle.mailbox(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.term(), term);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_certificate_is_refused_after_the_handshake() {
    let t = Target::start().await;
    let term = t.term();
    let admin = pki::issue_client(&t.ca, "admin", &["system:masters".into()]).unwrap();
    let api = pki::issue_api_server(&t.ca, "replica-2", &["127.0.0.1".into()]).unwrap();
    for (cert, why) in [(&admin, "serverAuth"), (&api, "clientAuth")] {
        let result = match raw_channel(t.server.addr, client_config(&t.ca, cert)).await {
            Ok((channel, local)) => {
                let r = send_batch(channel, vec![heartbeat("replica-2", t.handle.id())]).await;
                if why == "serverAuth" {
                    // Chains to our CA with clientAuth: refused by the peer policy.
                    assert!(
                        logged(
                            &["peer connection refused", &local.to_string(), why],
                            Duration::from_secs(5)
                        )
                        .await,
                        "the refusal names the address {local} and the missing usage"
                    );
                }
                r.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "{why}: {result:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.term(), term, "nothing reached the node");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_speak_for_another_member() {
    let t = Target::start().await;
    let term = t.term();
    let to = t.handle.id();
    let replica2 = peer_tls(&t.ca, &t.ca, "replica-2");
    let (channel, _) = raw_channel(t.server.addr, replica2.client_config())
        .await
        .unwrap();

    // replica-2 is no member of this one-member cluster: the server answers every
    // batch it takes with "not a member" (after delivering what passed its checks).
    let not_a_member = |r: Result<(), tonic::Status>| match r {
        Err(status) => assert!(
            crate::service::parse_not_a_member(&status).is_some(),
            "{status:?}"
        ),
        Ok(()) => panic!("a non-member's batch is answered with not-a-member"),
    };
    // replica-2's certificate claiming to be replica-3: dropped.
    not_a_member(send_batch(channel.clone(), vec![heartbeat("replica-3", to)]).await);
    assert!(
        logged(
            &["from is not the sender's member id", "replica-2"],
            Duration::from_secs(5)
        )
        .await
    );
    // Addressed to another member: dropped.
    not_a_member(
        send_batch(
            channel.clone(),
            vec![heartbeat("replica-2", member_id("replica-9"))],
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.term(),
        term,
        "the spoofed heartbeat never reached the node"
    );

    // An undecodable message ends that stream with an error; nothing is stepped.
    let r = send_batch(
        channel.clone(),
        vec![Bytes::from_static(&[0xff, 0xff, 0xff])],
    )
    .await;
    assert!(r.is_err());
    // An oversized batch (over 16 MiB) is refused, without harm to the server.
    let big = Bytes::from(vec![0u8; 17 * 1024 * 1024]);
    assert!(send_batch(channel.clone(), vec![big]).await.is_err());

    // The same connection speaking for itself gets through (term 100).
    not_a_member(send_batch(channel, vec![heartbeat("replica-2", to)]).await);
    let stepped = wait_for(Duration::from_secs(5), || (t.term() >= 100).then_some(())).await;
    assert!(stepped.is_some(), "the genuine heartbeat reached the node");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_snapshot_is_refused_and_its_file_deleted() {
    let t = Target::start().await;
    let to = t.handle.id();
    let replica2 = peer_tls(&t.ca, &t.ca, "replica-2");
    let (channel, _) = raw_channel(t.server.addr, replica2.client_config())
        .await
        .unwrap();
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = member_id("replica-2");
    m.to = to;
    m.term = 100;
    m.mut_snapshot().mut_metadata().index = 1000;
    m.mut_snapshot().mut_metadata().term = 100;
    let data = vec![7u8; 3 * 1024 * 1024 + 5];
    let crc = crc32fast::hash(&data);
    let header = |crc32: u32, size: u64| SnapshotChunk {
        chunk: Some(Chunk::Header(SnapshotHeader {
            message: Bytes::from(m.write_to_bytes().unwrap()),
            size,
            crc32,
        })),
    };
    let chunks = |n: usize| {
        data.chunks(1024 * 1024)
            .take(n)
            .map(|c| SnapshotChunk {
                chunk: Some(Chunk::Data(Bytes::copy_from_slice(c))),
            })
            .collect::<Vec<_>>()
    };
    let size = data.len() as u64;
    for (name, mut stream) in [
        ("bad crc", vec![header(crc ^ 1, size)]),
        ("truncated", vec![header(crc, size)]),
        ("no header", vec![]),
    ] {
        match name {
            "bad crc" => stream.extend(chunks(usize::MAX)),
            "truncated" => stream.extend(chunks(2)),
            _ => stream.extend(chunks(1)),
        }
        let mut client = PeerClient::new(channel.clone());
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client.snapshot(tokio_stream::iter(stream)),
        )
        .await
        .unwrap();
        assert!(r.is_err(), "{name}: {r:?}");
    }
    let left: Vec<_> = std::fs::read_dir(t.dir.path().join("snap"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("recv-"))
        .collect();
    assert!(left.is_empty(), "partial files deleted: {left:?}");
    assert!(t.term() < 100, "no refused snapshot reached the node");
    t.stop().await;
}
