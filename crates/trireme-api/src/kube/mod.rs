//! The Kubernetes-style REST API of a replica: discovery, get, list, create, update,
//! patch, delete and watch over the resources of [`resources::RESOURCES`], stored as
//! JSON under kube-apiserver's key layout with `resourceVersion` = the store's mod
//! revision. Errors are `metav1.Status` ([`status::KubeError`]).
//!
//! Layout: `resources` (the kind table), `objects` (store semantics), `watch`,
//! `discovery`, `table` (server-side Tables), `select` (selectors), `meta` (names,
//! uids, times), `status` (errors), `compact` (the periodic history compaction).

mod compact;
mod discovery;
mod meta;
mod objects;
mod protobuf;
mod resources;
mod select;
mod smp;
mod status;
mod table;
mod watch;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::ApiState;
pub use compact::{compact_once, run_compactor, CompactorState, COMPACT_REV_KEY};
use objects::{DeleteOptions, ListOptions, Objects};
use resources::{Registry, Resource};
pub use status::KubeError;

/// The kube routes, merged into the API router.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route(
            "/api",
            get(
                |ext: Option<axum::Extension<crate::ClientIdentity>>| async move {
                    authenticated(ext)?;
                    Ok::<_, KubeError>(discovery::api_versions())
                },
            ),
        )
        .route(
            "/apis",
            get(
                |State(s): State<ApiState>, ext: Option<axum::Extension<crate::ClientIdentity>>| async move {
                    authenticated(ext)?;
                    Ok::<_, KubeError>(discovery::api_groups(&Registry::load(&s.store)))
                },
            ),
        )
        .route("/api/{*rest}", any(handle))
        .route("/apis/{*rest}", any(handle))
        .route("/openapi/v2", get(|| async { discovery::openapi_v2() }))
}

fn authenticated(ext: Option<axum::Extension<crate::ClientIdentity>>) -> Result<(), KubeError> {
    match ext {
        Some(axum::Extension(i)) if !i.is_authenticated() => Err(KubeError::unauthorized()),
        _ => Ok(()),
    }
}

/// Creates the namespaces that exist from cluster start, once a leader is there.
pub async fn ensure_system_namespaces(store: &trireme_store::KvStore) -> Result<(), KubeError> {
    let objects = Objects::new(store);
    for name in resources::SYSTEM_NAMESPACES {
        let body = json!({"metadata": {"name": name}});
        let Value::Object(body) = body else { continue };
        objects.ensure(resources::namespaces(), body).await?;
    }
    Ok(())
}

