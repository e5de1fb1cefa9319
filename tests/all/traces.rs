//! Traces: one OpenTelemetry trace follows a document from the client's request
//! through every queue hop and the worker, exported over OTLP/HTTP to a receiver the
//! test runs (on each backend); retries and dead letters carry their status; log
//! lines carry the trace; with no endpoint nothing is exported and no exporter
//! thread runs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_tests::corpus::Hooks;
use troupe_tests::otlp::{Receiver, Span};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, components, request};

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
/// OTLP status code of an error.
const ERROR: i32 = 2;

/// The exporter's settings: the receiver, and a short batch delay so spans arrive
/// while the test waits.
fn exporting(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

/// A client trace context: (traceparent, trace id, parent span id).
fn client_trace(seed: u64) -> (String, String, String) {
    let trace = format!(
        "{:016x}{:016x}",
        0x7472_6f75_7065_0000 | seed,
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
    );
    let span = format!("{:016x}", seed.wrapping_mul(31) | 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// Waits until `check` finds what it wants among the received spans.
fn spans_until(
    receiver: &Receiver,
    within: Duration,
    what: &str,
    check: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let start = Instant::now();
    loop {
        let spans = receiver.spans();
        if check(&spans) {
            return spans;
        }
        assert!(
            start.elapsed() < within,
            "{what}: not received within {within:?}; spans so far: {:#?}",
            spans
                .iter()
                .filter(|s| s.trace_id.starts_with("74726f7570650"))
                .map(|s| (
                    &s.name,
                    &s.trace_id,
                    &s.span_id,
                    &s.parent,
                    s.kind,
                    s.attr("component")
                ))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `c`'s parent, or one of its links, is a producer span in `spans`.
fn under_producer(spans: &[Span], c: &Span) -> bool {
    let producer = |trace: &str, id: &str| {
        spans
            .iter()
            .any(|p| p.kind == PRODUCER && p.trace_id == trace && p.span_id == id)
    };
    producer(&c.trace_id, &c.parent) || c.links.iter().any(|(t, s)| producer(t, s))
}

/// The consumer span of `component`'s subscription in `spans`.
fn consumer<'a>(spans: &'a [Span], subscription: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| {
            s.kind == CONSUMER
                && s.attr("messaging.destination.subscription.name") == Some(subscription)
        })
        .collect()
}

/// Uploads a document with the client's `traceparent`, waits for it to be indexed,
/// and checks that its spans form one trace, api → extract/inspect → worker →
/// indexer → status → notify, each consumer under the producer of its event.
fn one_trace_per_document(stack: &Stack, seed: u64) -> Vec<Span> {
    let (receiver, url) = Receiver::start();
    let (hooks, hook_url) = Hooks::start();
    let mut env = exporting(&url);
    env.push(("TROUPE_VARIABLE_WEBHOOK_URLS", hook_url));
    env.push(("TROUPE_VARIABLE_WEBHOOK_SECRET", "traced-secret".to_owned()));
    let host = Child::pipeline_on(stack, &[], &env);
    let base = format!("http://{}", host.addr);
    let (traceparent, trace, client_span) = client_trace(seed);
    let reply = request(
        "POST",
        &format!("{base}/v1/documents?name=traced.md"),
        &[
            ("content-type", "text/markdown"),
            ("traceparent", &traceparent),
        ],
        b"# Traced\n\nA document followed through every hop of the pipeline by one trace.\n",
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    // The answer names the trace it continued.
    let answered = reply
        .header("traceparent")
        .expect("a traceparent header on the answer");
    assert_eq!(
        troupe_telemetry::trace_id(answered).as_deref(),
        Some(trace.as_str()),
        "{answered}"
    );
    let id = reply.body["id"].as_str().expect("an id").to_owned();
    let doc = troupe_tests::api::settle(&base, &id, Duration::from_secs(120));
    assert_eq!(doc["status"], "indexed", "{doc}");
    assert_eq!(
        doc["trace_id"].as_str(),
        Some(trace.as_str()),
        "the record names its trace: {doc}"
    );

    let subscriptions = [
        "extract",
        "inspect",
        "gpu-worker",
        "indexer",
        "status",
        "notify",
    ];
    let spans = spans_until(
        &receiver,
        Duration::from_secs(60),
        "every stage's span",
        |spans| {
            subscriptions.iter().all(|s| {
                spans.iter().any(|sp| {
                    sp.trace_id == trace
                        && sp.kind == CONSUMER
                        && sp.attr("messaging.destination.subscription.name") == Some(s)
                })
            }) && spans
                .iter()
                .filter(|c| c.trace_id == trace && c.kind == CONSUMER)
                .all(|c| under_producer(spans, c))
                // notify defers until the status is recorded, then calls the webhook
                && spans.iter().any(|s| {
                    s.trace_id == trace
                        && s.kind == CLIENT
                        && s.attr("http.request.method") == Some("POST")
                })
        },
    );
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();

    // The API's server span continues the client's span.
    let server = ours
        .iter()
        .find(|s| s.kind == SERVER && s.attr("http.route") == Some("/v1/documents/..."))
        .expect("the upload's server span");
    assert_eq!(
        server.parent, client_span,
        "the server span's parent is the client's"
    );
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    assert!(
        server.name.starts_with("POST /v1/documents"),
        "{}",
        server.name
    );

    // Every consumer span hangs under (or links to) the producer span of its event,
    // and that producer span was received too: no hop starts a trace of its own.
    let mut stages = std::collections::BTreeSet::new();
    for c in ours.iter().filter(|s| s.kind == CONSUMER) {
        assert!(
            under_producer(&spans, c),
            "consumer span {} ({:?}) has no producer parent or link",
            c.name,
            c.attr("component")
        );
        stages.insert(
            c.attr("messaging.destination.subscription.name")
                .unwrap_or_default()
                .to_owned(),
        );
        assert_eq!(c.attr("messaging.system"), Some("troupe"));
        assert!(c.attr("messaging.message.id").is_some());
        assert!(c.attr("troupe.delivery_count").is_some());
    }
    for s in subscriptions {
        assert!(
            stages.contains(s),
            "no {s} span in the document's trace: {stages:?}"
        );
    }
    // The api published `uploaded` from inside its server span.
    assert!(
        ours.iter().any(|p| p.kind == PRODUCER
            && p.attr("messaging.destination.name") == Some("troupe.document.uploaded")),
        "the upload's publish span"
    );
    // The worker's embedding says how much it embedded.
    let embed = ours
        .iter()
        .find(|s| s.name == "embed")
        .expect("the worker's embed span");
    assert!(
        embed
            .attr("gen_ai.usage.input_tokens")
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|t| t > 0),
        "{embed:?}"
    );
    assert!(embed.attr("troupe.chunks").is_some());
    for c in ours.iter().filter(|s| s.kind == CONSUMER) {
        // notify defers while a webhook delivery is under way.
        assert!(
            matches!(c.attr("troupe.outcome"), Some("ok" | "defer")),
            "{c:?}"
        );
    }
    // notify's webhook call is a client span of the trace, and the receiver gets its
    // traceparent.
    let webhook = ours
        .iter()
        .find(|s| s.kind == CLIENT && s.attr("http.request.method") == Some("POST"))
        .expect("the webhook call's client span");
    assert_eq!(
        webhook.attr("http.response.status_code"),
        Some("200"),
        "{webhook:?}"
    );
    let start = Instant::now();
    let sent = loop {
        let got: Vec<String> = hooks
            .received()
            .iter()
            .filter_map(|(headers, _)| {
                headers
                    .iter()
                    .find(|(k, _)| k == "traceparent")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        if !got.is_empty() || start.elapsed() > Duration::from_secs(30) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        sent.iter()
            .any(|tp| tp.contains(&trace) && tp.contains(&webhook.span_id)),
        "the webhook carries the client span's traceparent: {sent:?}"
    );
    drop(host);
    ours.into_iter().cloned().collect()
}

#[test]
fn one_trace_follows_a_document_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    one_trace_per_document(&Stack::local(dir.path()), 1);
}

#[test]
fn one_trace_follows_a_document_on_aws_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::aws(dir.path());
    let spans = one_trace_per_document(&stack, 2);
    // The backends' calls are client spans of the same trace.
    for (key, value) in [
        ("rpc.service", "S3"),
        ("rpc.service", "SQS"),
        ("db.system.name", "postgresql"),
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.kind == CLIENT && s.attr(key) == Some(value)),
            "no {value} client span in the document's trace"
        );
    }
}

const FLAKY: &str = r#"
[application.tool.troupe]
topics = ["kv.v1"]
[[trigger.http]]
route = "/kv/..."
component = "kv"
[[trigger.queue]]
topic = "kv.v1"
component = "recorder"
subscription = "recorder"
# One event per invocation: a batch of two requests' events would be a trace of its
# own, linked to both.
batch_size = 1
backoff_base_ms = 10
backoff_max_ms = 20
max_deliveries = 2
[component.kv]
source = "{dist}/http_state.wasm"
[component.kv.tool.troupe.grants]
state = ["kv/"]
publish = ["kv.v1"]
[component.recorder]
source = "{dist}/recorder.wasm"
[component.recorder.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#;

/// `troupe up --log-format json` with FLAKY, exporting to `url` when given.
fn flaky(dir: &Path, url: Option<&str>) -> (Child, std::path::PathBuf) {
    let manifest = troupe_tests::manifest(
        dir,
        &FLAKY.replace("{dist}", &components().display().to_string()),
    );
    let log = dir.join("troupe.log");
    let args: Vec<String> = [
        "up",
        "--listen",
        "127.0.0.1:0",
        "--no-embeddings",
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
    ])
    .chain(["--manifest".to_owned(), manifest.display().to_string()])
    .collect();
    let mut env = url.map(exporting).unwrap_or_default();
    env.push(("TROUPE_LOG", "info".to_owned()));
    (Child::run(&args, &env, Some(&log)), log)
}

#[test]
fn retries_and_dead_letters_show_in_the_trace_and_log_lines_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start();
    let (host, log) = flaky(dir.path(), Some(&url));
    let base = format!("http://{}", host.addr);
    let send = |key: &str, outcome: &str, seed: u64| {
        let (traceparent, trace, _) = client_trace(seed);
        let reply = request(
            "PUT",
            &format!("{base}/kv/{key}"),
            &[("traceparent", traceparent.as_str())],
            format!(r#"{{"outcome": "{outcome}"}}"#).as_bytes(),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        trace
    };
    let retried = send("again", "retry", 11);
    let rejected = send("never", "reject", 12);
    let spans = spans_until(
        &receiver,
        Duration::from_secs(30),
        "two deliveries of the retried event and the rejection",
        |spans| {
            consumer(spans, "recorder")
                .iter()
                .filter(|s| s.trace_id == retried)
                .count()
                >= 2
                && consumer(spans, "recorder")
                    .iter()
                    .any(|s| s.trace_id == rejected)
        },
    );
    let recorder = consumer(&spans, "recorder");
    let tries: Vec<&&Span> = recorder.iter().filter(|s| s.trace_id == retried).collect();
    assert!(
        tries
            .iter()
            .all(|s| s.attr("troupe.outcome") == Some("retry")),
        "{tries:#?}"
    );
    let counts: std::collections::BTreeSet<&str> = tries
        .iter()
        .filter_map(|s| s.attr("troupe.delivery_count"))
        .collect();
    assert!(
        counts.contains("1") && counts.contains("2"),
        "one span per delivery: {counts:?}"
    );
    let reject = recorder.iter().find(|s| s.trace_id == rejected).unwrap();
    assert_eq!(reject.attr("troupe.outcome"), Some("reject"));
    assert_eq!(
        reject.status, ERROR,
        "a dead-lettered event's span is an error: {reject:?}"
    );

    // Every line is one JSON object; the host's line about the dead letter carries
    // the trace of the request that caused it.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(!lines.is_empty());
    let line = lines
        .iter()
        .find(|l| l["trace_id"].as_str() == Some(rejected.as_str()))
        .unwrap_or_else(|| panic!("no log line carries the rejected event's trace: {text}"));
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert!(
        line["level"].is_string()
            && line["target"].is_string()
            && line["fields"]["message"].is_string(),
        "{line}"
    );
    drop(host);
}

/// The threads of process `pid`, by name.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_no_exporter_thread_runs() {
    let exporter = |names: &[String]| names.iter().any(|n| n.starts_with("OpenTelemetry"));
    // With an endpoint the exporter's thread is there (so the check below can fail).
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, url) = Receiver::start();
    let (on, _) = flaky(dir.path(), Some(&url));
    assert!(
        exporter(&threads(on.child.id())),
        "{:?}",
        threads(on.child.id())
    );
    drop(on);

    let dir = tempfile::tempdir().unwrap();
    let (off, log) = flaky(dir.path(), None);
    let names = threads(off.child.id());
    assert!(
        !exporter(&names),
        "an exporter thread runs without an endpoint: {names:?}"
    );
    let (traceparent, _, _) = client_trace(21);
    let reply = request(
        "PUT",
        &format!("http://{}/kv/quiet", off.addr),
        &[("traceparent", traceparent.as_str())],
        br#"{"outcome": "reject"}"#,
    );
    assert_eq!(reply.status, 201);
    assert!(
        reply.header("traceparent").is_none(),
        "no trace context is made up"
    );
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("dead-lettered") || start.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("dead-lettered"), "{text}");
    assert!(
        !text.contains("trace_id"),
        "no trace ids without traces: {text}"
    );
    drop(off);
}
