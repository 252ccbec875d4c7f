//! `trireme ctl`: a small kubectl-style client on `trireme-client`: `get`, `apply -f`,
//! `delete`, `watch`, `status` (a table of the replicas behind the endpoints) and
//! `member` (the cluster's members: list, add, promote, remove; in `ctl/member.rs`).
//! Every error is one line on stderr; usage errors exit 2, others 1.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use trireme_client::{ApiResource, Client, ClientConfig, Kubeconfig, ListParams, WatchParams};

mod member;

#[derive(Args)]
pub struct CtlArgs {
    /// The kubeconfig (default: $KUBECONFIG, else ./trireme-dev/kubeconfig).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// More API endpoints (https://host:port, comma-separated), tried in order before
    /// the kubeconfig's server; a replica that is down or has no leader is skipped.
    #[arg(long, global = true, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Seconds one request may take.
    #[arg(long, global = true, default_value_t = 30)]
    request_timeout: u64,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Show one object or a list: a table (the server's columns), or json, yaml, name.
    Get {
        /// Resource type: name, short name or kind (cm, configmap, configmaps, ConfigMap).
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
        /// Label selector (app=x, tier!=db, env in (a,b), key, !key).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Create or update objects from manifests (YAML or JSON, several documents).
    Apply {
        /// A file, or - for standard input (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Delete one object.
    Delete { kind: String, name: String },
    /// Stream changes to a kind (or one object): one line per event.
    Watch {
        kind: String,
        name: Option<String>,
        /// Start after this resourceVersion (default: current objects first).
        #[arg(long)]
        resource_version: Option<String>,
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// One JSON event per line instead of text.
        #[arg(short = 'o', long, value_enum)]
        output: Option<WatchOutput>,
        /// Stop after this many seconds (exit 0).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// The replicas behind the endpoints: name, address, zone, role, term, applied
    /// index, health.
    Status,
    /// The cluster's members: list, add, promote, remove.
    Member {
        #[command(subcommand)]
        command: member::MemberCmd,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Json,
    Yaml,
    Wide,
    Name,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WatchOutput {
    Json,
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

pub fn main(args: CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trireme ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("trireme ctl: {line}");
            let usage = e.downcast_ref::<Usage>().is_some()
                || matches!(
                    e.downcast_ref::<trireme_client::Error>(),
                    Some(trireme_client::Error::UnknownResource(_))
                );
            if usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

pub(crate) fn kubeconfig_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Ok(env) = std::env::var("KUBECONFIG") {
        if let Some(first) = env.split(':').find(|p| !p.is_empty()) {
            return PathBuf::from(first);
        }
    }
    PathBuf::from("trireme-dev/kubeconfig")
}

async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let kc = Kubeconfig::load(&kubeconfig_path(args.kubeconfig))?;
    let extra: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let mut config = ClientConfig::from_kubeconfig(&kc, &extra);
    config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    let client = Client::new(config)?;
    let default_ns = args
        .namespace
        .clone()
        .or_else(|| kc.namespace.clone())
        .unwrap_or_else(|| "default".into());
    match args.command {
        CtlCmd::Get {
            kind,
            name,
            output,
            selector,
            all_namespaces,
        } => {
            if all_namespaces && name.is_some() {
                return Err(Usage(
                    "a resource cannot be retrieved by name across all namespaces".into(),
                )
                .into());
            }
            let res = client.resolve(&kind).await?;
            let ns = scope(&res, all_namespaces, &default_ns);
            get(
                &client,
                &res,
                ns.as_deref(),
                name.as_deref(),
                output,
                selector,
            )
            .await
        }
        CtlCmd::Apply { files } => apply(&client, &files, &default_ns).await,
        CtlCmd::Delete { kind, name } => {
            let res = client.resolve(&kind).await?;
            let ns = scope(&res, false, &default_ns);
            client.delete(&res, ns.as_deref(), &name).await?;
            out(&format!(
                "{} \"{name}\" deleted\n",
                res.kind.to_ascii_lowercase()
            ))
        }
        CtlCmd::Watch {
            kind,
            name,
            resource_version,
            selector,
            all_namespaces,
            output,
            timeout,
        } => {
            if all_namespaces && name.is_some() {
                return Err(Usage(
                    "a resource cannot be watched by name across all namespaces".into(),
                )
                .into());
            }
            let res = client.resolve(&kind).await?;
            let ns = scope(&res, all_namespaces, &default_ns);
            let params = WatchParams {
                name,
                label_selector: selector,
                resource_version,
                timeout_seconds: timeout,
            };
            let work = watch(&client, &res, ns.as_deref(), params, output);
            match timeout {
                Some(t) => match tokio::time::timeout(
                    Duration::from_secs(t) + Duration::from_secs(1),
                    work,
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                },
                None => work.await,
            }
        }
        CtlCmd::Status => status(&client).await,
        CtlCmd::Member { command } => member::run(&client, command).await,
    }
}

/// The namespace a command acts in: None for cluster-scoped kinds and for `-A`.
fn scope(res: &ApiResource, all: bool, default_ns: &str) -> Option<String> {
    (res.namespaced && !all).then(|| default_ns.to_string())
}

/// Writes to stdout; a closed pipe is an error, not a panic.
fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .context("writing to standard output")
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, three spaces apart, as kubectl prints them.
fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut s = String::new();
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut l = String::new();
        for (i, c) in line.iter().enumerate() {
            if i + 1 == line.len() {
                l.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                l.push_str(&format!("{c:<w$}   "));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    }
    s
}

fn to_yaml(v: &Value) -> anyhow::Result<String> {
    serde_yaml_ng::to_string(v).context("rendering YAML")
}

async fn get(
    client: &Client,
    res: &ApiResource,
    ns: Option<&str>,
    name: Option<&str>,
    output: Option<Output>,
    selector: Option<String>,
) -> anyhow::Result<()> {
    let params = ListParams {
        label_selector: selector,
        field_selector: None,
    };
    match output {
        None | Some(Output::Wide) => {
            let table = client.table(res, ns, name, &params).await?;
            if table.rows.is_empty() {
                match ns {
                    Some(n) => eprintln!("No resources found in {n} namespace."),
                    None => eprintln!("No resources found"),
                }
                return Ok(());
            }
            let wide = output == Some(Output::Wide);
            let shown: Vec<usize> = (0..table.columns.len())
                .filter(|i| wide || table.columns[*i].priority == 0)
                .collect();
            let with_ns = res.namespaced && ns.is_none();
            let mut header: Vec<String> = Vec::new();
            if with_ns {
                header.push("NAMESPACE".into());
            }
            header.extend(
                shown
                    .iter()
                    .map(|i| table.columns[*i].name.to_ascii_uppercase()),
            );
            let rows: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|r| {
                    let mut row = Vec::new();
                    if with_ns {
                        row.push(cell(&r.object["metadata"]["namespace"]));
                    }
                    row.extend(
                        shown
                            .iter()
                            .map(|i| r.cells.get(*i).map(cell).unwrap_or_default()),
                    );
                    row
                })
                .collect();
            out(&render_table(&header, &rows))
        }
        Some(Output::Json) | Some(Output::Yaml) => {
            let v = match name {
                Some(n) => client.get(res, ns, n).await?,
                None => client.list(res, ns, &params).await?,
            };
            if output == Some(Output::Json) {
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))
            } else {
                out(&to_yaml(&v)?)
            }
        }
        Some(Output::Name) => {
            let names: Vec<String> = match name {
                Some(n) => {
                    client.get(res, ns, n).await?;
                    vec![n.to_string()]
                }
                None => client.list(res, ns, &params).await?["items"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
                    .collect(),
            };
            let mut s = String::new();
            for n in names {
                s.push_str(&res.object_name(&n));
                s.push('\n');
            }
            out(&s)
        }
    }
}

async fn apply(client: &Client, files: &[String], default_ns: &str) -> anyhow::Result<()> {
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(f).map_err(|e| Usage(format!("{f}: {e}")))?
        };
        let docs = trireme_client::parse_manifests(&text).with_context(|| f.clone())?;
        if docs.is_empty() {
            return Err(Usage(format!("{f}: no objects to apply")).into());
        }
        for d in &docs {
            let applied = client.apply(d, default_ns).await?;
            out(&format!(
                "{} {}\n",
                applied.resource.object_name(&applied.name),
                applied.outcome
            ))?;
        }
    }
    Ok(())
}

async fn watch(
    client: &Client,
    res: &ApiResource,
    ns: Option<&str>,
    params: WatchParams,
    output: Option<WatchOutput>,
) -> anyhow::Result<()> {
    let mut w = client.watch(res, ns, params).await?;
    while let Some(ev) = w.next().await? {
        if output == Some(WatchOutput::Json) {
            let line = serde_json::json!({"type": ev.kind.as_str(), "object": ev.object});
            out(&format!("{line}\n"))?;
            continue;
        }
        if ev.kind == trireme_client::EventType::Bookmark {
            continue;
        }
        let meta = &ev.object["metadata"];
        let name = meta["name"].as_str().unwrap_or("");
        let mut line = format!("{:<9} ", ev.kind.as_str());
        if let Some(n) = meta["namespace"].as_str() {
            line.push_str(&format!("{n} "));
        }
        line.push_str(&res.object_name(name));
        if let Some(rv) = ev.resource_version() {
            line.push_str(&format!(" resourceVersion={rv}"));
        }
        line.push('\n');
        out(&line)?;
    }
    Ok(())
}

async fn status(client: &Client) -> anyhow::Result<()> {
    let header: Vec<String> = [
        "NAME", "ADDRESS", "ZONE", "ROLE", "TERM", "APPLIED", "HEALTH",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    let mut reached = 0;
    for ep in client.endpoints() {
        let address = ep
            .split_once("://")
            .map_or(ep.as_str(), |(_, rest)| rest)
            .to_string();
        match client.member_status(ep).await {
            Ok(s) => {
                reached += 1;
                if seen.contains(&s.member_id) {
                    continue; // the same replica through another address
                }
                seen.push(s.member_id);
                let role = if s.is_learner {
                    "learner"
                } else if s.leader == s.member_id {
                    "leader"
                } else {
                    "follower"
                };
                let health = match client.ready(ep).await {
                    Ok(true) => "ready",
                    Ok(false) => "not ready",
                    Err(_) => "unreachable",
                };
                rows.push(vec![
                    s.name.unwrap_or_else(|| format!("{:x}", s.member_id)),
                    address,
                    s.zone.unwrap_or_else(|| "-".into()),
                    role.into(),
                    s.term.to_string(),
                    s.applied_index.to_string(),
                    health.into(),
                ]);
            }
            Err(_) => rows.push(vec![
                "-".into(),
                address,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "unreachable".into(),
            ]),
        }
    }
    out(&render_table(&header, &rows))?;
    if reached == 0 {
        anyhow::bail!("no endpoint answered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_are_aligned() {
        let t = super::render_table(
            &["NAME".into(), "DATA".into(), "AGE".into()],
            &[vec!["a-long-name".into(), "1".into(), "5s".into()]],
        );
        assert_eq!(t, "NAME          DATA   AGE\na-long-name   1      5s\n");
    }
}
