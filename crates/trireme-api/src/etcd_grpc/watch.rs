//! `etcdserverpb.Watch`: one bidirectional stream carries any number of watches.
//! Create, cancel and progress requests come in; `created`, events, progress and
//! `canceled` responses go out, each with its watch id.
//!
//! Every watch runs on the store's `Watcher` (every event after its start revision,
//! once, in order), in a task of its own that writes to the stream's one outgoing
//! channel. A watch's `created` response is sent before its task starts, so it comes
//! before the watch's events. Ids are the client's (`watch_id` > 0) or the next free
//! one from 0, as etcd numbers them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use trireme_mvcc::{Event, EventKind};
use trireme_store::{StoreError, Watcher};

use super::pb::etcdserverpb::{
    self as pb, watch_create_request::FilterType, watch_request, watch_server,
};
use super::pb::mvccpb;
use super::{exact_header, header, kv, signed};
use crate::ApiState;

pub(crate) struct WatchService {
    pub(crate) state: ApiState,
    pub(crate) progress_interval: Duration,
}

type Outbound = mpsc::Sender<Result<pb::WatchResponse, Status>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

/// Responses queued for one stream before a watch's task waits for the client.
const OUTBOUND_QUEUE: usize = 128;

/// One watch of a stream.
struct Watching {
    task: JoinHandle<()>,
    /// `Watcher::progress`: every event of this watch up to this revision has been
    /// queued on the stream (the task calls `next` again only after queuing).
    delivered: Arc<AtomicU64>,
}

/// What a create request asks, checked.
struct Create {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: u64,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
}

fn check(c: pb::WatchCreateRequest) -> Result<Create, String> {
    if c.key.is_empty() {
        return Err("etcdserver: key is not provided".into());
    }
    let start_revision = u64::try_from(c.start_revision)
        .map_err(|_| "start_revision must not be negative".to_string())?;
    let mut no_put = false;
    let mut no_delete = false;
    for f in &c.filters {
        match FilterType::try_from(*f) {
            Ok(FilterType::Noput) => no_put = true,
            Ok(FilterType::Nodelete) => no_delete = true,
            Err(_) => return Err(format!("unknown watch filter {f}")),
        }
    }
    Ok(Create {
        key: c.key,
        range_end: c.range_end,
        start_revision,
        prev_kv: c.prev_kv,
        progress_notify: c.progress_notify,
        no_put,
        no_delete,
    })
}

fn response(s: &ApiState, revision: u64, watch_id: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(header(s, revision)),
        watch_id,
        ..pb::WatchResponse::default()
    }
}

/// A progress answer: no events, and the header's revision exactly `revision` (not
/// the store's current one when it is 0).
fn progress(s: &ApiState, revision: u64, watch_id: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(exact_header(s, revision)),
        watch_id,
        ..pb::WatchResponse::default()
    }
}

fn event(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
    }
}

#[tonic::async_trait]
impl watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(serve_stream(
            self.state.clone(),
            self.progress_interval,
            inbound,
            tx,
        ));
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// Reads one stream's requests until the client closes its side, then keeps its
/// watches until the client goes away, as etcd does.
async fn serve_stream(
    s: ApiState,
    progress_interval: Duration,
    mut inbound: Streaming<pb::WatchRequest>,
    tx: Outbound,
) {
    let mut watches: HashMap<i64, Watching> = HashMap::new();
    let mut next_id: i64 = 0;
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = tx.closed() => break,
        };
        let Ok(Some(req)) = msg else {
            // Half-closed or broken: no more requests. Watches stay until the client
            // stops reading.
            tx.closed().await;
            break;
        };
        watches.retain(|_, w| !w.task.is_finished());
        let reply = match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => {
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id += 1;
                    next_id - 1
                };
                create(&s, &mut watches, id, c, progress_interval, &tx).await
            }
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                // An unknown id gets no answer (etcd's behaviour).
                match watches.remove(&c.watch_id) {
                    Some(w) => {
                        // Stopped for good before `canceled` is queued: no event of
                        // it can follow.
                        w.task.abort();
                        let _ = w.task.await;
                        let mut r = response(&s, 0, c.watch_id);
                        r.canceled = true;
                        Some(r)
                    }
                    None => None,
                }
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // For the whole stream (watch id -1): the revision every watch on it
                // has delivered up to.
                let revision = watches
                    .values()
                    .filter(|w| !w.task.is_finished())
                    .map(|w| w.delivered.load(Ordering::Acquire))
                    .min()
                    .unwrap_or_else(|| s.store.revision());
                Some(progress(&s, revision, -1))
            }
            None => None,
        };
        if let Some(r) = reply {
            if tx.send(Ok(r)).await.is_err() {
                break;
            }
        }
    }
    for w in watches.values() {
        w.task.abort();
    }
}

