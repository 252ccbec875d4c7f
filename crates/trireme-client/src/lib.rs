//! # trireme-client: a client for Trireme's Kubernetes-style API
//!
//! - [`Kubeconfig`]: the kubeconfig `trireme certs init` writes (server, CA, client
//!   certificate and key, embedded or as files).
//! - [`Client`]: HTTPS with the cluster CA and the client identity, over several
//!   endpoints (replicas). A request that cannot connect, or that a replica answers
//!   with a 5xx carrying `Retry-After` (no leader, no quorum), goes to the next
//!   endpoint; attempts are bounded and a full round over the endpoints backs off.
//!   The endpoint that answered last is tried first next time.
//! - [`Discovery`] / [`ApiResource`]: `/api/v1`, `/apis`, `/apis/{g}/{v}`, and
//!   resolving `cm` / `configmap` / `configmaps` / `ConfigMap`.
//! - Objects as `serde_json::Value`: get, list, server-side [`Table`]s, create,
//!   merge-patch, [`Client::apply`], delete, and [`Watch`] (typed events, resumed
//!   from the last resourceVersion when a stream breaks).
//! - [`leader`]: leader election on a Lease (client-go's algorithm), for
//!   `trireme controller`.
//! - Errors: a server `Status` is [`Error::Api`] with reason, code and message.
//! - [`Client::member_status`] / [`Client::ready`]: one replica's Raft status
//!   (`/v3/maintenance/status`) and `/readyz`, for `trireme ctl status`.
//! - [`Client::member_list`], [`Client::member_add`], [`Client::member_remove`],
//!   [`Client::member_promote`] ([`ClusterMember`]): the member API
//!   (`/v3/cluster/member/*`), for `trireme ctl member`.

mod discovery;
mod error;
mod kubeconfig;
pub mod leader;
mod manifest;
mod members;
mod watch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response};
use serde_json::Value;
use tokio::sync::OnceCell;

pub use discovery::{ApiResource, Discovery};
pub use error::{Error, Result, Status};
pub use kubeconfig::Kubeconfig;
pub use manifest::{merge_patch, parse_manifests};
pub use members::ClusterMember;
pub use watch::{EventType, Watch, WatchEvent, WatchParams};

/// The Accept header that asks for a server-side Table.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URLs (`https://host:port`), tried in this order.
    pub endpoints: Vec<String>,
    /// PEM of the CA the servers' certificates chain to (else the server is not
    /// verified against any root: HTTPS will fail; plain `http://` works).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate followed by its key.
    pub identity_pem: Option<Vec<u8>>,
    /// Time to set up a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Time for a whole non-watch request.
    pub request_timeout: Duration,
    /// Attempts per request over all endpoints; `None`: twice the endpoint count, at
    /// least 3.
    pub max_attempts: Option<usize>,
    /// First pause after a full round of failed endpoints; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            ca_pem: None,
            identity_pem: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            max_attempts: None,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// `extra` endpoints first (in order), then the kubeconfig's server; duplicates
    /// dropped. CA and client identity from the kubeconfig.
    pub fn from_kubeconfig(k: &Kubeconfig, extra: &[String]) -> ClientConfig {
        let mut endpoints: Vec<String> = Vec::new();
        for e in extra.iter().chain(std::iter::once(&k.server)) {
            let e = e.trim().trim_end_matches('/').to_string();
            if !e.is_empty() && !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        let identity_pem = match (&k.client_cert_pem, &k.client_key_pem) {
            (Some(c), Some(key)) => {
                let mut id = c.clone();
                if !id.ends_with(b"\n") {
                    id.push(b'\n');
                }
                id.extend_from_slice(key);
                Some(id)
            }
            _ => None,
        };
        ClientConfig {
            ca_pem: k.ca_pem.clone(),
            identity_pem,
            ..ClientConfig::new(endpoints)
        }
    }
}

/// Label and field selectors of a list.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = self.label_selector.as_ref().filter(|l| !l.is_empty()) {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = self.field_selector.as_ref().filter(|f| !f.is_empty()) {
            q.push(("fieldSelector", f.clone()));
        }
        q
    }
}

/// A server-side Table (`meta.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `string`, `integer`, `date`...
    pub kind: String,
    /// 0: always shown; higher: `-o wide` only.
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub cells: Vec<Value>,
    /// The row's object (PartialObjectMetadata by default).
    pub object: Value,
}