async fn handle(State(s): State<ApiState>, req: Request) -> Response {
    match dispatch(s, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// What a path names.
struct Target {
    res: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Discovery(Response),
    Object(Target),
}

fn route(registry: &Registry, path: &str) -> Result<Route, KubeError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => {
            return Ok(Route::Discovery(
                discovery::api_group(registry, g)?.into_response(),
            ))
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(KubeError::no_route()),
    };
    if rest.is_empty() {
        return Ok(Route::Discovery(
            discovery::resource_list(registry, group, version)?.into_response(),
        ));
    }
    if let ["namespaces", ns, plural, more @ ..] = rest {
        if let Some(res) = registry
            .find(group, version, plural)
            .filter(|r| r.namespaced)
        {
            if more.len() > 2 {
                return Err(KubeError::no_route());
            }
            return Ok(Route::Object(Target {
                res,
                namespace: Some(ns.to_string()),
                name: more.first().map(|s| s.to_string()),
                sub: more.get(1).map(|s| s.to_string()),
            }));
        }
    }
    let res = registry
        .find(group, version, rest[0])
        .ok_or_else(KubeError::no_route)?;
    if rest.len() > 3 {
        return Err(KubeError::no_route());
    }
    Ok(Route::Object(Target {
        res,
        namespace: None,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, KubeError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        KubeError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(KubeError::bad_request(
            "the body of the request must be a JSON object",
        )),
    }
}

/// A create or update body: JSON, or the protobuf kubectl 1.32's `create` generators send
/// (decoded to the same JSON object, [`protobuf`]).
fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, KubeError> {
    match content_type(headers).as_str() {
        "" | "application/json" => json_object(body),
        protobuf::MEDIA_TYPE => protobuf::decode(body),
        _ => Err(KubeError::unsupported_media(
            "application/json, application/vnd.kubernetes.protobuf",
        )),
    }
}

/// A DELETE's body (a `DeleteOptions` object, or nothing) and query.
fn delete_options(body: &[u8], q: &HashMap<String, String>) -> Result<DeleteOptions, KubeError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(json_object(body)?)
    };
    DeleteOptions::parse(body.as_ref(), q)
}

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, KubeError> {
    Ok(ListOptions {
        labels: select::LabelSelector::parse(
            q.get("labelSelector").map(String::as_str).unwrap_or(""),
        )?,
        fields: select::FieldSelector::parse(
            q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        )?,
        limit: match q.get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| KubeError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        },
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn dispatch(s: ApiState, req: Request) -> Result<Response, KubeError> {
    let (parts, body) = req.into_parts();
    // Requests that did not come through `serve` (tests calling the router directly)
    // carry no identity and are let through; a TLS client without a certificate is not.
    if parts
        .extensions
        .get::<crate::ClientIdentity>()
        .is_some_and(|i| !i.is_authenticated())
    {
        return Err(KubeError::unauthorized());
    }
    let registry = Registry::load(&s.store);
    let target = match route(&registry, parts.uri.path())? {
        Route::Discovery(r) => return Ok(r),
        Route::Object(t) => t,
    };
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| KubeError::bad_request(format!("invalid query: {e}")))?;
    let body: Bytes = axum::body::to_bytes(body, s.max_request_bytes)
        .await
        .map_err(|_| KubeError::too_large())?;
    let headers = &parts.headers;
    let writes = parts.method != Method::GET;
    let objects = Objects {
        store: &s.store,
        // kubectl diff and --dry-run=server: checked as a write, never stored.
        dry_run: match q.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            _ if !writes => false,
            Some("All") => true,
            Some(v) => {
                return Err(KubeError::invalid(
                    "DryRun",
                    "",
                    "dryRun",
                    v,
                    "supported values: \"All\"",
                ))
            }
        },
    };
    let Target {
        res,
        namespace,
        name,
        sub,
    } = target;
    let ns = namespace.as_deref();
    if let Some(sub) = &sub {
        if sub != "status" {
            return Err(KubeError::no_route());
        }
    }
    let as_table = table::wants_table(&accept(headers));
    match (&parts.method, name) {
        (&Method::GET, None) => {
            let opts = list_options(&q)?;
            if q.get("watch").is_some_and(|w| w == "1" || w == "true") {
                let timeout = match q.get("timeoutSeconds") {
                    Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                        KubeError::bad_request(format!("invalid timeoutSeconds {t:?}"))
                    })?)),
                    None => None,
                };
                let how = watch::How {
                    timeout,
                    as_table,
                    bookmarks: q
                        .get("allowWatchBookmarks")
                        .is_some_and(|b| b == "true" || b == "1"),
                };
                return watch::watch(s.store.clone(), res, namespace, opts, how).await;
            }
            let listed = objects.list(res, ns, &opts).await?;
            if as_table {
                return Ok(Json(table::table(
                    res,
                    &listed.items,
                    listed.revision,
                    listed.continue_token.as_deref(),
                ))
                .into_response());
            }
            let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
            if let Some(c) = listed.continue_token {
                metadata["continue"] = json!(c);
            }
            Ok(Json(json!({
                "kind": format!("{}List", res.kind),
                "apiVersion": res.api_version(),
                "metadata": metadata,
                "items": listed.items,
            }))
            .into_response())
        }
        (&Method::GET, Some(name)) => {
            let obj = objects.get(res, ns, &name).await?;
            if as_table {
                let rv = meta::meta_str(&obj, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                return Ok(
                    Json(table::table(res, std::slice::from_ref(&obj), rv, None)).into_response(),
                );
            }
            Ok(Json(obj).into_response())
        }
        (&Method::POST, None) => {
            let obj = objects
                .create(res, ns, decode_body(headers, &body)?)
                .await?;
            Ok((StatusCode::CREATED, Json(obj)).into_response())
        }
        (&Method::PUT, Some(name)) => {
            let obj = objects
                .update(res, ns, &name, decode_body(headers, &body)?)
                .await?;
            Ok(Json(obj).into_response())
        }
        (&Method::PATCH, Some(name)) => patch(&objects, res, ns, &name, headers, &body).await,
        (&Method::DELETE, Some(name)) => {
            let opts = delete_options(&body, &q)?;
            let obj = objects
                .dry_run_also(opts.dry_run)
                .delete(res, ns, &name, &opts)
                .await?;
            Ok(Json(obj).into_response())
        }
        (&Method::DELETE, None) => {
            // A collection's preconditions would name no one object: only the
            // propagation applies.
            let given = delete_options(&body, &q)?;
            let delete = DeleteOptions {
                propagation: given.propagation,
                ..DeleteOptions::default()
            };
            let objects = objects.dry_run_also(given.dry_run);
            let opts = list_options(&q)?;
            let listed = objects.list(res, ns, &opts).await?;
            let mut deleted = Vec::new();
            for obj in listed.items {
                let name = meta::meta_str(&obj, "name").unwrap_or("").to_string();
                let obj_ns = meta::meta_str(&obj, "namespace").map(String::from);
                match objects.delete(res, obj_ns.as_deref(), &name, &delete).await {
                    Ok(o) => deleted.push(o),
                    Err(e) if e.reason == "NotFound" => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Json(json!({
                "kind": format!("{}List", res.kind),
                "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": s.store.revision().to_string()},
                "items": deleted,
            }))
            .into_response())
        }
        _ => Err(KubeError::method_not_allowed()),
    }
}

