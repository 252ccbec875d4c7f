//! Objects in the store: get, list, create, update, patch, delete, with
//! kube-apiserver's semantics (optimistic concurrency on `resourceVersion` = the key's
//! mod revision; create and update as compare-and-swap transactions).

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use trireme_mvcc::{
    prefix_end, CommandError, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue,
    PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse, MAX_TXN_OPS,
};
use trireme_store::{Consistency, KvStore};

use super::meta::{self, meta_str, metadata_mut};
use super::resources::{self, Registry, Resource};
use super::select::{FieldSelector, LabelSelector};
use super::status::KubeError;

/// How many times a write retries a lost race: an update without a client
/// `resourceVersion`, or a create whose namespace changed meanwhile.
const UPDATE_RETRIES: usize = 8;

/// Decodes a stored object and stamps `resourceVersion`, `kind` and `apiVersion`.
pub fn decode(
    res: &Resource,
    kv: &KeyValue,
    revision: u64,
) -> Result<Map<String, Value>, KubeError> {
    let mut obj: Map<String, Value> = serde_json::from_slice(&kv.value).map_err(|e| {
        KubeError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!(
                "stored object {} is not JSON: {e}",
                String::from_utf8_lossy(&kv.key)
            ),
        )
    })?;
    obj.insert("kind".into(), json!(res.kind));
    obj.insert("apiVersion".into(), json!(res.api_version()));
    metadata_mut(&mut obj).insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(obj)
}

fn encode(obj: &Map<String, Value>) -> Vec<u8> {
    let mut stored = obj.clone();
    if let Some(Value::Object(m)) = stored.get_mut("metadata") {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn version_is_zero(key: &str) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        range_end: vec![],
        target: CompareTarget::Version(0),
        result: CompareResult::Equal,
    }
}

fn mod_revision_is(key: &str, rev: u64) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        range_end: vec![],
        target: CompareTarget::ModRevision(rev),
        result: CompareResult::Equal,
    }
}

fn put_op(key: &str, obj: &Map<String, Value>) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: encode(obj),
        lease: 0,
        prev_kv: false,
    })
}

/// A list's result.
pub struct Listed {
    pub items: Vec<Map<String, Value>>,
    pub revision: u64,
    pub continue_token: Option<String>,
}

/// The query parameters a list or watch reads.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: u64,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

fn continue_encode(revision: u64, start: &str) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn continue_decode(token: &str) -> Result<(u64, String), KubeError> {
    use base64::Engine;
    let bad = || KubeError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, start))
}

pub struct Objects<'a> {
    pub store: &'a KvStore,
    /// `dryRun=All`: every check is made, nothing is written.
    pub dry_run: bool,
}

impl<'a> Objects<'a> {
    pub fn new(store: &'a KvStore) -> Self {
        Objects {
            store,
            dry_run: false,
        }
    }

    /// A dry run also when `dry_run` (a DELETE's body can ask for one).
    pub fn dry_run_also(self, dry_run: bool) -> Self {
        Objects {
            dry_run: self.dry_run || dry_run,
            ..self
        }
    }