impl Table {
    fn from_value(v: &Value) -> Option<Table> {
        if v.get("kind").and_then(Value::as_str) != Some("Table") {
            return None;
        }
        let columns = v
            .get("columnDefinitions")?
            .as_array()?
            .iter()
            .map(|c| Column {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            })
            .collect();
        let rows = v
            .get("rows")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| TableRow {
                cells: r
                    .get("cells")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                object: r.get("object").cloned().unwrap_or(Value::Null),
            })
            .collect();
        Some(Table { columns, rows })
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// The result of applying one manifest.
#[derive(Debug, Clone)]
pub struct Applied {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: ApplyOutcome,
    /// The object as stored.
    pub object: Value,
}

/// One replica's view of the cluster (`POST /v3/maintenance/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub endpoint: String,
    /// The replica's name: the CN of its API serving certificate, when it served TLS.
    pub name: Option<String>,
    pub member_id: u64,
    /// 0 when it knows no leader.
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
    /// The replica's failure zone, when it has one configured.
    pub zone: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    preferred: AtomicUsize,
    request_timeout: Duration,
    max_attempts: usize,
    backoff: Duration,
    max_backoff: Duration,
    discovery: OnceCell<Discovery>,
}

/// A client of the Kubernetes-style API over one or more replicas. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What a request carries, so that it can be sent again elsewhere.
struct Req<'a> {
    method: Method,
    path: &'a str,
    query: Vec<(&'static str, String)>,
    accept: Option<&'a str>,
    body: Option<(&'static str, Vec<u8>)>,
    /// A watch: no overall timeout.
    streaming: bool,
}

impl<'a> Req<'a> {
    fn new(method: Method, path: &'a str) -> Self {
        Req {
            method,
            path,
            query: Vec::new(),
            accept: None,
            body: None,
            streaming: false,
        }
    }
}

impl Client {
    /// A client for the kubeconfig's cluster plus `extra` endpoints (tried first).
    pub fn from_kubeconfig(k: &Kubeconfig, extra: &[String]) -> Result<Client> {
        Client::new(ClientConfig::from_kubeconfig(k, extra))
    }

    pub fn new(config: ClientConfig) -> Result<Client> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("no endpoint to talk to".into()));
        }
        for e in &config.endpoints {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(Error::Config(format!(
                    "endpoint {e:?} must be an http:// or https:// URL"
                )));
            }
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .tls_info(true)
            .connect_timeout(config.connect_timeout);
        if let Some(ca) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| Error::Config(format!("the CA certificate: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(id) = &config.identity_pem {
            b = b.identity(
                reqwest::Identity::from_pem(id)
                    .map_err(|e| Error::Config(format!("the client certificate or key: {e}")))?,
            );
        }
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTPS client: {e}")))?;
        let n = config.endpoints.len();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                max_attempts: config.max_attempts.unwrap_or((2 * n).max(3)).max(1),
                endpoints: config.endpoints,
                preferred: AtomicUsize::new(0),
                request_timeout: config.request_timeout,
                backoff: config.backoff,
                max_backoff: config.max_backoff,
                discovery: OnceCell::new(),
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Sends `req` to the preferred endpoint, failing over on connection errors and
    /// on 5xx answers with `Retry-After`. Returns the endpoint that answered and its
    /// response (any status).
    async fn send(&self, req: &Req<'_>) -> Result<(String, Response)> {
        let inner = &self.inner;
        let n = inner.endpoints.len();
        let start = inner.preferred.load(Ordering::Relaxed) % n;
        let idempotent = req.method == Method::GET;
        let mut last = String::new();
        for attempt in 0..inner.max_attempts {
            if attempt > 0 && attempt % n == 0 {
                // A full round failed: back off before the next one.
                let round = u32::try_from(attempt / n).unwrap_or(u32::MAX).min(16);
                let pause = inner
                    .backoff
                    .saturating_mul(1 << (round - 1).min(15))
                    .min(inner.max_backoff);
                tokio::time::sleep(pause).await;
            }
            let i = (start + attempt) % n;
            let endpoint = &inner.endpoints[i];
            let mut rb = inner
                .http
                .request(req.method.clone(), format!("{endpoint}{}", req.path));
            if !req.query.is_empty() {
                rb = rb.query(&req.query);
            }
            if let Some(a) = req.accept {
                rb = rb.header(ACCEPT, a);
            } else {
                rb = rb.header(ACCEPT, "application/json");
            }
            if let Some((ct, body)) = &req.body {
                rb = rb.header(CONTENT_TYPE, *ct).body(body.clone());
            }
            if !req.streaming {
                rb = rb.timeout(inner.request_timeout);
            }
            match rb.send().await {
                Ok(resp)
                    if resp.status().is_server_error()
                        && resp.headers().contains_key(RETRY_AFTER) =>
                {
                    let code = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    let s = Status::from_body(code, &body);
                    last = format!("{endpoint}: {} ({}): {}", s.code, s.reason, s.message);
                }
                Ok(resp) => {
                    inner.preferred.store(i, Ordering::Relaxed);
                    return Ok((endpoint.clone(), resp));
                }
                Err(e) if e.is_connect() || (idempotent && (e.is_timeout() || e.is_request())) => {
                    last = format!("{endpoint}: {}", error_chain(&e));
                }
                Err(e) => return Err(http_error(endpoint.clone(), &e)),
            }
        }
        Err(Error::Unavailable {
            attempts: inner.max_attempts,
            last,
        })
    }

    /// Sends and reads a JSON answer; a non-2xx answer is [`Error::Api`].
    async fn json(&self, req: &Req<'_>) -> Result<Value> {
        let (endpoint, resp) = self.send(req).await?;
        let code = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| http_error(endpoint.clone(), &e))?;
        if !code.is_success() {
            return Err(Error::Api(Status::from_body(code.as_u16(), &body)));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Decode {
            endpoint,
            message: format!("invalid JSON: {e}"),
        })
    }

    /// Sends `body` as `content_type` and reads a JSON answer (see [`Client::json`]).
    async fn json_with_body(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: &Value,
    ) -> Result<Value> {
        let mut req = Req::new(method, path);
        req.body = Some((content_type, body.to_string().into_bytes()));
        self.json(&req).await
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        self.json(&Req::new(Method::GET, path)).await
    }

    /// Discovery, fetched once per client (see [`Client::fetch_discovery`]).
    pub async fn discovery(&self) -> Result<&Discovery> {
        self.inner
            .discovery
            .get_or_try_init(|| self.fetch_discovery())
            .await
    }

    /// Discovery as the server has it now (not cached): `/api/v1`, then `/apis` and
    /// each group's preferred version. Kinds of CustomResourceDefinitions appear as
    /// soon as their definition is stored.
    pub async fn fetch_discovery(&self) -> Result<Discovery> {
        let mut lists = vec![self.get_json("/api/v1").await?];
        let groups = self.get_json("/apis").await?;
        for g in groups
            .get("groups")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let gv = g
                .get("preferredVersion")
                .and_then(|p| p.get("groupVersion"))
                .and_then(Value::as_str)
                .or_else(|| {
                    g.get("versions")
                        .and_then(|v| v.get(0))
                        .and_then(|v| v.get("groupVersion"))
                        .and_then(Value::as_str)
                });
            if let Some(gv) = gv {
                lists.push(self.get_json(&format!("/apis/{gv}")).await?);
            }
        }
        Discovery::from_lists(&lists)
    }

    /// Resolves a resource name, short name or kind through discovery.
    pub async fn resolve(&self, name: &str) -> Result<ApiResource> {
        self.discovery().await?.resolve(name).cloned()
    }

    /// Resolves a manifest's `apiVersion` and `kind`.
    pub async fn resolve_kind(&self, api_version: &str, kind: &str) -> Result<ApiResource> {
        self.discovery()
            .await?
            .resolve_kind(api_version, kind)
            .cloned()
    }

    /// One object. `namespace` None for a namespaced kind means `default`.
    pub async fn get(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), Some(name));
        self.get_json(&path).await
    }

    /// A list (`{Kind}List`); `namespace` None: every namespace.
    pub async fn list(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<Value> {
        let path = res.path(namespace, None);
        let mut req = Req::new(Method::GET, &path);
        req.query = params.query();
        self.json(&req).await
    }

    /// The server-side Table of one object (`name`) or of a list.
    pub async fn table(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: Option<&str>,
        params: &ListParams,
    ) -> Result<Table> {
        let ns = match (name, namespace) {
            (Some(_), None) => Some("default"),
            (_, ns) => ns,
        };
        let path = res.path(ns, name);
        let mut req = Req::new(Method::GET, &path);
        req.accept = Some(TABLE_ACCEPT);
        if name.is_none() {
            req.query = params.query();
        }
        let v = self.json(&req).await?;
        Table::from_value(&v).ok_or_else(|| Error::Decode {
            endpoint: path.clone(),
            message: "asked for a Table, got something else".into(),
        })
    }

    /// POST to the collection.
    pub async fn create(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        obj: &Value,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), None);
        self.json_with_body(Method::POST, &path, "application/json", obj)
            .await
    }

    /// PATCH with `application/merge-patch+json`.
    pub async fn merge_patch(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), Some(name));
        self.json_with_body(Method::PATCH, &path, "application/merge-patch+json", patch)
            .await
    }

    /// PUT: replaces the object. With `metadata.resourceVersion` set, the server
    /// answers 409 Conflict unless the object is still at that version.
    pub async fn replace(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), Some(name));
        self.json_with_body(Method::PUT, &path, "application/json", obj)
            .await
    }

    /// DELETE one object; returns what the server answered (the deleted object).
    pub async fn delete(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), Some(name));
        self.json(&Req::new(Method::DELETE, &path)).await
    }

    /// DELETE one object with a `DeleteOptions` body (`propagationPolicy`,
    /// `preconditions`); returns the deleted object, or the object marked for deletion
    /// while finalizers remain.
    pub async fn delete_with(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value> {
        let path = res.path(Some(namespace.unwrap_or("default")), Some(name));
        self.json_with_body(Method::DELETE, &path, "application/json", options)
            .await
    }

    /// Creates the object if absent, else merge-patches it with the manifest (fields
    /// absent from the manifest are kept; no last-applied tracking). "unchanged" when
    /// the patch would change nothing (then nothing is written). The namespace is the
    /// manifest's, else `default_namespace`.
    pub async fn apply(&self, manifest: &Value, default_namespace: &str) -> Result<Applied> {
        let s = |f: &str| manifest.get(f).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (s("apiVersion"), s("kind"));
        if kind.is_empty() || api_version.is_empty() {
            return Err(Error::Manifest(
                "a manifest needs apiVersion and kind".into(),
            ));
        }
        let meta = manifest.get("metadata");
        let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        let name = field("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Manifest(format!("a {kind} manifest needs metadata.name")))?
            .to_string();
        let res = self.resolve_kind(api_version, kind).await?;
        let namespace = res
            .namespaced
            .then(|| field("namespace").unwrap_or(default_namespace).to_string());
        let ns = namespace.as_deref();
        let (outcome, object) = match self.get(&res, ns, &name).await {
            Err(e) if e.is_not_found() => {
                let mut body = manifest.clone();
                if let (Some(n), Some(Value::Object(m))) = (ns, body.get_mut("metadata")) {
                    m.entry("namespace")
                        .or_insert_with(|| Value::String(n.to_string()));
                }
                (ApplyOutcome::Created, self.create(&res, ns, &body).await?)
            }
            Err(e) => return Err(e),
            Ok(current) => {
                let mut merged = current.clone();
                merge_patch(&mut merged, manifest);
                if merged == current {
                    (ApplyOutcome::Unchanged, current)
                } else {
                    (
                        ApplyOutcome::Configured,
                        self.merge_patch(&res, ns, &name, manifest).await?,
                    )
                }
            }
        };
        Ok(Applied {
            resource: res,
            namespace,
            name,
            outcome,
            object,
        })
    }

    /// Starts a watch; see [`Watch`].
    pub async fn watch(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        params: WatchParams,
    ) -> Result<Watch> {
        let mut w = Watch::new(self.clone(), res.path(namespace, None), params);
        w.open().await?;
        Ok(w)
    }

    /// `POST /v3/maintenance/status` on one endpoint (no failover).
    pub async fn member_status(&self, endpoint: &str) -> Result<MemberStatus> {
        let resp = self
            .inner
            .http
            .post(format!("{endpoint}/v3/maintenance/status"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body("{}")
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(|e| http_error(endpoint.to_string(), &e))?;
        let name = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .and_then(common_name);
        let code = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| http_error(endpoint.to_string(), &e))?;
        if !code.is_success() {
            return Err(Error::Api(Status::from_body(code.as_u16(), &body)));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            endpoint: endpoint.to_string(),
            message: format!("invalid JSON: {e}"),
        })?;
        let num = |v: Option<&Value>| -> u64 {
            match v {
                Some(Value::String(s)) => s.parse().unwrap_or(0),
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                _ => 0,
            }
        };
        let member_id = num(v.get("header").and_then(|h| h.get("member_id")));
        if member_id == 0 {
            return Err(Error::Decode {
                endpoint: endpoint.to_string(),
                message: "the status has no header.member_id".into(),
            });
        }
        Ok(MemberStatus {
            endpoint: endpoint.to_string(),
            name,
            member_id,
            leader: num(v.get("leader")),
            term: num(v.get("raftTerm")),
            commit_index: num(v.get("raftIndex")),
            applied_index: num(v.get("raftAppliedIndex")),
            is_learner: v.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
            zone: v.get("zone").and_then(Value::as_str).map(String::from),
        })
    }

    /// `GET /readyz` on one endpoint: true on 200, false on any other answer; an
    /// error when it cannot be reached.
    pub async fn ready(&self, endpoint: &str) -> Result<bool> {
        let resp = self
            .inner
            .http
            .get(format!("{endpoint}/readyz"))
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(|e| http_error(endpoint.to_string(), &e))?;
        Ok(resp.status().is_success())
    }
}

/// The Subject CN of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(String::from)
}

fn http_error(endpoint: impl Into<String>, e: &reqwest::Error) -> Error {
    Error::Http {
        endpoint: endpoint.into(),
        message: error_chain(e),
    }
}

/// An error and its sources on one line (reqwest's Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
