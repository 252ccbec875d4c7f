//! `?watch=1`: newline-delimited `{"type": ..., "object": ...}` events from the store's
//! history, every event after the start revision once and in order. A start below the
//! compaction point is HTTP 200 with one `ERROR` event carrying a 410 `Expired` Status,
//! as kube-apiserver answers; the stream ends at `timeoutSeconds`. With
//! `allowWatchBookmarks=true`, a `BOOKMARK` (the kind, and only a `resourceVersion`:
//! everything up to it was sent) comes every minute and just before the timeout ends
//! the stream, so a client resumes from there instead of an older revision the
//! compactor may have removed (client-go's informers ask for them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use trireme_mvcc::{prefix_end, Event, EventKind};
use trireme_store::{KvStore, StoreError};

use super::objects::{decode, ListOptions, Objects};
use super::resources::Resource;
use super::status::KubeError;
use super::table::table;

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Emitter {
    res: &'static Resource,
    opts: ListOptions,
    as_table: bool,
}

impl Emitter {
    fn matches(&self, obj: &Map<String, Value>) -> bool {
        self.opts.labels.matches(obj) && self.opts.fields.matches(obj)
    }

    fn render(&self, kind: &str, obj: Map<String, Value>, revision: u64) -> Bytes {
        let object = if self.as_table {
            table(self.res, std::slice::from_ref(&obj), revision, None)
        } else {
            Value::Object(obj)
        };
        line(kind, object)
    }

    /// The watch event for one store event, if the selectors let it through.
    fn event(&self, e: &Event) -> Result<Option<Bytes>, KubeError> {
        let revision = e.kv.mod_revision;
        let old = match &e.prev_kv {
            Some(p) => Some(decode(self.res, p, p.mod_revision)?),
            None => None,
        };
        let old_match = old.as_ref().is_some_and(|o| self.matches(o));
        match e.kind {
            EventKind::Put => {
                let new = decode(self.res, &e.kv, revision)?;
                if self.matches(&new) {
                    let kind = if e.kv.create_revision == e.kv.mod_revision || !old_match {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    };
                    Ok(Some(self.render(kind, new, revision)))
                } else if old_match {
                    Ok(Some(self.render("DELETED", new, revision)))
                } else {
                    Ok(None)
                }
            }
            EventKind::Delete => match old {
                Some(mut o) if old_match => {
                    super::meta::metadata_mut(&mut o)
                        .insert("resourceVersion".into(), json!(revision.to_string()));
                    Ok(Some(self.render("DELETED", o, revision)))
                }
                _ => Ok(None),
            },
        }
    }
}

/// How often a watch that allows them gets a BOOKMARK (kube-apiserver: about a minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A watch's options besides its selectors and start.
pub struct How {
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// The events' objects as Table rows.
    pub as_table: bool,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
}

/// A BOOKMARK event: the kind and the revision up to which everything was sent.
fn bookmark(res: &Resource, revision: u64) -> Bytes {
    line(
        "BOOKMARK",
        json!({
            "kind": res.kind,
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }),
    )
}

pub async fn watch(
    store: Arc<KvStore>,
    res: &'static Resource,
    ns: Option<String>,
    opts: ListOptions,
    how: How,
) -> Result<Response, KubeError> {
    // A timeout past what `Instant` holds is no deadline.
    let deadline = how.timeout.and_then(|t| Instant::now().checked_add(t));
    let as_table = how.as_table;
    // Table rows have no place for one; kubectl does not ask for them.
    let bookmarks = how.bookmarks && !as_table;
    let mut initial = Vec::new();
    let start = match opts.resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let listed = Objects::new(&store)
                .list(
                    res,
                    ns.as_deref(),
                    &ListOptions {
                        labels: opts.labels.clone(),
                        fields: opts.fields.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            initial = listed
                .items
                .into_iter()
                .map(|o| (o, listed.revision))
                .collect();
            listed.revision + 1
        }
        Some(rv) => {
            let rv: u64 = rv
                .parse()
                .map_err(|_| KubeError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            // A revision this replica has not applied yet: wait a little (a follower
            // behind the leader), then give up as kube-apiserver does.
            let wait_until = Instant::now() + Duration::from_secs(3);
            while store.revision() < rv && Instant::now() < wait_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if store.revision() < rv {
                return Err(StoreError::FutureRevision {
                    current: store.revision(),
                }
                .into());
            }
            rv + 1
        }
    };
    let prefix = res.prefix(ns.as_deref());
    let mut watcher = store.watch(
        prefix.clone().into_bytes(),
        prefix_end(prefix.as_bytes()),
        start,
        true,
    );
    let emitter = Emitter {
        res,
        opts,
        as_table,
    };
    let progress = watcher.progress();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for (obj, rev) in initial {
            if tx.send(emitter.render("ADDED", obj, rev)).await.is_err() {
                return;
            }
        }
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            let end: Option<tokio::time::Instant> = deadline.map(Into::into);
            let wake = match (bookmarks, end) {
                (true, Some(e)) => Some(e.min(next_bookmark)),
                (true, None) => Some(next_bookmark),
                (false, e) => e,
            };
            let next = match wake {
                // `Watcher::next` only waits between whole reads: cancelling it loses
                // nothing.
                Some(w) => match tokio::time::timeout_at(w, watcher.next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        if bookmarks {
                            // Everything up to the watcher's progress was sent above.
                            let rev = progress.load(std::sync::atomic::Ordering::Acquire);
                            if tx.send(bookmark(res, rev)).await.is_err() {
                                return;
                            }
                            next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                        }
                        if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
                            return; // timeoutSeconds: end the stream
                        }
                        continue;
                    }
                },
                None => watcher.next().await,
            };
            match next {
                Ok(events) => {
                    for e in &events {
                        match emitter.event(e) {
                            Ok(Some(b)) => {
                                if tx.send(b).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(err) => {
                                let _ = tx.send(line("ERROR", err.status())).await;
                                return;
                            }
                        }
                    }
                }
                Err(StoreError::Compacted { compact_revision }) => {
                    let err = KubeError::expired(format!(
                        "too old resource version: {} ({compact_revision})",
                        start - 1
                    ));
                    let _ = tx.send(line("ERROR", err.status())).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(line("ERROR", KubeError::from(e).status())).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| KubeError::bad_request(e.to_string()))
}