    /// Runs a write's transaction; on a dry run, only its compares (and the reads of
    /// its failure branch), so the answer says whether it would have succeeded and
    /// nothing is stored.
    async fn commit(&self, txn: TxnRequest) -> Result<TxnResponse, KubeError> {
        let txn = if self.dry_run {
            // What the store would refuse before looking at the compares.
            if [&txn.success, &txn.failure]
                .iter()
                .any(|ops| ops.len() > MAX_TXN_OPS)
                || txn.compare.len() > MAX_TXN_OPS
            {
                return Err(KubeError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    CommandError::TooManyOps.to_string(),
                ));
            }
            TxnRequest {
                compare: txn.compare,
                success: vec![],
                failure: txn
                    .failure
                    .into_iter()
                    .filter(|op| matches!(op, RequestOp::Range(_)))
                    .collect(),
            }
        } else {
            txn
        };
        Ok(self.store.txn(txn).await?)
    }

    async fn read_key(&self, key: &str) -> Result<Option<KeyValue>, KubeError> {
        self.read_key_with(key, Consistency::Linearizable).await
    }

    async fn read_key_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, KubeError> {
        let r = self
            .store
            .range(
                &RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
                consistency,
            )
            .await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Checks that namespace `ns` exists and is not being deleted, and returns its key
    /// and revision for the create's compare. Like kube-apiserver's NamespaceLifecycle
    /// admission it trusts the local copy when that says the namespace is there and live
    /// (unless `quorum`), and asks the quorum otherwise, so that a namespace just
    /// created through another replica is found.
    async fn open_namespace(&self, ns: &str, quorum: bool) -> Result<(String, u64), KubeError> {
        let key = resources::namespaces().key(None, ns);
        let live = |kv: &KeyValue| -> Result<bool, KubeError> {
            let obj = decode(resources::namespaces(), kv, kv.mod_revision)?;
            Ok(meta_str(&obj, "deletionTimestamp").is_none())
        };
        if !quorum {
            if let Some(kv) = self.read_key_with(&key, Consistency::Serializable).await? {
                if live(&kv)? {
                    return Ok((key, kv.mod_revision));
                }
            }
        }
        let kv = self
            .read_key(&key)
            .await?
            .ok_or_else(|| KubeError::not_found("namespaces", "", ns))?;
        if !live(&kv)? {
            return Err(KubeError::new(
                axum::http::StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok((key, kv.mod_revision))
    }

    pub async fn get(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Map<String, Value>, KubeError> {
        match self.read_key(&res.key(ns, name)).await? {
            Some(kv) => decode(res, &kv, kv.mod_revision),
            None => Err(KubeError::not_found(res.plural, res.group, name)),
        }
    }

    pub async fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Listed, KubeError> {
        let prefix = res.prefix(ns);
        let (mut revision, start) = match &opts.continue_token {
            Some(t) => {
                let (rv, start) = continue_decode(t)?;
                (rv, format!("{prefix}{start}"))
            }
            None => (0, prefix.clone()),
        };
        let mut consistency = Consistency::Linearizable;
        if revision == 0 {
            match opts.resource_version.as_deref() {
                None | Some("") => {}
                Some("0") => consistency = Consistency::Serializable,
                Some(rv) => {
                    let rv: u64 = rv.parse().map_err(|_| {
                        KubeError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?;
                    if opts.resource_version_match.as_deref() == Some("Exact") {
                        revision = rv;
                    }
                }
            }
        }
        let req = RangeRequest {
            key: start.into_bytes(),
            range_end: prefix_end(prefix.as_bytes()),
            revision,
            ..Default::default()
        };
        let r = self
            .store
            .range(&req, consistency)
            .await
            .map_err(|e| match e {
                trireme_store::StoreError::Compacted { .. } => {
                    KubeError::expired("The resourceVersion for the provided list is too old.")
                }
                e => e.into(),
            })?;
        let mut items = Vec::new();
        let mut continue_token = None;
        for kv in &r.kvs {
            let obj = decode(res, kv, kv.mod_revision)?;
            if !opts.labels.matches(&obj) || !opts.fields.matches(&obj) {
                continue;
            }
            if opts.limit > 0 && items.len() as u64 == opts.limit {
                let key = String::from_utf8_lossy(&kv.key);
                continue_token = Some(continue_encode(
                    r.revision,
                    key.strip_prefix(&prefix).unwrap_or(&key),
                ));
                break;
            }
            items.push(obj);
        }
        Ok(Listed {
            items,
            revision: r.revision,
            continue_token,
        })
    }

    /// Checks a body's `kind` and `apiVersion` (when given) against the URL's kind.
    fn check_kind(res: &Resource, body: &Map<String, Value>) -> Result<(), KubeError> {
        if let Some(k) = body.get("kind").and_then(Value::as_str) {
            if k != res.kind {
                return Err(KubeError::bad_request(format!(
                    "the kind {k:?} in the body does not match {:?}",
                    res.kind
                )));
            }
        }
        if let Some(v) = body.get("apiVersion").and_then(Value::as_str) {
            if v != res.api_version() {
                return Err(KubeError::bad_request(format!(
                    "the apiVersion {v:?} in the body does not match {:?}",
                    res.api_version()
                )));
            }
        }
        Ok(())
    }

    fn check_namespace(
        res: &Resource,
        ns: Option<&str>,
        body: &mut Map<String, Value>,
    ) -> Result<(), KubeError> {
        let m = metadata_mut(body);
        if !res.namespaced {
            m.remove("namespace");
            return Ok(());
        }
        let Some(ns) = ns else {
            return Err(KubeError::bad_request(
                "a namespaced object needs a namespace in the URL",
            ));
        };
        match m.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("namespace".into(), json!(ns));
                Ok(())
            }
            Some(given) if given == ns => Ok(()),
            Some(given) => Err(KubeError::bad_request(format!(
                "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
            ))),
        }
    }

    fn check_name(res: &Resource, name: &str) -> Result<(), KubeError> {
        let check = if res.plural == "namespaces" {
            meta::check_label(name)
        } else {
            meta::check_subdomain(name)
        };
        check.map_err(|why| KubeError::invalid(res.kind, name, "metadata.name", name, why))
    }

    pub async fn create(
        &self,
        res: &Resource,
        ns: Option<&str>,
        mut body: Map<String, Value>,
    ) -> Result<Map<String, Value>, KubeError> {
        Self::check_kind(res, &body)?;
        Self::check_namespace(res, ns, &mut body)?;
        let m = metadata_mut(&mut body);
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => meta::generate_name(prefix),
                None => {
                    return Err(KubeError::required(
                        res.kind,
                        "metadata.name",
                        "name or generateName is required",
                    ))
                }
            },
        };
        Self::check_name(res, &name)?;
        // The namespace as checked (a local read may be stale).
        let namespace = match (res.namespaced, ns) {
            (true, Some(ns)) => Some((ns, self.open_namespace(ns, false).await?)),
            _ => None,
        };
        let m = metadata_mut(&mut body);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        m.insert("generation".into(), json!(1));
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        defaults_on_create(res, &name, &mut body)?;
        let key = res.key(ns, &name);
        let revision = self.create_in(res, &name, &key, &body, namespace).await?;
        body.insert("kind".into(), json!(res.kind));
        body.insert("apiVersion".into(), json!(res.api_version()));
        // A dry run's object was never stored: it has no version (as kube-apiserver).
        if !self.dry_run {
            metadata_mut(&mut body).insert("resourceVersion".into(), json!(revision.to_string()));
        }
        Ok(body)
    }

    /// Writes a new object at `key` if there is none, and, for a namespaced one, only
    /// while its namespace is still at the revision that was checked: a deletion of the
    /// namespace committed in between fails the compare (and would otherwise leave the
    /// object behind in no namespace), and the check is redone against the quorum.
    /// Returns the revision of the write.
    async fn create_in(
        &self,
        res: &Resource,
        name: &str,
        key: &str,
        body: &Map<String, Value>,
        mut namespace: Option<(&str, (String, u64))>,
    ) -> Result<u64, KubeError> {
        for _ in 0..UPDATE_RETRIES {
            let mut compare = vec![version_is_zero(key)];
            if let Some((_, (ns_key, ns_rev))) = &namespace {
                compare.push(mod_revision_is(ns_key, *ns_rev));
            }
            let txn = TxnRequest {
                compare,
                success: vec![put_op(key, body)],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: key.as_bytes().to_vec(),
                    count_only: true,
                    ..Default::default()
                })],
            };
            let r = self.commit(txn).await?;
            if r.succeeded {
                return Ok(r.revision);
            }
            let exists = matches!(
                r.responses.first(),
                Some(ResponseOp::Range(found)) if found.count > 0
            );
            match namespace {
                Some((ns, _)) if !exists => {
                    namespace = Some((ns, self.open_namespace(ns, true).await?));
                }
                _ => return Err(KubeError::already_exists(res.plural, res.group, name)),
            }
        }
        Err(KubeError::conflict(res.plural, res.group, name))
    }

    /// PUT semantics: replaces the object; a `resourceVersion` in the body is a
    /// precondition (stale -> 409 Conflict).
    pub async fn update(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        mut body: Map<String, Value>,
    ) -> Result<Map<String, Value>, KubeError> {
        Self::check_kind(res, &body)?;
        Self::check_namespace(res, ns, &mut body)?;
        match meta_str(&body, "name") {
            Some(n) if n == name => {}
            None | Some("") => {
                metadata_mut(&mut body).insert("name".into(), json!(name));
            }
            Some(n) => {
                return Err(KubeError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
        }
        let client_rv = meta_str(&body, "resourceVersion")
            .filter(|v| !v.is_empty())
            .map(String::from);
        let key = res.key(ns, name);
        for _ in 0..UPDATE_RETRIES {
            let current_kv = self
                .read_key(&key)
                .await?
                .ok_or_else(|| KubeError::not_found(res.plural, res.group, name))?;
            if let Some(rv) = &client_rv {
                if *rv != current_kv.mod_revision.to_string() {
                    return Err(KubeError::conflict(res.plural, res.group, name));
                }
            }
            let current = decode(res, &current_kv, current_kv.mod_revision)?;
            let mut next = body.clone();
            carry_system_metadata(&current, &mut next);
            let deleting = meta_str(&current, "deletionTimestamp").is_some();
            let no_finalizers = next
                .get("metadata")
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
            let txn = if deleting && no_finalizers {
                // The last finalizer is gone: the object goes now.
                TxnRequest {
                    compare: vec![mod_revision_is(&key, current_kv.mod_revision)],
                    success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                        key: key.clone().into_bytes(),
                        range_end: vec![],
                        prev_kv: false,
                    })],
                    failure: vec![],
                }
            } else {
                if encode(&next) == encode(&current) {
                    return Ok(current); // a no-op update keeps the resourceVersion
                }
                TxnRequest {
                    compare: vec![mod_revision_is(&key, current_kv.mod_revision)],
                    success: vec![put_op(&key, &next)],
                    failure: vec![],
                }
            };
            let r = self.commit(txn).await?;
            if r.succeeded {
                next.insert("kind".into(), json!(res.kind));
                next.insert("apiVersion".into(), json!(res.api_version()));
                let rv = if self.dry_run {
                    current_kv.mod_revision
                } else {
                    r.revision
                };
                metadata_mut(&mut next).insert("resourceVersion".into(), json!(rv.to_string()));
                return Ok(next);
            }
            if client_rv.is_some() {
                return Err(KubeError::conflict(res.plural, res.group, name));
            }
        }
        Err(KubeError::conflict(res.plural, res.group, name))
    }

    /// Deletes at once, or marks for deletion while finalizers remain. An `Orphan` or
    /// `Foreground` propagation adds its finalizer first (the garbage collector of
    /// `trireme controller` orphans or deletes the dependents, then removes it).
    /// Deleting a namespace deletes every object in it in the same transaction.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Map<String, Value>, KubeError> {
        let key = res.key(ns, name);
        for _ in 0..UPDATE_RETRIES {
            let kv = self
                .read_key(&key)
                .await?
                .ok_or_else(|| KubeError::not_found(res.plural, res.group, name))?;
            if opts
                .precondition_rv
                .as_ref()
                .is_some_and(|rv| *rv != kv.mod_revision.to_string())
            {
                return Err(KubeError::conflict(res.plural, res.group, name));
            }
            let mut obj = decode(res, &kv, kv.mod_revision)?;
            if let Some(want) = &opts.precondition_uid {
                let uid = meta_str(&obj, "uid").unwrap_or("");
                if uid != want {
                    return Err(KubeError::new(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}",
                            res.plural
                        ),
                    ));
                }
            }
            let current: Vec<Value> = obj
                .get("metadata")
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // As kube-apiserver: an explicit policy replaces the garbage collector's
            // finalizers with its own (none for Background); no policy keeps them.
            let mut finalizers = current.clone();
            if let (Some(policy), false) = (opts.propagation, res.plural == "namespaces") {
                let wanted = policy.finalizer();
                finalizers.retain(|f| {
                    (f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER)
                        || wanted.is_some_and(|w| f == w)
                });
                if let Some(w) = wanted.filter(|w| !finalizers.iter().any(|f| f == w)) {
                    finalizers.push(json!(w));
                }
            }
            let changed = finalizers != current;
            // Finalizers left: the object is only marked; it goes when the last one is
            // removed (`update`).
            let pending = !finalizers.is_empty();
            let txn = if pending {
                let deleting = meta_str(&obj, "deletionTimestamp").is_some();
                if deleting && !changed {
                    return Ok(obj);
                }
                let m = metadata_mut(&mut obj);
                m.insert("finalizers".into(), Value::Array(finalizers));
                if !deleting {
                    m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                TxnRequest {
                    compare: vec![mod_revision_is(&key, kv.mod_revision)],
                    success: vec![put_op(&key, &obj)],
                    failure: vec![],
                }
            } else {
                let mut success = Vec::new();
                if res.plural == "namespaces" {
                    for r in Registry::load(self.store)
                        .all
                        .iter()
                        .filter(|r| r.namespaced)
                    {
                        let prefix = r.prefix(Some(name));
                        success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                            range_end: prefix_end(prefix.as_bytes()),
                            key: prefix.into_bytes(),
                            prev_kv: false,
                        }));
                    }
                }
                success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                    key: key.clone().into_bytes(),
                    range_end: vec![],
                    prev_kv: false,
                }));
                TxnRequest {
                    compare: vec![mod_revision_is(&key, kv.mod_revision)],
                    success,
                    failure: vec![],
                }
            };
            let r = self.commit(txn).await?;
            if r.succeeded {
                if pending && !self.dry_run {
                    metadata_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(r.revision.to_string()));
                }
                return Ok(obj);
            }
            if opts.precondition_rv.is_some() {
                return Err(KubeError::conflict(res.plural, res.group, name));
            }
        }
        Err(KubeError::conflict(res.plural, res.group, name))
    }

    /// Creates a cluster-scoped object unless it exists (bootstrap of system namespaces).
    pub async fn ensure(&self, res: &Resource, body: Map<String, Value>) -> Result<(), KubeError> {
        match self.create(res, None, body).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What happens to an object's dependents (its `ownerReferences` point at it) when it
/// is deleted: Kubernetes' `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes the dependents after.
    Background,
    /// The dependents are deleted first; the object stays, marked, until they are gone.
    Foreground,
    /// The dependents lose their reference to the object and stay.
    Orphan,
}

