//! `trireme controller`: the cluster's controllers (today the garbage collector,
//! `controller/gc.rs`), run by one elected process at a time.
//!
//! Run it on several machines: each is a candidate for a Lease
//! (`kube-system/trireme-controller` by default; `trireme_client::leader`); the holder
//! runs the controllers, the others stand by and take over when it stops renewing.
//! Like kube-controller-manager, a process that loses the Lease stops its controllers
//! and exits (code 1) so that its supervisor starts it afresh as a candidate. On
//! SIGTERM or Ctrl-C it stops the controllers, gives the Lease up (a standby takes
//! over at its next try) and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use trireme_client::leader::{ElectionConfig, Elector, Leadership, Lost};
use trireme_client::{Client, ClientConfig, Kubeconfig};

use crate::chaos::parse_duration;

mod gc;

#[derive(Args)]
pub struct ControllerArgs {
    /// The kubeconfig (default: $KUBECONFIG, else ./trireme-dev/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// More API endpoints (https://host:port, comma-separated), tried in order before
    /// the kubeconfig's server.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Elect one active process through a Lease; `false` runs the controllers at once
    /// (only safe when no other controller process runs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a standby waits, from when it last saw the Lease renewed, before it
    /// takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the active process keeps acting without renewing the Lease.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often the Lease is tried (standbys) or renewed (the active process).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// The namespace of the Lease the candidates share.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    /// The name of the Lease the candidates share.
    #[arg(long, default_value = "trireme-controller")]
    leader_elect_resource_name: String,
    /// This process's name in the Lease, unique among the candidates (default: the
    /// host name and a random suffix).
    #[arg(long)]
    identity: Option<String>,
}

pub fn main(args: ControllerArgs) -> ExitCode {
    crate::replica::init_tracing_with("info", crate::config::LogFormat::Text);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trireme controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("trireme controller: {line}");
            ExitCode::from(2)
        }
    }
}

/// The host name and a random suffix (as kube-controller-manager's host name and
/// UUID): a process id would repeat across containers, and two candidates with one
/// identity would both lead.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{:016x}", rand::random::<u64>())
}

/// Set-up errors (bad flags, unreadable kubeconfig) are `Err` (exit 2); the outcome
/// of a run is the exit code.
async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let path = crate::ctl::kubeconfig_path(args.kubeconfig);
    let kc = Kubeconfig::load(&path)?;
    let extra: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let config = ClientConfig::from_kubeconfig(&kc, &extra);
    // The controllers' lists may take long on a big cluster; the election's requests
    // must fit in the renew deadline.
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(60),
        ..config.clone()
    })?;
    let election_client = Client::new(ClientConfig {
        request_timeout: args
            .leader_elect_renew_deadline
            .min(Duration::from_secs(30))
            .max(Duration::from_secs(1)),
        ..config
    })?;
    let election = ElectionConfig {
        namespace: args.leader_elect_resource_namespace,
        name: args.leader_elect_resource_name,
        identity: args.identity.unwrap_or_else(default_identity),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    election.validate().map_err(anyhow::Error::msg)?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut stop = Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });

    if !args.leader_elect {
        tracing::warn!("leader election is off: the controllers run at once");
        let (tx, until) = tokio::sync::watch::channel(Some(far_future()));
        let mut controllers = tokio::spawn(controllers(client, Leadership::from_channel(until)));
        tokio::select! {
            _ = stop.as_mut() => {}
            done = &mut controllers => {
                let why = done.err().map_or_else(|| "returned".into(), |e| e.to_string());
                eprintln!("trireme controller: the controllers stopped ({why})");
                return Ok(ExitCode::FAILURE);
            }
        }
        drop(tx);
        controllers.abort();
        return Ok(ExitCode::SUCCESS);
    }

    // Discovery must list Leases before anything else makes sense: retried inside.
    let identity = election.identity.clone();
    let mut elector = loop {
        tokio::select! {
            made = Elector::new(election_client.clone(), election.clone()) => match made {
                Ok(e) => break e,
                Err(trireme_client::Error::Config(m)) => anyhow::bail!(m),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the API yet");
                    tokio::time::sleep(election.retry_period).await;
                }
            },
            _ = stop.as_mut() => return Ok(ExitCode::SUCCESS),
        }
    };
    tracing::info!(
        identity = %identity,
        lease = %format!("{}/{}", election.namespace, election.name),
        "attempting to acquire the leader lease"
    );
    let leadership = tokio::select! {
        l = elector.acquire(|e| tracing::warn!(error = %e, "leader election: try failed")) => l,
        _ = stop.as_mut() => return Ok(ExitCode::SUCCESS),
    };
    tracing::info!(identity = %identity, "successfully acquired the lease; starting controllers");
    let mut controllers = tokio::spawn(controllers(client.clone(), leadership.clone()));
    let ended = tokio::select! {
        lost = elector.hold(|e| tracing::warn!(error = %e, "leader election: renewal failed")) => Ended::Lost(lost),
        _ = stop.as_mut() => Ended::Stopped,
        done = &mut controllers => match done {
            // The controllers return when the leadership ends; the renewal loop may
            // only be about to see it.
            Ok(()) if !leadership.is_held() => Ended::Lost(Lost::RenewDeadline),
            Ok(()) => Ended::Controllers(None),
            Err(e) => Ended::Controllers(Some(e.to_string())),
        },
    };
    if !controllers.is_finished() {
        controllers.abort();
        let _ = controllers.await;
    }
    match ended {
        Ended::Lost(lost) => {
            let why = match lost {
                Lost::RenewDeadline => "no renewal succeeded within the renew deadline".into(),
                Lost::TakenBy(h) => format!("the lease is held by {h:?} now"),
            };
            tracing::error!("leader election lost: {why}; exiting");
            eprintln!("trireme controller: leader election lost: {why}");
            Ok(ExitCode::FAILURE)
        }
        Ended::Controllers(why) => {
            // A controller that ends while we lead is a bug: give the Lease up so a
            // standby takes over instead of this process renewing and doing nothing.
            let why = why.unwrap_or_else(|| "returned".into());
            tracing::error!(%why, "the controllers stopped while leading; exiting");
            let _ = elector.release().await;
            eprintln!("trireme controller: the controllers stopped ({why})");
            Ok(ExitCode::FAILURE)
        }
        Ended::Stopped => {
            match elector.release().await {
                Ok(true) => tracing::info!("lease released"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not release the lease"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Why a leading process stops.
enum Ended {
    Lost(Lost),
    Stopped,
    /// The controllers' task ended (its panic, if it panicked).
    Controllers(Option<String>),
}

fn far_future() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Every controller, until the leadership is lost.
async fn controllers(client: Client, leadership: Leadership) {
    gc::run(client, leadership).await;
}
