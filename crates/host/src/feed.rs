//! `GET /v1/events`: one live stream of everything logged about a tenant's
//! documents, served by the host itself, so a watcher holds no function slot.
//!
//! Each tenant with someone watching has one reader that reads the tenant's feed from
//! the state store ([`State::read_feed`]) and hands every entry to all its watchers
//! over a broadcast channel: 200 watchers cost one read per poll, not 200. A watcher
//! first replays what it missed (after its `Last-Event-ID`) from the store, then
//! follows the broadcast; each broadcast entry names the position the reader read
//! on from, so a watcher that fell behind (it joined while the reader was between
//! reads, or its channel overflowed) reads the gap from the store instead of
//! missing it. Nothing is sent twice: a watcher skips what is at or below the last
//! position it sent.
//!
//! A reader reads when an event is appended through this host (the state store is
//! wrapped in [`Appended`], which wakes the readers; reads are at least
//! [`Settings::min_gap`] apart, so a burst of appends is one read) and otherwise every
//! [`Settings::poll`], for what other processes sharing the store appended.
//!
//! Frames: `id: <position>`, `event: <event type>`, `data: <CloudEvent JSON>`; a
//! stream opened without `Last-Event-ID` starts at the feed's end with a `ready` frame
//! carrying that position. A comment every [`Settings::keep_alive`] keeps proxies from closing
//! an idle stream, and the credential is checked again each time, so a revoked key
//! stops watching within seconds. Streams end after [`Settings::max_age`] (the client
//! reconnects with `Last-Event-ID`) and when the host shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use troupe_core::{Entry, Event, FeedEntry, State};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::Shared;

/// The path.
pub const PATH: &str = "/v1/events";

/// Entries read from the store at a time.
const PAGE: usize = 256;

/// Limits of the event streams.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Streams open at once on this host; past it a request is answered 503. 0: this
    /// deployment serves no streams (AWS Lambda answers one whole response per
    /// request), and the route answers 501.
    pub max_streams: usize,
    /// How long one stream lasts before the host ends it (the client reconnects).
    pub max_age: Duration,
    /// How often a watched tenant's feed is read for entries that other processes
    /// appended (this host's own appends wake its readers at once).
    pub poll: Duration,
    /// The least time between two reads of a tenant's feed.
    pub min_gap: Duration,
    /// How often a comment goes out on a stream, and its credential is checked again.
    pub keep_alive: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_age: Duration::from_secs(30 * 60),
            poll: Duration::from_millis(250),
            min_gap: Duration::from_millis(20),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// What a tenant's reader broadcasts: an entry, and the position the reader read on
/// from to find it (every entry between the two went out before this one).
#[derive(Debug, Clone)]
struct Read {
    from: u64,
    entry: Arc<FeedEntry>,
}

/// The event streams of one host.
#[derive(Debug)]
pub struct Feeds {
    settings: Settings,
    open: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, broadcast::Sender<Read>>>,
    closing: CancellationToken,
    appended: Arc<Wakers>,
}

/// One wake-up per tenant whose feed is read: an append wakes only the reader of the
/// tenant it was appended for.
#[derive(Debug, Default)]
pub struct Wakers(Mutex<HashMap<String, Arc<Notify>>>);

impl Wakers {
    /// `tenant`'s wake-up, made on first use (one per tenant ever watched).
    fn of(&self, tenant: &str) -> Arc<Notify> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(tenant.to_owned()).or_default().clone()
    }

    /// Wakes `tenant`'s reader, if one ever read.
    fn wake(&self, tenant: &str) {
        let waker = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        if let Some(w) = waker {
            w.notify_waiters();
        }
    }
}

impl Feeds {
    /// No streams yet; `appended` is what [`Appended`] wakes.
    pub fn new(settings: Settings, appended: Arc<Wakers>) -> Self {
        Self {
            settings,
            open: Arc::new(Semaphore::new(settings.max_streams)),
            tenants: Mutex::new(HashMap::new()),
            closing: CancellationToken::new(),
            appended,
        }
    }

    /// Ends every stream (the host is shutting down) and refuses new ones.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.settings.max_streams - self.open.available_permits()
    }

    /// A receiver of `tenant`'s reads, starting the tenant's reader if nobody watched.
    fn watch(&self, shared: &Arc<Shared>, tenant: &str) -> broadcast::Receiver<Read> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tenants.get(tenant) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(PAGE * 4);
        tenants.insert(tenant.to_owned(), tx.clone());
        tokio::spawn(read(shared.clone(), tenant.to_owned(), tx));
        rx
    }
}