/// The finalizer the garbage collector removes once it has deleted the dependents.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer the garbage collector removes once it has orphaned the dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";

impl Propagation {
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

/// A DELETE's options: the body's `DeleteOptions`, or, without a body, the query's
/// `propagationPolicy` / `orphanDependents` (as kube-apiserver reads them).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub precondition_rv: Option<String>,
    pub precondition_uid: Option<String>,
    /// None: the object's own garbage-collector finalizers decide.
    pub propagation: Option<Propagation>,
    /// The body's `dryRun: ["All"]` (kubectl sends it there; the query's `dryRun`
    /// is read with the other writes').
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(
        body: Option<&Map<String, Value>>,
        query: &HashMap<String, String>,
    ) -> Result<DeleteOptions, KubeError> {
        let type_error = |field: &str, want: &str| {
            KubeError::bad_request(format!("DeleteOptions.{field}: expected {want}"))
        };
        let field = |name: &str| body.and_then(|b| b.get(name)).filter(|v| !v.is_null());
        let (policy, orphan) = match body {
            Some(_) => (
                match field("propagationPolicy") {
                    Some(Value::String(p)) => Some(p.clone()),
                    Some(_) => return Err(type_error("propagationPolicy", "a string")),
                    None => None,
                },
                match field("orphanDependents") {
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(type_error("orphanDependents", "a boolean")),
                    None => None,
                },
            ),
            None => (
                query.get("propagationPolicy").cloned(),
                match query.get("orphanDependents").map(String::as_str) {
                    None => None,
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    Some(_) => return Err(type_error("orphanDependents", "true or false")),
                },
            ),
        };
        let invalid = |field: &str, value: &str, why: &str| {
            KubeError::invalid("DeleteOptions", "", field, value, why)
        };
        let propagation = match (policy.as_deref(), orphan) {
            (Some(p), Some(_)) => {
                return Err(invalid(
                    "propagationPolicy",
                    p,
                    "orphanDependents and deletionPropagation cannot be both set",
                ))
            }
            (None, None) => None,
            (Some("Background"), None) | (None, Some(false)) => Some(Propagation::Background),
            (Some("Foreground"), None) => Some(Propagation::Foreground),
            (Some("Orphan"), None) | (None, Some(true)) => Some(Propagation::Orphan),
            (Some(p), None) => {
                return Err(invalid(
                    "propagationPolicy",
                    p,
                    "supported values: \"Foreground\", \"Background\", \"Orphan\"",
                ))
            }
        };
        let preconditions = match field("preconditions") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(type_error("preconditions", "an object")),
        };
        let precondition = |name: &str| -> Result<Option<String>, KubeError> {
            match preconditions.and_then(|p| p.get(name)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(type_error(&format!("preconditions.{name}"), "a string")),
            }
        };
        let dry_run = match field("dryRun") {
            None => false,
            Some(Value::Array(v)) => {
                let mut all = false;
                for x in v {
                    match x.as_str() {
                        Some("All") => all = true,
                        Some(other) => {
                            return Err(KubeError::invalid(
                                "DeleteOptions",
                                "",
                                "dryRun",
                                other,
                                "supported values: \"All\"",
                            ))
                        }
                        None => return Err(type_error("dryRun", "a list of strings")),
                    }
                }
                all
            }
            Some(_) => return Err(type_error("dryRun", "a list of strings")),
        };
        Ok(DeleteOptions {
            precondition_rv: precondition("resourceVersion")?,
            precondition_uid: precondition("uid")?,
            propagation,
            dry_run,
        })
    }
}