/// Starts one watch; the answer to send when it could not start.
async fn create(
    s: &ApiState,
    watches: &mut HashMap<i64, Watching>,
    id: i64,
    c: pb::WatchCreateRequest,
    progress_interval: Duration,
    tx: &Outbound,
) -> Option<pb::WatchResponse> {
    let refused = |reason: String| {
        let mut r = response(s, 0, id);
        r.created = true;
        r.canceled = true;
        r.cancel_reason = reason;
        Some(r)
    };
    if id < 0 {
        // -1 is the stream-wide id of progress answers.
        return refused("watch_id must not be negative".into());
    }
    if watches.contains_key(&id) {
        return refused("etcdserver: duplicate watch ID".into());
    }
    let c = match check(c) {
        Ok(c) => c,
        Err(reason) => return refused(reason),
    };
    let watcher = s.store.watch(
        c.key.clone(),
        c.range_end.clone(),
        c.start_revision,
        c.prev_kv,
    );
    let delivered = watcher.progress();
    let mut created = response(s, 0, id);
    created.created = true;
    if tx.send(Ok(created)).await.is_err() {
        return None;
    }
    let task = tokio::spawn(run_watch(
        s.clone(),
        id,
        watcher,
        c,
        progress_interval,
        tx.clone(),
    ));
    watches.insert(id, Watching { task, delivered });
    None
}

async fn run_watch(
    s: ApiState,
    id: i64,
    mut w: Watcher,
    c: Create,
    progress_interval: Duration,
    tx: Outbound,
) {
    let delivered = w.progress();
    loop {
        let next = if c.progress_notify {
            match tokio::time::timeout(progress_interval, w.next()).await {
                Ok(n) => n,
                Err(_) => {
                    // Nothing for a while: tell the client how far this watch is.
                    let r = progress(&s, delivered.load(Ordering::Acquire), id);
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        } else {
            w.next().await
        };
        match next {
            Ok(events) => {
                let revision = events.last().map_or(0, |e| e.kv.mod_revision);
                let events: Vec<_> = events
                    .into_iter()
                    .filter(|e| match e.kind {
                        EventKind::Put => !c.no_put,
                        EventKind::Delete => !c.no_delete,
                    })
                    .map(event)
                    .collect();
                if !events.is_empty() {
                    let mut r = response(&s, revision, id);
                    r.events = events;
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
            Err(StoreError::Compacted { compact_revision }) => {
                let mut r = response(&s, 0, id);
                r.canceled = true;
                r.compact_revision = signed(compact_revision);
                r.cancel_reason = "etcdserver: mvcc: required revision has been compacted".into();
                let _ = tx.send(Ok(r)).await;
                return;
            }
            Err(e) => {
                // This replica is stopping (or cannot read its store): end the whole
                // stream as unavailable, so that the client resumes its watches on
                // another replica instead of taking them as canceled.
                tracing::warn!(watch_id = id, "watch stream ended: {e}");
                let _ = tx
                    .send(Err(Status::unavailable("etcdserver: server stopped")))
                    .await;
                return;
            }
        }
    }
}
