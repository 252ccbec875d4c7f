//! The garbage collector, as kube-controller-manager's: objects whose owners are gone
//! are deleted, and deletions that asked for it orphan or delete dependents first.
//!
//! - **The graph.** One informer per kind that discovery lists (CustomResourceDefinition
//!   kinds included; discovery is read again every [`DISCOVERY_EVERY`]): a list, then a
//!   watch from the list's resourceVersion, again from a fresh list when the watch
//!   fails. Each object is a node keyed by uid, with its `ownerReferences`.
//! - **The plan** ([`plan`], pure): a dependent none of whose owners exist is deleted
//!   (in the background, or in the foreground when an owner waits in foreground
//!   deletion); references to owners that are gone are dropped while another owner
//!   stays; references to an owner deleted with `propagationPolicy: Orphan` are
//!   dropped; an owner's `orphan` finalizer is removed once no dependent refers to it,
//!   its `foregroundDeletion` finalizer once no dependent with `blockOwnerDeletion`
//!   refers to it. The API server then deletes the owner.
//! - **Acting.** An owner the graph does not hold is looked up before anything is
//!   done on its account (the graph may lag: an owner created a moment ago); only a
//!   404, or an object of that name with another uid, counts as gone. Deletes carry the
//!   dependent's uid as a precondition; updates carry its resourceVersion. A refused
//!   write is planned again on the next pass. Nothing is written unless this process
//!   holds the leadership at that moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trireme_client::leader::Leadership;
use trireme_client::{ApiResource, Client, Discovery, WatchParams};

/// The finalizers of `propagationPolicy: Orphan` and `Foreground`.
pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// How often discovery is read again for new (or removed) kinds.
const DISCOVERY_EVERY: Duration = Duration::from_secs(10);
/// The first pause before an object's refused action is tried again; it doubles up
/// to [`MAX_BACKOFF`].
const RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long the collector waits for every kind's first list before it acts on a
/// partial graph (looking up each owner it does not hold).
const PARTIAL_AFTER: Duration = Duration::from_secs(30);
/// Events that arrive together are handled in one pass.
const SETTLE: Duration = Duration::from_millis(50);

