//! `GET /v1/documents/{id}/events` with `Accept: text/event-stream`: the audit trail so
//! far, then each new event as it is recorded, until the document settles or the
//! stream reaches its time limit (variable `stream_max_ms`, kept below the
//! component's timeout); clients reconnect with `Last-Event-ID` semantics by
//! re-reading the log.
//!
//! The stream follows the document's life in order. `status` logs each topic from its
//! own subscription, so an event can be logged before the one that caused it; the
//! stream therefore sends the trail in event-time order and holds back what could
//! still be overtaken: nothing goes out before the `uploaded` event is logged, and the
//! settling event waits until the record has counted every batch. Each wait ends after
//! [`CAUSE_WAIT_MS`], so a cause that never arrives (dead-lettered) delays the stream
//! but never stalls it.

use std::collections::HashSet;

use futures::SinkExt as _;
use spin_sdk::http::{Fields, OutgoingResponse, ResponseOutparam};
use troupe_guest::documents::{self, Status};
use troupe_guest::{Event, age_ms, config_u64, events, now_ms};

/// How often the log is polled for new events.
const POLL_MS: u64 = 200;

/// How long an event is held back waiting for the events that precede it.
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
    let mut sent = HashSet::new();
    loop {
        // The record before the trail: an event is logged before it is folded into
        // the record, so the trail read next holds everything the record counts.
        let complete = matches!(documents::load(tenant, id), Ok(Some((d, _))) if complete(&d));
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
        for event in releasable(&trail, &sent, complete) {
            let data = serde_json::to_string(&crate::cloud_event(event)).unwrap_or_default();
            let frame = format!("id: {}\nevent: {}\ndata: {data}\n\n", event.id, event.type_);
            if body.send(frame.into_bytes()).await.is_err() {
                return; // the client left
            }
            sent.insert(event.id.clone());
        }
        let all_sent = trail.iter().all(|e| sent.contains(&e.id));
        if (complete && all_sent) || now_ms() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
}

/// Whether the document has settled with nothing left to log: an indexed document
/// has counted all its batches (`status` may fold `indexed` before the last
/// `embedding.completed`, which arrives on another subscription).
fn complete(doc: &documents::Document) -> bool {
    doc.status.settled()
        && (doc.status != Status::Indexed || doc.progress.done >= doc.progress.total)
}

/// The unsent events of `trail` that can go out now, in order: none until the
/// `uploaded` event is logged, and none from a settling event on until the record is
/// [`complete`] — unless the wait has lasted [`CAUSE_WAIT_MS`].
fn releasable<'a>(trail: &'a [Event], sent: &HashSet<String>, complete: bool) -> Vec<&'a Event> {
    // An event without a readable time cannot be dated, so it is never held.
    let waited = |e: &Event| age_ms(e).is_none_or(|age| age >= CAUSE_WAIT_MS);
    let started =
        trail.iter().any(|e| is(e, events::UPLOADED)) || trail.first().is_some_and(waited);
    if !started {
        return Vec::new();
    }
    let mut out = Vec::new();
    for event in trail.iter().filter(|e| !sent.contains(&e.id)) {
        let settles = [events::INDEXED, events::FAILED, events::DELETED]
            .iter()
            .any(|t| is(event, t));
        if settles && !complete && !waited(event) {
            break; // what follows waits too, so the order holds
        }
        out.push(event);
    }
    out
}

/// Whether `event` is on `topic` (its type is the topic with a version suffix).
fn is(event: &Event, topic: &str) -> bool {
    event
        .type_
        .strip_prefix(topic)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(".v"))
}
