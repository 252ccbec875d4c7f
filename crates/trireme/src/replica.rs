//! `trireme replica --config FILE`: one replica daemon. The peer port (gRPC over mutual
//! TLS) carries Raft traffic; the API port (HTTPS, optional plain HTTP) serves clients.
//!
//! Start-up checks everything before writing anything: the configuration, every
//! certificate and key file, and that the data directory belongs to this cluster and
//! this replica. Any failure is one line on stderr and exit code 2.
//!
//! SIGTERM or SIGINT: stop accepting API connections, hand leadership to the most
//! up-to-date voter if this replica leads, stop the Raft node (which syncs), exit 0.
//!
//! Membership: the peer transport follows the replicated member table and this
//! replica publishes its own name and URLs into it (`members`). A replica that learns
//! it was removed from the cluster shuts down the same way and exits with code 3 and
//! one line saying so; its data directory must be wiped before it is added again.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use trireme_raft::{Bootstrap, NodeConfig, RaftRuntime, Role};
use trireme_store::{KvStore, StoreConfig};
use trireme_transport::{member_id, MailboxSlot, PeerServer, PeerTls, PeerTransport};

use crate::config::{ConfigError, LogFormat, Overrides, RawConfig, ReplicaConfig};
use crate::members::{publish_self, sync_peers, OwnAttributes};

/// This replica is not a member of the cluster any more: exit code 3.
#[derive(Debug, thiserror::Error)]
#[error(
    "this replica ({name}, member id {id:x}) was removed from the cluster; to add it again, wipe its data dir {dir}, run `trireme ctl member add {name} --peer-url {peer_url} --learner`, then start it with `join = true`"
)]
pub struct Removed {
    name: String,
    id: u64,
    dir: String,
    peer_url: String,
}

/// Certificates and keys, loaded and checked.
struct Tls {
    peer: PeerTls,
    api: Arc<rustls::ServerConfig>,
}

impl Tls {
    fn load(cfg: &ReplicaConfig) -> Result<Tls, ConfigError> {
        let e = |x: trireme_transport::PkiError| ConfigError(x.to_string());
        let peer = PeerTls::from_files(&cfg.ca, &cfg.peer_cert, &cfg.peer_key)
            .map_err(|x| ConfigError(x.to_string()))?;
        if peer.name() != cfg.name {
            return Err(ConfigError(format!(
                "{}: the peer certificate is for {:?}, but this replica is {:?}",
                cfg.peer_cert.display(),
                peer.name(),
                cfg.name
            )));
        }
        let ca = trireme_transport::pki::load_certs(&cfg.ca).map_err(e)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|x| {
                ConfigError(format!(
                    "{}: not a usable CA certificate: {x}",
                    cfg.ca.display()
                ))
            })?;
        }
        let chain = trireme_transport::pki::load_certs(&cfg.api_cert).map_err(e)?;
        let key = trireme_transport::pki::load_key(&cfg.api_key).map_err(e)?;
        let api = trireme_api::server_tls_config(chain, key, Some(roots)).map_err(|x| {
            ConfigError(format!(
                "{} / {}: unusable API certificate or key: {x}",
                cfg.api_cert.display(),
                cfg.api_key.display()
            ))
        })?;
        Ok(Tls { peer, api })
    }
}

const IDENTITY_FILE: &str = "trireme.id";

fn identity_line(cfg: &ReplicaConfig) -> String {
    format!("cluster={} replica={}\n", cfg.cluster_token, cfg.name)
}

