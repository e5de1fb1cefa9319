//! `GET /v1/documents/{id}/events` with `Accept: text/event-stream`: the audit trail so
//! far, then each new event as it is recorded, until the document settles or the
//! stream reaches its time limit (variable `stream_max_ms`, kept below the
//! component's timeout); clients reconnect with `Last-Event-ID` semantics by
//! re-reading the log.

use futures::SinkExt as _;
use spin_sdk::http::{Fields, OutgoingResponse, ResponseOutparam};
use troupe_guest::{config_u64, documents, now_ms, state};

/// How often the log is polled for new events.
const POLL_MS: u64 = 200;

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
    let subject = documents::log_subject(tenant, id);
    let mut sent = 0;
    let mut finished = false;
    loop {
        let log = match state::read_events(&subject) {
            Ok(log) => log,
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
        for event in log.iter().skip(sent) {
            let data = serde_json::to_string(&crate::cloud_event(event)).unwrap_or_default();
            let frame = format!("id: {}\nevent: {}\ndata: {data}\n\n", event.id, event.type_);
            if body.send(frame.into_bytes()).await.is_err() {
                return; // the client left
            }
        }
        sent = sent.max(log.len());
        if finished || now_ms() >= deadline {
            return;
        }
        // Settled: one more pass sends what was logged meanwhile (the settling event
        // is appended before the record changes), then the stream ends.
        finished = matches!(documents::load(tenant, id), Ok(Some((d, _))) if d.status.settled());
        if finished {
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
}
