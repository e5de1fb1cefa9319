//! A document's audit trail reads in the order things happened, whatever order
//! `status` logged it in: its one subscription takes every topic, but batches run
//! concurrently and SQS (or a retry) does not keep the order, so an event can be
//! logged before the one that caused it.
//! These tests write the log out of order and read it through the real `api`.

use std::time::Duration;

use serde_json::{Value, json};
use troupe_core::{Event, State};
use troupe_tests::{InProcess, get};

/// The `api` component alone; `wait_ms` is how long the stream holds an event for the
/// events that precede it (`cause_wait_ms`).
fn app(wait_ms: u64) -> String {
    format!(
        r#"
[[trigger.http]]
route = "/v1/documents/..."
component = "api"
[component.api]
source = "{{dist}}/api.wasm"
variables = {{ stream_max_ms = "20000", cause_wait_ms = "{wait_ms}" }}
[component.api.tool.troupe.grants]
state = ["doc/", "gone/"]
event_logs = "read"
"#
    )
}

const TENANT: &str = "default";

/// An event of `topic` about `doc`, `offset_ms` after `base`.
fn event(
    doc: &str,
    topic: &str,
    name: &str,
    base: chrono::DateTime<chrono::Utc>,
    offset_ms: i64,
) -> Event {
    let mut e =
        Event::new("/test", format!("{topic}.v1"), &json!({ "document": doc })).with_subject(doc);
    e.id = format!("{doc}-{name}");
    e.time = (base + chrono::Duration::milliseconds(offset_ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    e.tenant = Some(TENANT.into());
    e
}

/// Stores `doc`'s record as `status` would have folded it.
async fn record(host: &InProcess, doc: &str, status: &str, done: u32, total: u32) {
    let now = chrono::Utc::now().to_rfc3339();
    let record = json!({
        "id": doc, "tenant": TENANT, "name": "a.md", "content_type": "text/markdown",
        "size": 1, "blob": { "bucket": "documents", "key": format!("docs/{TENANT}/{doc}") },
        "status": status, "progress": { "done": done, "total": total },
        "batches_done": (1..=done).collect::<Vec<_>>(), "chunks": 2, "error": null,
        "sha256": "5ad0", "title": "A", "pages": null, "sniffed_type": "text/plain",
        "created_at": now, "updated_at": now, "progressed_ms": 0,
    });
    host.local
        .state
        .put(
            &format!("doc/{TENANT}/{doc}"),
            &serde_json::to_vec(&record).expect("json"),
            None,
        )
        .await
        .expect("record stored");
}

async fn log(host: &InProcess, events: &[Event]) {
    for e in events {
        host.local
            .state
            .append_event(
                &format!("{TENANT}/{}", e.subject.as_deref().unwrap_or_default()),
                e,
            )
            .await
            .expect("event logged");
    }
}

/// The event types of a stream, in the order they were sent.
fn streamed(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(|t| {
            t.trim_end_matches(".v1")
                .rsplit('.')
                .next()
                .unwrap_or(t)
                .to_owned()
        })
        .collect()
}

/// Opens the live stream in a blocking thread; its text once the stream ends.
fn open_stream(url: String) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut resp = ureq::get(&url)
            .header("accept", "text/event-stream")
            .call()
            .expect("stream opens");
        resp.body_mut().read_to_string().expect("stream ends")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_in_event_time_order_whatever_the_log_order() {
    let host = InProcess::start(&app(60_000)).await;
    let doc = "0196b000-0000-7000-8000-000000000001";
    let t = chrono::Utc::now();
    record(&host, doc, "processing", 1, 2).await;
    log(
        &host,
        &[
            event(doc, "troupe.document.extracted", "extracted", t, 20),
            event(doc, "troupe.embedding.completed", "job-1-completed", t, 40),
            event(doc, "troupe.document.uploaded", "uploaded", t, 0),
            event(doc, "troupe.document.inspected", "inspected", t, 20),
            // Same millisecond: the stage orders them, whatever the log says.
            event(doc, "troupe.document.indexed", "indexed", t, 50),
            event(doc, "troupe.embedding.completed", "job-2-completed", t, 50),
        ],
    )
    .await;

    let base = format!("http://{}/v1/documents/{doc}/events", host.addr);
    let (status, body) = tokio::task::spawn_blocking(move || get(&base))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let trail: Value = serde_json::from_str(&body).expect("a JSON array");
    let ids: Vec<&str> = trail
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    // Equal times keep log order: extracted was logged before inspected.
    let want: Vec<String> = [
        "uploaded",
        "extracted",
        "inspected",
        "job-1-completed",
        "job-2-completed",
        "indexed",
    ]
    .iter()
    .map(|n| format!("{doc}-{n}"))
    .collect();
    assert_eq!(ids, want);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_waits_for_causes_logged_late_and_ends_on_the_settling_event() {
    let host = InProcess::start(&app(60_000)).await;
    let doc = "0196b000-0000-7000-8000-000000000002";
    let t = chrono::Utc::now();
    // `extracted` is logged before `uploaded`, which is still in flight.
    record(&host, doc, "processing", 0, 2).await;
    log(
        &host,
        &[event(doc, "troupe.document.extracted", "extracted", t, 20)],
    )
    .await;
    let stream = open_stream(format!("http://{}/v1/documents/{doc}/events", host.addr));

    tokio::time::sleep(Duration::from_millis(600)).await;
    // `uploaded` lands; `indexed` is folded before the last batch's completion.
    log(
        &host,
        &[
            event(doc, "troupe.document.uploaded", "uploaded", t, 0),
            event(doc, "troupe.embedding.completed", "job-1-completed", t, 40),
            event(doc, "troupe.document.indexed", "indexed", t, 80),
        ],
    )
    .await;
    record(&host, doc, "indexed", 1, 2).await;

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !stream.is_finished(),
        "the stream ended before the last batch was counted"
    );
    log(
        &host,
        &[event(
            doc,
            "troupe.embedding.completed",
            "job-2-completed",
            t,
            60,
        )],
    )
    .await;
    record(&host, doc, "indexed", 2, 2).await;

    let text = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream ends once the document is complete")
        .expect("stream thread");
    assert_eq!(
        streamed(&text),
        ["uploaded", "extracted", "completed", "completed", "indexed"],
        "{text}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cause_that_never_arrives_delays_the_stream_but_does_not_stall_it() {
    let host = InProcess::start(&app(2_000)).await;
    let addr = host.addr;
    let stream_of = |doc: &'static str| {
        tokio::time::timeout(
            Duration::from_secs(10),
            open_stream(format!("http://{addr}/v1/documents/{doc}/events")),
        )
    };
    // Long ago, `uploaded` was dead-lettered on its way to `status`.
    let failed = "0196b000-0000-7000-8000-000000000003";
    let t = chrono::Utc::now() - chrono::Duration::seconds(30);
    record(&host, failed, "failed", 0, 0).await;
    log(
        &host,
        &[
            event(failed, "troupe.document.extracted", "extracted", t, 20),
            event(failed, "troupe.document.failed", "failed", t, 900),
        ],
    )
    .await;
    // And a batch's completion, which the record will never count.
    let indexed = "0196b000-0000-7000-8000-000000000004";
    record(&host, indexed, "indexed", 1, 2).await;
    log(
        &host,
        &[
            event(indexed, "troupe.document.uploaded", "uploaded", t, 0),
            event(indexed, "troupe.document.extracted", "extracted", t, 20),
            event(
                indexed,
                "troupe.embedding.completed",
                "job-1-completed",
                t,
                40,
            ),
            event(indexed, "troupe.document.indexed", "indexed", t, 80),
        ],
    )
    .await;

    let text = stream_of(failed)
        .await
        .expect("the stream ends")
        .expect("thread");
    assert_eq!(streamed(&text), ["extracted", "failed"], "{text}");
    // Not at the stream's 20 s limit: once the held `indexed` has waited, it is sent
    // and the stream ends.
    let text = stream_of(indexed)
        .await
        .expect("the stream ends")
        .expect("thread");
    assert_eq!(
        streamed(&text),
        ["uploaded", "extracted", "completed", "indexed"],
        "{text}"
    );
    host.shutdown().await;
}