/// A tenant's reader: reads the feed on from its end and broadcasts what it finds,
/// until nobody watches.
async fn read(shared: Arc<Shared>, tenant: String, tx: broadcast::Sender<Read>) {
    let feeds = &shared.feeds;
    let state = &shared.backends.state;
    let mut after = None;
    let waker = feeds.appended.of(&tenant);
    loop {
        // Registered before the read: an append committed while it runs still wakes
        // the next wait.
        let appended = waker.notified();
        let mut appended = std::pin::pin!(appended);
        appended.as_mut().enable();
        let read_at = tokio::time::Instant::now();
        if tx.receiver_count() == 0 {
            let mut tenants = feeds.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked again under the lock: a watcher may have just subscribed.
            if tx.receiver_count() == 0 {
                tenants.remove(&tenant);
                return;
            }
        }
        let from = match after {
            Some(p) => Ok(p),
            None => state.feed_head(&tenant).await,
        };
        let page = match from {
            Ok(from) => state
                .read_feed(&tenant, from, PAGE)
                .await
                .map(|page| (from, page)),
            Err(e) => Err(e),
        };
        let full = match page {
            Ok((mut from, page)) => {
                let full = page.len() == PAGE;
                for entry in page {
                    let position = entry.position;
                    let _ = tx.send(Read {
                        from,
                        entry: Arc::new(entry),
                    });
                    from = position;
                }
                after = Some(from);
                full
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "could not read the event feed; retrying");
                false
            }
        };
        if !full {
            tokio::select! {
                () = tokio::time::sleep(feeds.settings.poll) => {}
                () = appended => {
                    tokio::time::sleep_until(read_at + feeds.settings.min_gap).await;
                }
                () = feeds.closing.cancelled() => return,
            }
        }
    }
}

/// The host's state store, telling the feed readers when an event was appended.
pub struct Appended {
    inner: Arc<dyn State>,
    appended: Arc<Wakers>,
}

impl Appended {
    /// `inner`, waking the reader of each append's tenant.
    pub fn new(inner: Arc<dyn State>, appended: Arc<Wakers>) -> Self {
        Self { inner, appended }
    }
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended").finish_non_exhaustive()
    }
}

#[async_trait]
impl State for Appended {
    async fn get(&self, key: &str) -> troupe_core::Result<Option<Entry>> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> troupe_core::Result<u64> {
        self.inner.put(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<u64>) -> troupe_core::Result<bool> {
        self.inner.delete(key, expected).await
    }
    async fn list(&self, prefix: &str) -> troupe_core::Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn append_event(&self, subject: &str, event: &Event) -> troupe_core::Result<u64> {
        let appended = self.inner.append_event(subject, event).await;
        if let (Ok(_), Some(tenant)) = (&appended, troupe_core::state::feed_tenant(subject)) {
            self.appended.wake(tenant);
        }
        appended
    }
    async fn read_events(&self, subject: &str) -> troupe_core::Result<Vec<Event>> {
        self.inner.read_events(subject).await
    }
    async fn delete_events(&self, subject: &str) -> troupe_core::Result<u64> {
        self.inner.delete_events(subject).await
    }
    async fn read_feed(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> troupe_core::Result<Vec<FeedEntry>> {
        self.inner.read_feed(tenant, after, limit).await
    }
    async fn feed_head(&self, tenant: &str) -> troupe_core::Result<u64> {
        self.inner.feed_head(tenant).await
    }
    async fn health(&self) -> troupe_core::Result<()> {
        self.inner.health().await
    }
}

/// Answers `GET /v1/events` for a request already admitted for `tenant`.
pub fn respond(
    shared: &Arc<Shared>,
    tenant: &str,
    headers: &HeaderMap,
) -> Response<HyperOutgoingBody> {
    let feeds = &shared.feeds;
    if feeds.settings.max_streams == 0 {
        return crate::server::error(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this deployment serves no event streams; follow documents with GET /v1/documents/{id} or a webhook",
        );
    }
    if feeds.closing.is_cancelled() {
        return crate::server::busy("the server is shutting down; reconnect shortly");
    }
    let Ok(permit) = feeds.open.clone().try_acquire_owned() else {
        return crate::server::busy(
            "too many event streams are open on this server; retry shortly",
        );
    };
    let resume = match last_event_id(headers) {
        Ok(p) => p,
        Err(message) => {
            return crate::server::error(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                &message,
            );
        }
    };
    let rx = feeds.watch(shared, tenant);
    let (out, frames) = mpsc::channel::<Bytes>(16);
    let watcher = Watcher {
        shared: shared.clone(),
        tenant: tenant.to_owned(),
        credential: credential_of(headers),
        out,
        sent: 0,
        _permit: permit,
    };
    tokio::spawn(watcher.run(rx, resume));
    let mut frames = frames;
    let body = StreamBody::new(
        futures::stream::poll_fn(move |cx| frames.poll_recv(cx))
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    )
    .map_err(|never: Infallible| match never {})
    .boxed_unsync();
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    // Tells buffering proxies (nginx) to pass frames on at once.
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    resp
}

/// The position to resume after, from `Last-Event-ID`; `None` without one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!(
            "Last-Event-ID must be the `id` of a frame this stream sent (a number), got {text:?}"
        )
    })
}

