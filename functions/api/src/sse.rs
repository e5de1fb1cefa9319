//! `GET /v1/documents/{id}/events` with `Accept: text/event-stream`: the audit trail so
//! far, then each new event as it is recorded, until the document settles or the
//! stream reaches its time limit (variable `stream_max_ms`, kept below the
//! component's timeout); clients reconnect with `Last-Event-ID` semantics by
//! re-reading the log.
//!
//! The stream follows the document's life in order. `status` logs each topic from its
//! own subscription, so an event can be logged before the one that caused it; the
//! stream therefore sends the trail in event-time order ([`documents::trail`]) and
//! holds back what could still be overtaken: nothing goes out before the `uploaded`
//! event is logged, and the settling event waits until the record has folded
//! everything that precedes it. Each hold ends once the held event is
//! `cause_wait_ms` old (variable, default 5 s), so a cause that never arrives
//! (dead-lettered) delays the stream but never stalls it.

use std::collections::HashSet;

use futures::SinkExt as _;
use spin_sdk::http::{Fields, OutgoingResponse, ResponseOutparam};
use troupe_guest::documents::{self, Document, Status};
use troupe_guest::{Event, age_ms, config_u64, events, now_ms, stages};

/// How often the log is polled for new events.
const POLL_MS: u64 = 200;

/// Default of `cause_wait_ms`: how long an event is held back waiting for the events
/// that precede it.
const CAUSE_WAIT_MS: u64 = 5_000;

pub async fn stream(out: ResponseOutparam, tenant: &str, id: &str) {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"text/event-stream".to_vec()),
        ("cache-control".to_owned(), b"no-cache".to_vec()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(200);
    let mut body = response.take_body();
    out.set(response);
    let deadline = now_ms() + config_u64("stream_max_ms", 55_000);
    let hold = Hold {
        wait_ms: config_u64("cause_wait_ms", CAUSE_WAIT_MS),
    };
    let mut sent = HashSet::new();
    loop {
        // The record before the trail: an event is logged before it is folded into
        // the record, so the trail read next holds everything the record reflects.
        let record = documents::load(tenant, id).ok().flatten().map(|(d, _)| d);
        let folded_all = record.as_ref().is_some_and(folded_all);
        let trail = match documents::trail(tenant, id) {
            Ok(trail) => trail,
            Err(e) => {
                let _ = body
                    .send(
                        format!("event: error\ndata: {}\n\n", troupe_guest::describe(&e))
                            .into_bytes(),
                    )
                    .await;
                return;
            }
        };
        for event in hold.releasable(&trail, &sent, folded_all) {
            let data = serde_json::to_string(&crate::cloud_event(event)).unwrap_or_default();
            let frame = format!("id: {}\nevent: {}\ndata: {data}\n\n", event.id, event.type_);
            if body.send(frame.into_bytes()).await.is_err() {
                return; // the client left
            }
            sent.insert(event.id.clone());
        }
        // Settled, and its settling event sent (the record had folded everything
        // before it, or the wait for that ran out): nothing more is coming.
        // Deleted and forgotten meanwhile: nothing more is coming either.
        let gone =
            record.is_none() && troupe_guest::retention::is_gone(tenant, id).unwrap_or(false);
        let settled = record.is_some_and(|d| d.status.settled());
        let ended =
            settled && trail.iter().all(|e| sent.contains(&e.id)) && trail.iter().any(settles);
        if ended || gone || now_ms() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
}

/// Whether the record has folded every event that precedes its settling event: an
/// indexed document has its extraction, its inspection and all its batches (`status`
/// may fold `indexed` first, as each arrives on its own subscription).
fn folded_all(doc: &Document) -> bool {
    doc.status.settled()
        && (doc.status != Status::Indexed
            || (doc.chunks.is_some()
                && doc.sha256.is_some()
                && doc.progress.total > 0
                && doc.progress.done >= doc.progress.total))
}

/// Whether `event` settles a document.
fn settles(event: &Event) -> bool {
    events::stage(stages::topic_of(event)) == events::stage(events::INDEXED)
}

/// The stream's hold-back rule.
struct Hold {
    wait_ms: u64,
}

impl Hold {
    /// Whether `event` has been held long enough (an event without a readable time
    /// cannot be dated, so it is never held).
    fn waited(&self, event: &Event) -> bool {
        age_ms(event).is_none_or(|age| age >= self.wait_ms)
    }

    /// The unsent events of `trail` that can go out now, in order: none until the
    /// `uploaded` event is logged, and none from a settling event on until the record
    /// has [`folded_all`] — unless the held event has waited long enough.
    fn releasable<'a>(
        &self,
        trail: &'a [Event],
        sent: &HashSet<String>,
        folded_all: bool,
    ) -> Vec<&'a Event> {
        let started = trail
            .iter()
            .any(|e| stages::topic_of(e) == events::UPLOADED)
            || trail.first().is_some_and(|e| self.waited(e));
        if !started {
            return Vec::new();
        }
        let mut out = Vec::new();
        for event in trail.iter().filter(|e| !sent.contains(&e.id)) {
            if settles(event) && !folded_all && !self.waited(event) {
                break; // what follows waits too, so the order holds
            }
            out.push(event);
        }
        out
    }
}
