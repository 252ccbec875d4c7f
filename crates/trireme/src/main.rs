//! `trireme`: the one binary. `replica` runs a replica daemon, `certs init` issues the
//! cluster's certificates, `dev-cluster` runs a local cluster in one command,
//! `controller` runs the leader-elected controllers.
//!
//! Exit codes: 0 success; 2 bad usage, bad configuration, missing or invalid
//! certificate, or a data directory of another cluster; 3 (`replica`) the replica was
//! removed from the cluster; 1 any other failure.

/// jemalloc, not glibc's malloc: a quarter of a replica's CPU under load went to
/// glibc's slow paths (`_int_malloc`, `_int_free`, `malloc_consolidate`) for sled's
/// nodes, rustls's records and hyper's buffers. Interleaved runs: 20-30 % more
/// writes per second at 64 and 256 clients, about 30 µs off one client's write.
/// Its options (two arenas, dirty pages returned after 1 s) are set at build time in
/// `.cargo/config.toml`; they keep the peak RSS where glibc's was.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod certs;
mod chaos;
mod client;
mod config;
mod controller;
mod ctl;
mod dev_cluster;
mod members;
mod replica;

#[derive(Parser)]
#[command(
    name = "trireme",
    version,
    about = "A highly available control-plane store"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one replica daemon.
    Replica {
        /// The replica's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        overrides: config::Overrides,
    },
    /// Certificates for a cluster.
    Certs {
        #[command(subcommand)]
        command: CertsCmd,
    },
    /// Start a local cluster of replicas (certificates, configs, processes) and stay
    /// in the foreground; Ctrl-C stops it.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Run a real cluster under crashes, pauses and partitions with recorded client
    /// traffic, then check the history (linearizability, lost writes, watches,
    /// convergence). Exit 0 when clean, 1 on a violation.
    Chaos(chaos::ChaosArgs),
    /// Closed-loop load against the etcd v3 JSON gateway (Trireme's or etcd's): N
    /// clients, throughput and latency percentiles from an HDR histogram.
    Bench(bench::BenchArgs),
    /// A kubectl-style client: get, apply, delete, watch, and the replicas' status.
    Ctl(ctl::CtlArgs),
    /// The cluster's controllers (the garbage collector), active in one process at a
    /// time: the holder of a Lease; the others stand by.
    Controller(controller::ControllerArgs),
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Issue a cluster CA, peer and API certificates per replica, an admin client
    /// certificate and a kubeconfig.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// A replica as NAME=HOST (repeat for each replica).
        #[arg(long = "replica", required = true, value_parser = certs::parse_replica)]
        replicas: Vec<(String, String)>,
        /// Extra name or IP on every API certificate, e.g. a load balancer (repeatable).
        #[arg(long = "api-san")]
        api_sans: Vec<String>,
        /// Server URL written to the kubeconfig (default: the first --api-san, else the
        /// first replica's host, on port 6443).
        #[arg(long)]
        server: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue peer and API certificates for a replica added later, from the cluster CA
    /// (`ca.crt` and `ca.key`) that `certs init` wrote.
    Add {
        /// The directory `certs init` wrote; the new files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// A replica as NAME=HOST (repeatable).
        #[arg(long = "replica", required = true, value_parser = certs::parse_replica)]
        replicas: Vec<(String, String)>,
        /// Extra name or IP on the API certificate, e.g. a load balancer (repeatable).
        #[arg(long = "api-san")]
        api_sans: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Lists the files a `certs` command wrote, or its error on one line (exit code 2).
fn wrote(command: &str, result: anyhow::Result<Vec<PathBuf>>) -> ExitCode {
    match result {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trireme certs {command}: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ring is the one rustls provider in this binary (RAFT-NOTES gotcha 2).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Cmd::Replica { config, overrides } => replica::main(&config, &overrides),
        Cmd::Certs {
            command:
                CertsCmd::Init {
                    out,
                    replicas,
                    api_sans,
                    server,
                    force,
                },
        } => {
            let host = api_sans
                .first()
                .or_else(|| replicas.first().map(|(_, h)| h))
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into());
            let server = server.unwrap_or_else(|| format!("https://{host}:6443"));
            let plan = certs::CertPlan {
                out,
                replicas,
                api_sans,
                peer_sans: vec![],
                server,
                force,
            };
            wrote("init", certs::init(&plan))
        }
        Cmd::Certs {
            command:
                CertsCmd::Add {
                    dir,
                    replicas,
                    api_sans,
                    force,
                },
        } => {
            let plan = certs::AddPlan {
                dir,
                replicas,
                api_sans,
                force,
            };
            wrote("add", certs::add(&plan))
        }
        Cmd::Bench(args) => bench::main(args),
        Cmd::Ctl(args) => ctl::main(args),
        Cmd::Controller(args) => controller::main(args),
        Cmd::Chaos(args) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("trireme chaos: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(chaos::run(args)) {
                Ok(report) => {
                    println!("{}", report.line());
                    if report.summary.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "trireme chaos: violations found; see {}",
                            report.dir.display()
                        );
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("trireme chaos: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::DevCluster(args) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("trireme dev-cluster: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(dev_cluster::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trireme dev-cluster: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