/// Fields the server owns survive an update: uid, creation time, generation (bumped
/// when anything outside metadata and status changes), deletion marks.
fn carry_system_metadata(current: &Map<String, Value>, next: &mut Map<String, Value>) {
    let cur_meta = current
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let spec_changed = {
        let strip = |o: &Map<String, Value>| {
            let mut o = o.clone();
            for k in ["metadata", "status", "kind", "apiVersion"] {
                o.remove(k);
            }
            o
        };
        strip(current) != strip(next)
    };
    let m = metadata_mut(next);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
    ] {
        match cur_meta.get(f) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    let generation = cur_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    m.insert(
        "generation".into(),
        json!(if spec_changed {
            generation + 1
        } else {
            generation
        }),
    );
    m.remove("resourceVersion");
}

/// Per-kind defaults on create.
fn defaults_on_create(
    res: &Resource,
    name: &str,
    obj: &mut Map<String, Value>,
) -> Result<(), KubeError> {
    match res.plural {
        "namespaces" => {
            let m = metadata_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            obj.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            obj.insert("status".into(), json!({"phase": "Active"}));
        }
        "customresourcedefinitions" => {
            let spec = obj.get("spec").cloned().unwrap_or(json!({}));
            let names = spec.get("names").cloned().unwrap_or(json!({}));
            let (Some(group), Some(plural)) = (spec["group"].as_str(), names["plural"].as_str())
            else {
                return Err(KubeError::invalid(
                    res.kind,
                    name,
                    "spec",
                    "",
                    "spec.group and spec.names.plural are required",
                ));
            };
            if name != format!("{plural}.{group}") {
                return Err(KubeError::invalid(
                    res.kind,
                    name,
                    "metadata.name",
                    name,
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            let stored: Vec<Value> = spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            let now = meta::now_rfc3339();
            obj.insert(
                "status".into(),
                json!({
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                    "acceptedNames": names,
                    "storedVersions": stored,
                }),
            );
        }
        "secrets" => {
            use base64::Engine;
            if let Some(Value::Object(string_data)) = obj.remove("stringData") {
                let data = obj.entry("data").or_insert_with(|| json!({}));
                if let Value::Object(d) = data {
                    for (k, v) in string_data {
                        let s = v.as_str().ok_or_else(|| {
                            KubeError::bad_request("stringData values must be strings")
                        })?;
                        d.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(s)),
                        );
                    }
                }
            }
            obj.entry("type").or_insert_with(|| json!("Opaque"));
        }
        _ => {}
    }
    Ok(())
}