/// A data directory of another cluster or replica is refused (nothing written).
fn check_identity(cfg: &ReplicaConfig) -> Result<(), ConfigError> {
    let path = cfg.data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == identity_line(cfg) => Ok(()),
        Ok(found) => Err(ConfigError(format!(
            "data dir {} belongs to {}, not cluster={} replica={}",
            cfg.data_dir.display(),
            found.trim(),
            cfg.cluster_token,
            cfg.name
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cfg.data_dir.join("log").exists() || cfg.data_dir.join("state").exists() {
                return Err(ConfigError(format!(
                    "data dir {} holds data but no {IDENTITY_FILE}: refusing to guess whose it is",
                    cfg.data_dir.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    }
}

fn load(config: &Path, overrides: &Overrides) -> Result<(ReplicaConfig, Tls), ConfigError> {
    let mut raw = RawConfig::load(config)?;
    raw.apply(overrides);
    let cfg = raw.validate()?;
    let tls = Tls::load(&cfg)?;
    check_identity(&cfg)?;
    Ok((cfg, tls))
}

fn init_tracing(cfg: &ReplicaConfig) {
    init_tracing_with(&cfg.log_filter, cfg.log_format);
}

/// Logs to stderr: `RUST_LOG`, else `filter`, else `info`; colours on a terminal.
pub(crate) fn init_tracing_with(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main(config: &Path, overrides: &Overrides) -> ExitCode {
    let (cfg, tls) = match load(config, overrides) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("trireme replica: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trireme replica: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Removed>().is_some() => {
            tracing::error!("{e}");
            eprintln!("trireme replica: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!("replica failed: {e:#}");
            eprintln!("trireme replica: {e:#}");
            // Exit before the runtime's tasks and the stores they hold are dropped:
            // after a storage failure their destructors would do I/O on the failed
            // disk (sled flushes its log on drop and panics when that fsync fails).
            // Everything acknowledged is already durable; nothing is left to clean.
            std::process::exit(1)
        }
    }
}

async fn run(cfg: ReplicaConfig, tls: Tls) -> anyhow::Result<()> {
    let id = member_id(&cfg.name);
    let cluster_id = member_id(&format!("cluster/{}", cfg.cluster_token));
    // Bind every port before touching the data directory.
    let peer_listener = tokio::net::TcpListener::bind(cfg.peer_listen)
        .await
        .with_context(|| format!("bind the peer port {}", cfg.peer_listen))?;
    let api_listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("bind the API port {}", cfg.api_listen))?;
    let insecure_listener = match cfg.insecure_http {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("bind the plain HTTP port {a}"))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create {}", cfg.data_dir.display()))?;
    let identity = cfg.data_dir.join(IDENTITY_FILE);
    if !identity.exists() {
        trireme_raft::durable::write_file_atomic(&identity, identity_line(&cfg).as_bytes())
            .with_context(|| format!("write {}", identity.display()))?;
    }

    // The Raft thread drives this runtime; the peer streams and the peer server run on
    // it, so a Raft message goes between socket and Raft loop without a thread
    // hand-off (see `trireme_raft::RaftRuntime`).
    let raft_runtime = RaftRuntime::new().context("start the Raft thread's runtime")?;
    let raft_io = raft_runtime.handle();
    let transport = PeerTransport::new(raft_io.clone(), tls.peer.clone());
    let mut voters = Vec::new();
    for (name, url) in &cfg.initial_cluster {
        let peer = member_id(name);
        voters.push(peer);
        let url = cfg.dial.get(name).unwrap_or(url);
        if peer != id {
            transport
                .set_peer(peer, url)
                .with_context(|| format!("peer {name} at {url}"))?;
        }
    }
    let mut node = NodeConfig::new(
        id,
        &cfg.data_dir,
        if cfg.join {
            Bootstrap::Join
        } else {
            Bootstrap::Initial(voters)
        },
    );
    node.tick = cfg.tick;
    node.election_ticks = cfg.election_ticks;
    node.heartbeat_ticks = cfg.heartbeat_ticks;
    node.snapshot_threshold = cfg.snapshot_threshold;
    node.compaction_margin = cfg.compaction_margin;
    node.request_timeout = cfg.request_timeout;
    let mut store_config = StoreConfig::new(node);
    store_config.max_request_bytes = cfg.max_request_bytes;
    let store = KvStore::start_on(store_config, Arc::clone(&transport), raft_runtime)
        .context("start the store")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let peer_listener = {
        // Accepted connections belong to the runtime the listener is registered with.
        let _raft_io = raft_io.enter();
        peer_listener
            .into_std()
            .and_then(tokio::net::TcpListener::from_std)
            .context("move the peer port to the Raft thread's runtime")?
    };
    let peer_server = PeerServer::from_listener(
        peer_listener,
        tls.peer.clone(),
        MailboxSlot::with(store.node().mailbox()),
    )
    .context("start the peer server")?;
    // Ends when the server stops or, at the latest, when the node stops (its runtime
    // goes with it).
    let peer_task = raft_io.spawn(peer_server.serve(stopped(stop_rx.clone())));

    // The transport follows the member table (peers added and removed later, moved
    // URLs); this replica publishes its own attributes into it.
    tokio::spawn(sync_peers(
        Arc::clone(&store),
        Arc::clone(&transport),
        cfg.initial_cluster.clone(),
        cfg.dial.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(publish_self(
        Arc::clone(&store),
        OwnAttributes {
            name: cfg.name.clone(),
            peer_url: cfg.peer_advertise.clone(),
            api_url: cfg.api_advertise.clone(),
        },
        stop_rx.clone(),
    ));

    // The system namespaces exist from cluster start: every replica makes sure as soon
    // as a leader is known (create-if-absent, so concurrent attempts are harmless).
    tokio::spawn({
        let store = Arc::clone(&store);
        let mut stop = stop_rx.clone();
        let mut status = store.node().subscribe();
        async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    known = status.wait_for(|s| s.leader_id != 0) => {
                        if known.is_err() {
                            return; // the node is gone
                        }
                    }
                }
                match trireme_api::kube::ensure_system_namespaces(&store).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!("system namespaces not created yet: {}", e.message)
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    });

    // History compaction, as kube-apiserver does it against etcd: every replica takes
    // part, one compacts per interval.
    if let Some(interval) = cfg.compaction_interval {
        tokio::spawn(trireme_api::kube::run_compactor(
            Arc::clone(&store),
            interval,
            stop_rx.clone(),
        ));
    }

    let app = trireme_api::app(trireme_api::ApiState {
        store: Arc::clone(&store),
        cluster_id,
        member_id: id,
        data_dir: cfg.data_dir.as_path().into(),
        max_request_bytes: cfg.max_request_bytes,
        zone: cfg.zone.as_deref().map(Into::into),
    });
    let limits = trireme_api::ServeLimits {
        tls_handshake_timeout: cfg.tls_handshake_timeout,
        header_read_timeout: cfg.header_read_timeout,
        max_connections: cfg.max_connections,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.api));
    let mut api_tasks = vec![tokio::spawn(trireme_api::serve(
        api_listener,
        Some(acceptor),
        app.clone(),
        limits.clone(),
        stopped(stop_rx.clone()),
    ))];
    if let Some(l) = insecure_listener {
        api_tasks.push(tokio::spawn(trireme_api::serve(
            l,
            None,
            app,
            limits,
            stopped(stop_rx.clone()),
        )));
    }
    tracing::info!(
        name = %cfg.name,
        member_id = id,
        zone = cfg.zone.as_deref().unwrap_or("-"),
        peer = %cfg.peer_listen,
        peer_url = %cfg.peer_advertise,
        api = %cfg.api_listen,
        api_url = %cfg.api_advertise,
        "replica started"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut removed = None;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        end = node_end(store.node().subscribe()) => match end {
            NodeEnd::Stopped => {
                let why = store.status().failed.unwrap_or_else(|| "stopped".into());
                anyhow::bail!("the raft node stopped: {why}");
            }
            NodeEnd::Removed => {
            tracing::error!("this replica was removed from the cluster: shutting down");
            // The removal may have come through this replica's own API: let that
            // answer (and others in flight) go out before the API stops.
            tokio::time::sleep(Duration::from_millis(500)).await;
            removed = Some(Removed {
                name: cfg.name.clone(),
                id,
                dir: cfg.data_dir.display().to_string(),
                peer_url: cfg.peer_advertise.clone(),
            });
            }
        },
    }
    // 1. No new API requests.
    let _ = stop_tx.send(true);
    for t in api_tasks {
        let _ = t.await;
    }
    // 2. Hand leadership over while the peer port still works.
    hand_over_leadership(&store).await;
    // 3. Stop the node (it syncs the state machine), then the peer port.
    store.shutdown().await;
    let _ = peer_task.await;
    tracing::info!("stopped");
    match removed {
        Some(r) => Err(r.into()),
        None => Ok(()),
    }
}

/// How the node's life ended, from its status.
#[derive(Debug, PartialEq, Eq)]
enum NodeEnd {
    /// It stopped (on a failure, or its status is gone with it).
    Stopped,
    /// It learned that it is not a member any more, and did not fail.
    Removed,
}

/// Waits until the node stops or learns it was removed. Only a removal the status
/// says is one counts: the status sender goes away when the node stops, and taking
/// that for a removal told an operator to wipe the data dir of a replica that had
/// only failed (a full disk).
async fn node_end(mut status: watch::Receiver<trireme_raft::NodeStatus>) -> NodeEnd {
    // The `Ref` that `wait_for` returns holds the status lock: it is dropped within
    // this statement, or the Raft thread's next status update would wait on this task.
    let seen = status
        .wait_for(|s| s.stopped || s.removed)
        .await
        .map(|s| s.removed && s.failed.is_none());
    match seen {
        Ok(true) => NodeEnd::Removed,
        Ok(false) | Err(_) => NodeEnd::Stopped,
    }
}

/// If this replica leads, transfers leadership to the voter with the longest log and
/// waits (bounded) for it to take over.
async fn hand_over_leadership(store: &KvStore) {
    let st = store.status();
    if st.role != Role::Leader {
        return;
    }
    let target = st
        .progress
        .iter()
        .filter(|(id, _)| *id != st.id && st.voters.contains(id))
        .max_by_key(|(_, matched)| *matched)
        .map(|(id, _)| *id);
    let Some(target) = target else { return };
    tracing::info!(to = target, "transferring leadership before shutdown");
    store.node().transfer_leader(target);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if store.status().role != Role::Leader {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("leadership transfer did not complete in time");
}

#[cfg(test)]
mod node_end_tests {
    use super::*;
    use trireme_raft::NodeStatus;

    #[tokio::test]
    async fn a_node_that_failed_is_never_reported_removed() {
        // The node publishes `stopped` with its failure, then drops its sender; both
        // are done before the waiter looks, as when the Raft thread outruns it.
        for _ in 0..200 {
            let (tx, rx) = watch::channel(NodeStatus::default());
            tx.send_modify(|s| {
                s.failed = Some("raft log I/O: No space left on device".into());
                s.stopped = true;
            });
            drop(tx);
            assert_eq!(node_end(rx).await, NodeEnd::Stopped);
        }
        let (tx, rx) = watch::channel(NodeStatus::default());
        drop(tx);
        assert_eq!(node_end(rx).await, NodeEnd::Stopped, "status gone");
        let (tx, rx) = watch::channel(NodeStatus::default());
        tx.send_modify(|s| {
            s.removed = true;
            s.failed = Some("disk".into());
            s.stopped = true;
        });
        assert_eq!(node_end(rx).await, NodeEnd::Stopped, "failed after removal");
    }

    #[tokio::test]
    async fn a_removal_is_reported_as_one() {
        let (tx, rx) = watch::channel(NodeStatus::default());
        let waiter = tokio::spawn(node_end(rx));
        tx.send_modify(|s| s.removed = true);
        assert_eq!(waiter.await.expect("the waiter ends"), NodeEnd::Removed);
        drop(tx);
    }
}