/// Removes strategic-merge-patch directives (`$patch`, `$setElementOrder/...`, ...) so
/// that none is ever stored. The maps then merge as a JSON merge patch, which is what
/// strategic merge does for kinds without merge-keyed lists (ConfigMap, Secret, Lease,
/// Namespace...).
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

async fn patch(
    objects: &Objects<'_>,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, KubeError> {
    let kind = content_type(headers);
    let current = match objects.get(res, ns, name).await {
        Ok(o) => Some(o),
        Err(e) if e.reason == "NotFound" && kind == "application/apply-patch+yaml" => None,
        Err(e) => return Err(e),
    };
    let Some(mut current) = current else {
        // Server-side apply of an absent object creates it.
        let mut doc = Value::Object(json_object(body)?);
        strip_directives(&mut doc);
        let Value::Object(mut obj) = doc else {
            return Err(KubeError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
        let created = objects.create(res, ns, obj).await?;
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    };
    meta::metadata_mut(&mut current).remove("resourceVersion");
    let mut doc = Value::Object(current);
    match kind.as_str() {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| KubeError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                KubeError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("the JSON patch could not be applied: {e}"))
            })?;
        }
        "application/strategic-merge-patch+json" if res.custom => {
            return Err(KubeError::unsupported_media(
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| KubeError::bad_request(format!("invalid patch: {e}")))?;
            if !p.is_object() {
                return Err(KubeError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            smp::apply(&mut doc, &p, res.kind).map_err(|e| {
                KubeError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("the strategic merge patch could not be applied: {e}"),
                )
            })?;
            // smp::apply stores no directive; this only guards that promise.
            strip_directives(&mut doc);
        }
        "application/merge-patch+json" | "application/apply-patch+yaml" => {
            let mut p: Value = serde_json::from_slice(body)
                .map_err(|e| KubeError::bad_request(format!("invalid patch: {e}")))?;
            if !p.is_object() {
                return Err(KubeError::bad_request("a merge patch must be a JSON object"));
            }
            strip_directives(&mut p);
            json_patch::merge(&mut doc, &p);
        }
        _ => {
            return Err(KubeError::unsupported_media(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml",
            ))
        }
    }
    let Value::Object(patched) = doc else {
        return Err(KubeError::bad_request(
            "the patched object is not a JSON object",
        ));
    };
    let obj = objects.update(res, ns, name, patched).await?;
    Ok(Json(obj).into_response())
}