/// `text` without line breaks, which would end an SSE field early (an event type is a
/// guest's to choose).
fn one_line(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Only the request's `Authorization`, to check the credential again later.
fn credential_of(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        kept.insert(http::header::AUTHORIZATION, v.clone());
    }
    kept
}

/// Why a stream ended early.
enum End {
    /// The client left, or the host is closing.
    Gone,
    /// The store failed.
    Store(troupe_core::Error),
}

/// One open stream.
struct Watcher {
    shared: Arc<Shared>,
    tenant: String,
    credential: HeaderMap,
    out: mpsc::Sender<Bytes>,
    /// The last position sent.
    sent: u64,
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    async fn run(mut self, mut rx: broadcast::Receiver<Read>, resume: Option<u64>) {
        let shared = self.shared.clone();
        let feeds = &shared.feeds;
        let ended = tokio::time::sleep(feeds.settings.max_age);
        tokio::pin!(ended);
        let start = match resume {
            Some(p) => {
                self.sent = p;
                self.catch_up().await
            }
            None => match self.shared.backends.state.feed_head(&self.tenant).await {
                Ok(head) => {
                    self.sent = head;
                    self.send(format!("id: {head}\nevent: ready\ndata: {{}}\n\n"))
                        .await
                }
                Err(e) => Err(End::Store(e)),
            },
        };
        if let Err(end) = start {
            return self.finish(end).await;
        }
        let mut keep_alive = tokio::time::interval(feeds.settings.keep_alive);
        keep_alive.tick().await;
        loop {
            let step = tokio::select! {
                read = rx.recv() => match read {
                    Ok(read) => self.forward(read).await,
                    // Fell behind the broadcast: the store has what was dropped.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => Err(End::Gone),
                },
                _ = keep_alive.tick() => self.keep_alive().await,
                () = &mut ended => Err(End::Gone),
                () = feeds.closing.cancelled() => Err(End::Gone),
            };
            if let Err(end) = step {
                return self.finish(end).await;
            }
        }
    }

    /// Sends `read`'s entry, after reading from the store what lies between the last
    /// position sent and where the reader read on from.
    async fn forward(&mut self, read: Read) -> Result<(), End> {
        if read.from > self.sent {
            self.catch_up().await?;
        }
        if read.entry.position > self.sent {
            self.send_entry(&read.entry).await?;
        }
        Ok(())
    }

    /// Sends everything in the store after the last position sent.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let page = self
                .shared
                .backends
                .state
                .read_feed(&self.tenant, self.sent, PAGE)
                .await
                .map_err(End::Store)?;
            let full = page.len() == PAGE;
            for entry in &page {
                self.send_entry(entry).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send_entry(&mut self, entry: &FeedEntry) -> Result<(), End> {
        let data = String::from_utf8_lossy(&entry.event.to_json()).into_owned();
        self.send(format!(
            "id: {}\nevent: {}\ndata: {data}\n\n",
            entry.position,
            one_line(&entry.event.ty)
        ))
        .await?;
        self.sent = entry.position;
        Ok(())
    }

    /// A comment, and the credential checked again: a revoked key, or one that lost
    /// its scope, stops watching.
    async fn keep_alive(&mut self) -> Result<(), End> {
        match self
            .shared
            .auth
            .admit(&Method::GET, PATH, &self.credential)
            .await
        {
            Err(r) if matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                let body = serde_json::json!({"error": {"code": r.code, "message": r.message}});
                let _ = self.send(format!("event: error\ndata: {body}\n\n")).await;
                Err(End::Gone)
            }
            _ => self.send(": keep-alive\n\n".to_owned()).await,
        }
    }

    async fn send(&self, frame: String) -> Result<(), End> {
        tokio::select! {
            sent = self.out.send(Bytes::from(frame)) => sent.map_err(|_| End::Gone),
            () = self.shared.feeds.closing.cancelled() => Err(End::Gone),
        }
    }

    async fn finish(self, end: End) {
        if let End::Store(e) = end {
            tracing::warn!(tenant = %self.tenant, error = %e, "event stream ended: the store failed");
            let body = serde_json::json!({"error": {"code": "unavailable", "message": "the event store cannot be read right now; reconnect with Last-Event-ID"}});
            let _ = self.send(format!("event: error\ndata: {body}\n\n")).await;
        }
    }
}