/// One owner reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// What the collector knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Arc<ApiResource>,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    /// The version the graph saw: a delete is made only of that version.
    pub resource_version: String,
    pub owners: Vec<OwnerRef>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    /// None for an object without name or uid (nothing can be done with it).
    pub fn from_object(kind: &Arc<ApiResource>, obj: &Value) -> Option<Node> {
        let meta = obj.get("metadata")?;
        let s = |f: &str| meta.get(f).and_then(Value::as_str);
        let owners = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| {
                        let f = |k: &str| r.get(k).and_then(Value::as_str).map(String::from);
                        Some(OwnerRef {
                            api_version: f("apiVersion")?,
                            kind: f("kind")?,
                            name: f("name")?,
                            uid: f("uid")?,
                            block_owner_deletion: r
                                .get("blockOwnerDeletion")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Node {
            kind: kind.clone(),
            namespace: s("namespace").map(String::from),
            name: s("name")?.to_string(),
            uid: s("uid").filter(|u| !u.is_empty())?.to_string(),
            resource_version: s("resourceVersion").unwrap_or("").to_string(),
            owners,
            deleting: s("deletionTimestamp").is_some(),
            finalizers: meta
                .get("finalizers")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Whether a change to this object can give the collector work.
    fn matters(&self) -> bool {
        !self.owners.is_empty() || self.deleting
    }

    /// Whether this object is the one `r` names from `dependent`: same kind (any
    /// version of its group), name and, for a namespaced owner, the dependent's
    /// namespace. Kubernetes treats a reference to anything else as dangling.
    fn is_named_by(&self, r: &OwnerRef, dependent: &Node) -> bool {
        self.kind.kind == r.kind
            && self.kind.group == group_of(&r.api_version)
            && self.name == r.name
            && (self.namespace.is_none() || self.namespace == dependent.namespace)
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.kind, self.name),
            None => format!("{} {}", self.kind.kind, self.name),
        }
    }
}

/// Every object of the watched kinds, by uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

/// The group of an `apiVersion` ("" for the core group's `v1`).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Whether two resources are one kind (compared without building their keys).
fn same_kind(a: &ApiResource, b: &ApiResource) -> bool {
    a.plural == b.plural && a.group == b.group && a.version == b.version
}

fn kind_key(kind: &ApiResource) -> String {
    format!("{}/{}", kind.api_version(), kind.plural)
}

impl Graph {
    pub fn upsert(&mut self, node: Node) {
        self.nodes.insert(node.uid.clone(), node);
    }

    pub fn remove(&mut self, uid: &str) {
        self.nodes.remove(uid);
    }

    /// The kind's nodes become exactly `nodes` (after a list).
    pub fn replace_kind(&mut self, kind: &ApiResource, nodes: Vec<Node>) {
        self.drop_kind(kind);
        for n in nodes {
            self.upsert(n);
        }
    }

    pub fn drop_kind(&mut self, kind: &ApiResource) {
        self.nodes.retain(|_, n| !same_kind(&n.kind, kind));
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// One write the collector wants, with the owners to confirm gone first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// None of the dependent's owners remains: delete it (in the foreground when an
    /// owner waits for its dependents).
    Delete {
        node: Node,
        foreground: bool,
        confirm_gone: Vec<OwnerRef>,
    },
    /// Drop these owner references (owners gone while another stays, or owners that
    /// orphan their dependents).
    DropRefs {
        node: Node,
        uids: Vec<String>,
        confirm_gone: Vec<OwnerRef>,
    },
    /// The owner's dependents are dealt with: remove the finalizer.
    RemoveFinalizer { node: Node, finalizer: &'static str },
}

/// How an owner reference stands in the graph.
enum OwnerState {
    /// Not in the graph: gone, unless a lookup finds it (the graph may lag).
    Absent,
    Orphaning,
    WaitingForDependents,
    Present,
}

fn owner_state(graph: &Graph, dependent: &Node, r: &OwnerRef) -> OwnerState {
    match graph.nodes.get(&r.uid) {
        Some(o) if !o.is_named_by(r, dependent) => OwnerState::Absent,
        None => OwnerState::Absent,
        Some(o) if o.deleting && o.has_finalizer(ORPHAN) => OwnerState::Orphaning,
        Some(o) if o.deleting && o.has_finalizer(FOREGROUND) => OwnerState::WaitingForDependents,
        Some(_) => OwnerState::Present,
    }
}

/// The writes that bring the graph to what its owner references ask for. Sorted, so
/// that a pass is repeatable. `complete`: every kind has been listed; finalizers are
/// only removed then (a dependent of an unlisted kind could still refer to the owner).
pub fn plan(graph: &Graph, complete: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    // owner uid -> (any dependent, any dependent that blocks the owner's deletion)
    let mut referred: HashMap<&str, (bool, bool)> = HashMap::new();
    for node in graph.nodes.values() {
        if node.owners.is_empty() {
            continue;
        }
        for r in &node.owners {
            let e = referred.entry(r.uid.as_str()).or_default();
            e.0 = true;
            e.1 |= r.block_owner_deletion;
        }
        let (mut absent, mut orphaning, mut waiting, mut present) = (vec![], vec![], vec![], 0);
        for r in &node.owners {
            match owner_state(graph, node, r) {
                OwnerState::Absent => absent.push(r.clone()),
                OwnerState::Orphaning => orphaning.push(r.uid.clone()),
                OwnerState::WaitingForDependents => waiting.push(r.uid.clone()),
                OwnerState::Present => present += 1,
            }
        }
        if !orphaning.is_empty() {
            actions.push(Action::DropRefs {
                node: node.clone(),
                uids: orphaning,
                confirm_gone: vec![],
            });
        } else if present == 0 && !node.deleting {
            actions.push(Action::Delete {
                node: node.clone(),
                foreground: !waiting.is_empty(),
                confirm_gone: absent,
            });
        } else if present > 0 && !(absent.is_empty() && waiting.is_empty()) {
            // Another owner stays: the dependent lives on without the references
            // to owners that are gone or wait for their dependents.
            let mut uids: Vec<String> = absent.iter().map(|r| r.uid.clone()).collect();
            uids.extend(waiting);
            actions.push(Action::DropRefs {
                node: node.clone(),
                uids,
                confirm_gone: absent,
            });
        }
    }
    if complete {
        finalizer_actions(graph, &referred, &mut actions);
    }
    // Dependents first, then owners; by uid within each.
    actions.sort_by(|a, b| a.order().cmp(&b.order()));
    actions
}

/// The owners whose dependents are handled: their `orphan` or `foregroundDeletion`
/// finalizer goes. `referred`: per owner uid, whether any dependent refers to it and
/// whether one that blocks its deletion does.
fn finalizer_actions(
    graph: &Graph,
    referred: &HashMap<&str, (bool, bool)>,
    actions: &mut Vec<Action>,
) {
    for node in graph.nodes.values() {
        if !node.deleting {
            continue;
        }
        let (any, blocking) = referred.get(node.uid.as_str()).copied().unwrap_or_default();
        if node.has_finalizer(ORPHAN) && !any {
            actions.push(Action::RemoveFinalizer {
                node: node.clone(),
                finalizer: ORPHAN,
            });
        }
        if node.has_finalizer(FOREGROUND) && !blocking && !node.has_finalizer(ORPHAN) {
            actions.push(Action::RemoveFinalizer {
                node: node.clone(),
                finalizer: FOREGROUND,
            });
        }
    }
}

impl Action {
    /// Where the action goes in a pass: dependents' actions first, then owners'
    /// finalizers; by uid within each.
    fn order(&self) -> (bool, &str) {
        (
            matches!(self, Action::RemoveFinalizer { .. }),
            self.node().uid.as_str(),
        )
    }

    fn node(&self) -> &Node {
        match self {
            Action::Delete { node, .. }
            | Action::DropRefs { node, .. }
            | Action::RemoveFinalizer { node, .. } => node,
        }
    }
}

/// What became of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Not now (an owner still there, a refused precondition, not leading): planned
    /// again after a per-object backoff.
    Retry,
    /// Cannot be done (an owner reference whose kind is not served, or a namespaced
    /// owner of a cluster-scoped object): left alone, as Kubernetes leaves it.
    Skip,
}

/// Per-object backoff of actions that were not done.
#[derive(Default)]
struct Backoff {
    until: HashMap<String, (tokio::time::Instant, Duration)>,
}

impl Backoff {
    fn ready(&self, uid: &str, now: tokio::time::Instant) -> bool {
        self.until.get(uid).is_none_or(|(t, _)| *t <= now)
    }

    fn failed(&mut self, uid: &str, now: tokio::time::Instant) {
        let delay = self
            .until
            .get(uid)
            .map_or(RETRY_AFTER, |(_, d)| (*d * 2).min(MAX_BACKOFF));
        self.until.insert(uid.to_string(), (now + delay, delay));
    }

    fn done(&mut self, uid: &str) {
        self.until.remove(uid);
    }

    /// Cannot be done: not tried again before the longest pause.
    fn skipped(&mut self, uid: &str, now: tokio::time::Instant) {
        self.until
            .insert(uid.to_string(), (now + MAX_BACKOFF, MAX_BACKOFF));
    }

    /// When the next object's backoff ends, if one ends later than `now`.
    fn next(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.until
            .values()
            .map(|(t, _)| *t)
            .filter(|t| *t > now)
            .min()
    }

    /// Forgets objects the plan no longer has an action for (their situation changed:
    /// a new action starts without a pause).
    fn retain_planned(&mut self, actions: &[Action]) {
        let planned: std::collections::HashSet<&str> =
            actions.iter().map(|a| a.node().uid.as_str()).collect();
        self.until.retain(|uid, _| planned.contains(uid.as_str()));
    }
}

/// The shared state of the informers and the collector's loop.
struct Shared {
    graph: Mutex<Graph>,
    changed: Notify,
}

impl Shared {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        // A poisoned lock only means an informer panicked mid-update; the graph is
        // rebuilt by its next list.
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The informer tasks by kind, with whether each has listed once. Dropped (the
/// collector stopped, or its task was aborted), it stops them.
#[derive(Default)]
struct Informers(HashMap<String, Informer>);

/// One kind's informer task, whether it has listed once, and its kind.
struct Informer {
    task: JoinHandle<()>,
    synced: tokio::sync::watch::Receiver<bool>,
    kind: Arc<ApiResource>,
}

impl Drop for Informers {
    fn drop(&mut self) {
        for i in self.0.values() {
            i.task.abort();
        }
    }
}

/// Runs the collector until leadership is lost. Returns only then.
pub async fn run(client: Client, leadership: Leadership) {
    let shared = Arc::new(Shared {
        graph: Mutex::new(Graph::default()),
        changed: Notify::new(),
    });
    let mut informers = Informers::default();
    let mut discovery = Discovery::default();
    let mut next_discovery = tokio::time::Instant::now();
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    let mut was_complete = false;
    tracing::info!("garbage collector started");
    loop {
        if tokio::time::Instant::now() >= next_discovery {
            match client.fetch_discovery().await {
                Ok(d) => {
                    discovery = d;
                    sync_informers(&client, &shared, &discovery, &mut informers).await;
                }
                Err(e) => tracing::warn!(error = %e, "discovery failed; trying again"),
            }
            next_discovery = tokio::time::Instant::now() + DISCOVERY_EVERY;
        }
        let complete = !informers.0.is_empty() && informers.0.values().all(|i| *i.synced.borrow());
        if complete && !was_complete {
            tracing::info!(
                kinds = informers.0.len(),
                objects = shared.graph().len(),
                "garbage collector: every kind listed"
            );
        }
        was_complete |= complete;
        // Before every kind is listed, owners look absent; wait a while for the lists
        // rather than look each one up (a kind that cannot be listed must not stop
        // the collector for good).
        if (complete || started.elapsed() > PARTIAL_AFTER) && leadership.is_held() {
            let actions = plan(&shared.graph(), complete);
            backoff.retain_planned(&actions);
            for action in actions {
                let uid = action.node().uid.clone();
                let now = tokio::time::Instant::now();
                if !backoff.ready(&uid, now) {
                    continue;
                }
                if !leadership.is_held() {
                    break;
                }
                match act(&client, &discovery, &leadership, &action).await {
                    Ok(Outcome::Done) => backoff.done(&uid),
                    Ok(Outcome::Skip) => backoff.skipped(&uid, now),
                    Ok(Outcome::Retry) => backoff.failed(&uid, now),
                    Err(e) => {
                        tracing::warn!(error = %e, object = %action.node().describe(), "garbage collector write failed");
                        backoff.failed(&uid, now);
                    }
                }
            }
        }
        // A full pass follows every discovery read, so at least every 10 s.
        let now = tokio::time::Instant::now();
        let mut wake = next_discovery;
        if !complete {
            wake = wake.min(now + RETRY_AFTER);
        }
        if let Some(t) = backoff.next(now) {
            wake = wake.min(t);
        }
        tokio::select! {
            _ = leadership.lost() => break,
            _ = shared.changed.notified() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    drop(informers);
    tracing::info!("garbage collector stopped");
}

/// Starts an informer per new kind, stops those of kinds discovery no longer lists.
async fn sync_informers(
    client: &Client,
    shared: &Arc<Shared>,
    discovery: &Discovery,
    informers: &mut Informers,
) {
    let kinds: HashMap<String, &ApiResource> = discovery
        .resources
        .iter()
        .map(|r| (kind_key(r), r))
        .collect();
    let gone: Vec<String> = informers
        .0
        .keys()
        .filter(|k| !kinds.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(i) = informers.0.remove(&key) {
            i.task.abort();
            // Only once it has stopped can no late event put its nodes back.
            let _ = i.task.await;
            shared.graph().drop_kind(&i.kind);
        }
        tracing::info!(kind = %key, "no longer served; its informer stopped");
    }
    for (key, kind) in kinds {
        if informers.0.contains_key(&key) {
            continue;
        }
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let kind = Arc::new(kind.clone());
        let task = tokio::spawn(inform(
            client.clone(),
            shared.clone(),
            kind.clone(),
            synced_tx,
        ));
        informers.0.insert(key, Informer { task, synced, kind });
    }
}

/// List, then watch, one kind into the graph; list again when the watch fails or
/// ends (each watch asks the server to end it after 5 to 10 minutes, so a connection
/// that died silently cannot freeze the kind's view).
async fn inform(
    client: Client,
    shared: Arc<Shared>,
    kind: Arc<ApiResource>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        let listed = match client
            .list(&kind, None, &trireme_client::ListParams::default())
            .await
        {
            Ok(l) => l,
            Err(e) => {
                if failures.is_multiple_of(10) {
                    tracing::warn!(kind = %kind_key(&kind), error = %e, failures, "list failed; trying again");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        failures = 0;
        let nodes = listed
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|o| Node::from_object(&kind, o))
                    .collect()
            })
            .unwrap_or_default();
        shared.graph().replace_kind(&kind, nodes);
        synced.send_replace(true);
        shared.changed.notify_one();
        let rv = listed
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(String::from);
        let params = WatchParams {
            resource_version: rv,
            timeout_seconds: Some(300 + rand::random::<u64>() % 300),
            ..WatchParams::default()
        };
        let mut watch = match client.watch(&kind, None, params).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(kind = %kind.plural, error = %e, "watch failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        loop {
            match watch.next().await {
                Ok(Some(ev)) => {
                    let Some(node) = Node::from_object(&kind, &ev.object) else {
                        continue;
                    };
                    let matters = {
                        let mut g = shared.graph();
                        match ev.kind {
                            trireme_client::EventType::Bookmark => false,
                            trireme_client::EventType::Deleted => {
                                g.remove(&node.uid);
                                true
                            }
                            _ => {
                                let was = g.nodes.get(&node.uid).is_some_and(Node::matters);
                                let matters = was || node.matters();
                                g.upsert(node);
                                matters
                            }
                        }
                    };
                    if matters {
                        shared.changed.notify_one();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // 410 Expired after a compaction, or the cluster unreachable for
                    // long: start again from a list.
                    tracing::debug!(kind = %kind.plural, error = %e, "watch ended");
                    break;
                }
            }
        }
    }
}

/// Where an owner reference points: its kind (any served version of its group), and
/// the namespace to look in. None when it cannot name anything.
fn owner_kind<'a>(
    discovery: &'a Discovery,
    dependent: &Node,
    r: &OwnerRef,
) -> Option<(&'a ApiResource, Option<String>)> {
    let group = group_of(&r.api_version);
    let kind = discovery
        .resolve_kind(&r.api_version, &r.kind)
        .ok()
        .or_else(|| {
            discovery
                .resources
                .iter()
                .find(|k| k.group == group && k.kind == r.kind)
        })?;
    if kind.namespaced {
        // A namespaced owner is in the dependent's namespace; a cluster-scoped
        // dependent cannot have one (the reference is invalid and left alone).
        Some((kind, Some(dependent.namespace.clone()?)))
    } else {
        Some((kind, None))
    }
}

/// Whether the owner is gone: a 404, or its name taken by another uid.
async fn owner_gone(
    client: &Client,
    discovery: &Discovery,
    dependent: &Node,
    r: &OwnerRef,
) -> trireme_client::Result<Outcome> {
    let Some((kind, ns)) = owner_kind(discovery, dependent, r) else {
        return Ok(Outcome::Skip);
    };
    match client.get(kind, ns.as_deref(), &r.name).await {
        Err(e) if e.is_not_found() => Ok(Outcome::Done),
        Err(e) => Err(e),
        Ok(o) if o["metadata"]["uid"].as_str() != Some(r.uid.as_str()) => Ok(Outcome::Done),
        Ok(_) => Ok(Outcome::Retry),
    }
}

/// `Done` when every listed owner is gone, else the first other outcome.
async fn owners_gone(
    client: &Client,
    discovery: &Discovery,
    dependent: &Node,
    owners: &[OwnerRef],
) -> trireme_client::Result<Outcome> {
    for r in owners {
        let o = owner_gone(client, discovery, dependent, r).await?;
        if o != Outcome::Done {
            return Ok(o);
        }
    }
    Ok(Outcome::Done)
}

/// How a dependent is deleted: in the foreground when its owner waits for it, and
/// otherwise as its own finalizer asks (an explicit policy replaces the finalizers
/// the collector works by, so Background would drop the dependent's own wish for its
/// dependents; Kubernetes' collector keeps it the same way).
fn delete_policy(node: &Node, owner_waits: bool) -> &'static str {
    if owner_waits || node.has_finalizer(FOREGROUND) {
        "Foreground"
    } else if node.has_finalizer(ORPHAN) {
        "Orphan"
    } else {
        "Background"
    }
}

/// Does one action; writes only while `leadership` is held, checked just before.
async fn act(
    client: &Client,
    discovery: &Discovery,
    leadership: &Leadership,
    action: &Action,
) -> trireme_client::Result<Outcome> {
    match action {
        Action::Delete {
            node,
            foreground,
            confirm_gone,
        } => {
            let gone = owners_gone(client, discovery, node, confirm_gone).await?;
            if gone != Outcome::Done {
                return Ok(gone);
            }
            let policy = delete_policy(node, *foreground);
            // The version the plan was made from: an object adopted or changed since
            // is not deleted (the next pass sees it as it is).
            let mut preconditions = json!({"uid": node.uid});
            if !node.resource_version.is_empty() {
                preconditions["resourceVersion"] = json!(node.resource_version);
            }
            let opts = json!({
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "propagationPolicy": policy,
                "preconditions": preconditions,
            });
            if !leadership.is_held() {
                return Ok(Outcome::Retry);
            }
            match client
                .delete_with(&node.kind, node.namespace.as_deref(), &node.name, &opts)
                .await
            {
                Ok(_) => {
                    let why = if *foreground {
                        "its owner waits for its dependents (foreground deletion)"
                    } else {
                        "its owners are gone"
                    };
                    tracing::info!(object = %node.describe(), policy, "deleted: {why}");
                    Ok(Outcome::Done)
                }
                Err(e) if e.is_not_found() => Ok(Outcome::Done),
                Err(e) if is_conflict(&e) => Ok(Outcome::Retry),
                Err(e) => Err(e),
            }
        }
        Action::DropRefs {
            node,
            uids,
            confirm_gone,
        } => {
            let gone = owners_gone(client, discovery, node, confirm_gone).await?;
            if gone != Outcome::Done {
                return Ok(gone);
            }
            let outcome = update_live(client, leadership, node, |meta| {
                let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") else {
                    return false;
                };
                let before = refs.len();
                refs.retain(|r| {
                    !r.get("uid")
                        .and_then(Value::as_str)
                        .is_some_and(|u| uids.iter().any(|x| x == u))
                });
                let changed = refs.len() != before;
                if refs.is_empty() {
                    meta.remove("ownerReferences");
                }
                changed
            })
            .await?;
            if outcome == Outcome::Done {
                tracing::info!(object = %node.describe(), owners = ?uids, "owner references dropped");
            }
            Ok(outcome)
        }
        Action::RemoveFinalizer { node, finalizer } => {
            let outcome = update_live(client, leadership, node, |meta| {
                let Some(Value::Array(f)) = meta.get_mut("finalizers") else {
                    return false;
                };
                let before = f.len();
                f.retain(|x| x.as_str() != Some(*finalizer));
                f.len() != before
            })
            .await?;
            if outcome == Outcome::Done {
                tracing::info!(object = %node.describe(), finalizer, "finalizer removed: dependents handled");
            }
            Ok(outcome)
        }
    }
}

/// Reads the object, changes its metadata with `change` and writes it back at the
/// version read. `Done` also when there is nothing left to change (gone, another uid,
/// `change` found nothing); `Retry` when the write lost a race or we no longer lead.
async fn update_live(
    client: &Client,
    leadership: &Leadership,
    node: &Node,
    change: impl FnOnce(&mut serde_json::Map<String, Value>) -> bool,
) -> trireme_client::Result<Outcome> {
    let ns = node.namespace.as_deref();
    let mut obj = match client.get(&node.kind, ns, &node.name).await {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(Outcome::Done),
        Err(e) => return Err(e),
    };
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(Outcome::Done);
    };
    if meta.get("uid").and_then(Value::as_str) != Some(node.uid.as_str()) || !change(meta) {
        return Ok(Outcome::Done);
    }
    if !leadership.is_held() {
        return Ok(Outcome::Retry);
    }
    match client.replace(&node.kind, ns, &node.name, &obj).await {
        // NotFound: deleted meanwhile, or by this write (its last finalizer).
        Ok(_) => Ok(Outcome::Done),
        Err(e) if e.is_not_found() => Ok(Outcome::Done),
        Err(e) if is_conflict(&e) => Ok(Outcome::Retry),
        Err(e) => Err(e),
    }
}

fn is_conflict(e: &trireme_client::Error) -> bool {
    e.status().is_some_and(|s| s.code == 409)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kind(k: &str, plural: &str) -> Arc<ApiResource> {
        Arc::new(ApiResource {
            group: String::new(),
            version: "v1".into(),
            kind: k.into(),
            plural: plural.into(),
            singular: k.to_ascii_lowercase(),
            short_names: vec![],
            namespaced: true,
        })
    }

    fn node(uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            kind: kind("ConfigMap", "configmaps"),
            namespace: Some("default".into()),
            name: format!("n-{uid}"),
            uid: uid.into(),
            resource_version: "1".into(),
            owners: owners
                .iter()
                .map(|(o, block)| OwnerRef {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: format!("n-{o}"),
                    uid: (*o).into(),
                    block_owner_deletion: *block,
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers.push(finalizer.into());
        n
    }

    fn graph(nodes: Vec<Node>) -> Graph {
        let mut g = Graph::default();
        for n in nodes {
            g.upsert(n);
        }
        g
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Delete {
                    node,
                    foreground,
                    confirm_gone,
                } => format!(
                    "delete {} fg={foreground} confirm={:?}",
                    node.uid,
                    confirm_gone.iter().map(|r| &r.uid).collect::<Vec<_>>()
                ),
                Action::DropRefs {
                    node,
                    uids,
                    confirm_gone,
                } => format!("drop {} {uids:?} confirm={}", node.uid, confirm_gone.len()),
                Action::RemoveFinalizer { node, finalizer } => {
                    format!("unfinalize {} {finalizer}", node.uid)
                }
            })
            .collect()
    }

    #[test]
    fn a_dependent_whose_owners_are_all_gone_is_deleted_after_a_lookup() {
        let g = graph(vec![node("d", &[("gone1", false), ("gone2", false)])]);
        assert_eq!(
            summary(&plan(&g, true)),
            ["delete d fg=false confirm=[\"gone1\", \"gone2\"]"]
        );
    }

    #[test]
    fn a_dependent_with_one_owner_left_only_loses_the_gone_reference() {
        let g = graph(vec![
            node("o", &[]),
            node("d", &[("o", false), ("gone", false)]),
        ]);
        assert_eq!(summary(&plan(&g, true)), ["drop d [\"gone\"] confirm=1"]);
        let healthy = graph(vec![node("o", &[]), node("d", &[("o", true)])]);
        assert!(plan(&healthy, true).is_empty());
    }

    #[test]
    fn an_orphaning_owner_loses_its_references_then_its_finalizer() {
        let g = graph(vec![
            deleting(node("o", &[]), ORPHAN),
            node("d", &[("o", true)]),
        ]);
        assert_eq!(summary(&plan(&g, true)), ["drop d [\"o\"] confirm=0"]);
        let done = graph(vec![deleting(node("o", &[]), ORPHAN), node("d", &[])]);
        assert_eq!(summary(&plan(&done, true)), ["unfinalize o orphan"]);
    }

    #[test]
    fn a_foreground_deletion_deletes_dependents_first_and_waits_for_blocking_ones() {
        let g = graph(vec![
            deleting(node("o", &[]), FOREGROUND),
            node("blocks", &[("o", true)]),
            node("free", &[("o", false)]),
        ]);
        assert_eq!(
            summary(&plan(&g, true)),
            [
                "delete blocks fg=true confirm=[]",
                "delete free fg=true confirm=[]"
            ]
        );
        // A blocking dependent still there (being deleted itself, in the foreground)
        // holds the owner; its own finalizer goes first, as it has no dependents.
        let going = deleting(node("blocks", &[("o", true)]), FOREGROUND);
        let g = graph(vec![deleting(node("o", &[]), FOREGROUND), going]);
        assert_eq!(
            summary(&plan(&g, true)),
            ["unfinalize blocks foregroundDeletion"]
        );
        // Only a non-blocking dependent left: the owner may go.
        let g = graph(vec![
            deleting(node("o", &[]), FOREGROUND),
            deleting(node("free", &[("o", false)]), "example.com/other"),
        ]);
        assert_eq!(
            summary(&plan(&g, true)),
            ["unfinalize o foregroundDeletion"]
        );
    }

    #[test]
    fn a_dependent_with_another_owner_lets_a_foreground_owner_go() {
        let g = graph(vec![
            node("keep", &[]),
            deleting(node("o", &[]), FOREGROUND),
            node("d", &[("keep", false), ("o", true)]),
        ]);
        assert_eq!(summary(&plan(&g, true)), ["drop d [\"o\"] confirm=0"]);
    }

    #[test]
    fn an_owner_is_the_object_the_reference_names_not_just_its_uid() {
        // The uid belongs to an object in another namespace (or of another name or
        // kind): Kubernetes takes such a reference as dangling.
        let mut elsewhere = node("o", &[]);
        elsewhere.namespace = Some("other".into());
        let g = graph(vec![elsewhere, node("d", &[("o", false)])]);
        assert_eq!(
            summary(&plan(&g, true)),
            ["delete d fg=false confirm=[\"o\"]"]
        );
        let mut renamed = node("o", &[]);
        renamed.name = "not-n-o".into();
        let g = graph(vec![renamed, node("d", &[("o", false)])]);
        assert_eq!(plan(&g, true).len(), 1);
        // Another version of the owner's group is the same owner.
        let mut d = node("d", &[("o", false)]);
        d.owners[0].api_version = "v2".into();
        let g = graph(vec![node("o", &[]), d]);
        assert!(plan(&g, true).is_empty());
    }

    #[test]
    fn a_dependent_is_deleted_keeping_its_own_wish_for_its_dependents() {
        let plain = node("d", &[]);
        assert_eq!(delete_policy(&plain, false), "Background");
        assert_eq!(delete_policy(&plain, true), "Foreground");
        let mut orphans = node("d", &[]);
        orphans.finalizers.push(ORPHAN.into());
        assert_eq!(delete_policy(&orphans, false), "Orphan");
        let mut waits = node("d", &[]);
        waits.finalizers.push(FOREGROUND.into());
        assert_eq!(delete_policy(&waits, false), "Foreground");
    }

    #[test]
    fn finalizers_wait_until_every_kind_is_listed() {
        let g = graph(vec![deleting(node("o", &[]), ORPHAN)]);
        assert!(plan(&g, false).is_empty());
        assert_eq!(summary(&plan(&g, true)), ["unfinalize o orphan"]);
    }

    #[tokio::test]
    async fn a_refused_object_backs_off_and_doubles_up_to_a_minute() {
        let mut b = Backoff::default();
        let now = tokio::time::Instant::now();
        assert!(b.ready("x", now));
        b.failed("x", now);
        assert!(!b.ready("x", now) && b.ready("x", now + RETRY_AFTER));
        for _ in 0..20 {
            b.failed("x", now);
        }
        assert_eq!(b.next(now), Some(now + MAX_BACKOFF));
        assert_eq!(
            b.next(now + MAX_BACKOFF),
            None,
            "a pause that ended wakes nobody"
        );
        b.done("x");
        assert!(b.ready("x", now) && b.next(now).is_none());
        b.skipped("y", now);
        assert_eq!(b.next(now), Some(now + MAX_BACKOFF));
        // An object the plan has nothing for any more is forgotten.
        b.retain_planned(&[]);
        assert!(b.next(now).is_none());
    }

    #[test]
    fn objects_being_deleted_are_not_deleted_again_and_others_finalizers_are_left() {
        let g = graph(vec![
            deleting(node("d", &[("gone", false)]), "example.com/mine"),
            deleting(node("x", &[]), "example.com/mine"),
        ]);
        assert!(plan(&g, true).is_empty());
    }

    #[test]
    fn nodes_come_from_objects_and_kinds_are_replaced_whole() {
        let cm = kind("ConfigMap", "configmaps");
        let obj = json!({"metadata": {
            "name": "a", "namespace": "ns", "uid": "u1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["orphan"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u0", "blockOwnerDeletion": true},
                {"apiVersion": "v1", "kind": "Secret"}
            ]
        }});
        let n = Node::from_object(&cm, &obj).unwrap();
        assert_eq!(
            n.owners.len(),
            1,
            "a reference without name or uid is skipped"
        );
        assert!(n.owners[0].block_owner_deletion && n.deleting && n.has_finalizer(ORPHAN));
        assert!(Node::from_object(&cm, &json!({"metadata": {"name": "x"}})).is_none());
        let mut g = graph(vec![n, node("other-kind", &[])]);
        g.nodes.get_mut("other-kind").unwrap().kind = kind("Secret", "secrets");
        g.replace_kind(&cm, vec![]);
        assert_eq!(g.len(), 1);
    }
}
