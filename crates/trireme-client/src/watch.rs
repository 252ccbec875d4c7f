//! Watches: `?watch=1` newline-delimited events, typed, resumed from the last seen
//! resourceVersion when the stream breaks or ends (on the next endpoint if need be).

use std::collections::VecDeque;

use futures_util::Stream;
use reqwest::{Method, Response};
use serde_json::Value;

use crate::error::{Error, Result, Status};
use crate::{http_error, Client, Req};

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// One object (a `metadata.name` field selector).
    pub name: Option<String>,
    pub label_selector: Option<String>,
    /// Start after this resourceVersion; None: the current objects first (as ADDED),
    /// then every change.
    pub resource_version: Option<String>,
    /// Ask the server to end the watch after this long; the watch then ends instead
    /// of resuming.
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: Value,
}

impl WatchEvent {
    pub fn resource_version(&self) -> Option<&str> {
        self.object
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
    }
}

/// One parsed line: an event, or the `ERROR` that ends the watch.
fn parse_line(line: &[u8]) -> Result<std::result::Result<WatchEvent, Status>> {
    let v: Value = serde_json::from_slice(line).map_err(|e| Error::Decode {
        endpoint: "watch".into(),
        message: format!("invalid event: {e}"),
    })?;
    let object = v.get("object").cloned().unwrap_or(Value::Null);
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("ADDED") => EventType::Added,
        Some("MODIFIED") => EventType::Modified,
        Some("DELETED") => EventType::Deleted,
        Some("BOOKMARK") => EventType::Bookmark,
        Some("ERROR") => return Ok(Err(Status::from_value(&object, 500))),
        other => {
            return Err(Error::Decode {
                endpoint: "watch".into(),
                message: format!("unknown event type {other:?}"),
            })
        }
    };
    Ok(Ok(WatchEvent { kind, object }))
}

/// A running watch. [`Watch::next`] gives events in order; when the connection
/// breaks or the server ends the stream, it re-opens from the last resourceVersion
/// (bounded attempts when nothing arrives in between). An `ERROR` event (e.g. 410
/// `Expired`) ends it with [`Error::Api`].
pub struct Watch {
    client: Client,
    path: String,
    params: WatchParams,
    resource_version: Option<String>,
    resp: Option<Response>,
    buf: Vec<u8>,
    pending: VecDeque<WatchEvent>,
    error: Option<Error>,
    done: bool,
    reopens_without_events: usize,
}

impl Watch {
    pub(crate) fn new(client: Client, path: String, params: WatchParams) -> Watch {
        Watch {
            client,
            path,
            resource_version: params.resource_version.clone(),
            params,
            resp: None,
            buf: Vec::new(),
            pending: VecDeque::new(),
            error: None,
            done: false,
            reopens_without_events: 0,
        }
    }

    /// The resourceVersion of the last event handed out (or the start one).
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    pub(crate) async fn open(&mut self) -> Result<()> {
        let mut req = Req::new(Method::GET, &self.path);
        req.streaming = true;
        req.query.push(("watch", "1".into()));
        req.query.push(("allowWatchBookmarks", "true".into()));
        if let Some(rv) = &self.resource_version {
            req.query.push(("resourceVersion", rv.clone()));
        }
        if let Some(l) = self
            .params
            .label_selector
            .as_ref()
            .filter(|l| !l.is_empty())
        {
            req.query.push(("labelSelector", l.clone()));
        }
        if let Some(n) = &self.params.name {
            req.query
                .push(("fieldSelector", format!("metadata.name={n}")));
        }
        if let Some(t) = self.params.timeout_seconds {
            req.query.push(("timeoutSeconds", t.to_string()));
        }
        let (endpoint, resp) = self.client.send(&req).await?;
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| http_error(endpoint, &e))?;
            return Err(Error::Api(Status::from_body(code, &body)));
        }
        self.buf.clear();
        self.resp = Some(resp);
        Ok(())
    }

    /// The next event; `Ok(None)` once the watch has ended (server timeout).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if let Some(rv) = ev.resource_version() {
                    self.resource_version = Some(rv.to_string());
                }
                return Ok(Some(ev));
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                return Err(e);
            }
            if self.done {
                return Ok(None);
            }
            let Some(resp) = self.resp.as_mut() else {
                if self.reopens_without_events >= self.client.inner.max_attempts {
                    self.done = true;
                    return Err(Error::Unavailable {
                        attempts: self.reopens_without_events,
                        last: "the watch kept ending without events".into(),
                    });
                }
                if self.reopens_without_events > 0 {
                    tokio::time::sleep(self.client.inner.backoff).await;
                }
                self.reopens_without_events += 1;
                if let Err(e) = self.open().await {
                    self.done = true;
                    return Err(e);
                }
                continue;
            };
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    self.buf.extend_from_slice(&bytes);
                    self.take_lines();
                }
                Ok(None) => {
                    self.resp = None;
                    if self.params.timeout_seconds.is_some() {
                        self.done = true;
                    }
                }
                Err(_) => self.resp = None,
            }
        }
    }

    /// Moves every complete line of the buffer to `pending` (or `error`).
    fn take_lines(&mut self) {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(&line) {
                Ok(Ok(ev)) => {
                    self.reopens_without_events = 0;
                    self.pending.push_back(ev);
                }
                Ok(Err(status)) => {
                    self.error = Some(Error::Api(status));
                    self.resp = None;
                    self.buf.clear();
                    return;
                }
                Err(e) => {
                    self.error = Some(e);
                    self.resp = None;
                    self.buf.clear();
                    return;
                }
            }
        }
    }

    /// The events as a `Stream`; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<WatchEvent>> {
        futures_util::stream::unfold(Some(self), |w| async move {
            let mut w = w?;
            match w.next().await {
                Ok(Some(ev)) => Some((Ok(ev), Some(w))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
