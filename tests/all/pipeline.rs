//! The document pipeline end to end: the `troupe` binary running the repository's
//! `spin.toml` (every function, real model), driven through the public HTTP API, with
//! every message delivered twice; on the embedded backends and on S3 + SQS + Postgres.

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use troupe_tests::stack::Stack;
use troupe_tests::{Child, call, repo_root};

const SECRET: &str = "test-secret";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/pipeline").join(name)).expect("fixture")
}

use troupe_tests::Request;

/// A webhook receiver: records each request's headers and body, answers 200.
#[derive(Default, Clone)]
struct Hooks(Arc<Mutex<Vec<Request>>>);

impl Hooks {
    /// A receiver answering every request with `status`.
    fn start(status: u16) -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let hooks = Self::default();
        let seen = hooks.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let (headers, body) = troupe_tests::read_request(&mut reader);
                seen.0.lock().expect("lock").push((headers, body));
                let _ = reader.get_mut().write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        (hooks, url)
    }

    fn received(&self) -> Vec<Request> {
        self.0.lock().expect("lock").clone()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|h| h.0 == name)
        .map(|h| h.1.as_str())
        .unwrap_or_default()
}

fn upload(base: &str, name: &str, content_type: &str, body: &[u8]) -> String {
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name={name}"),
        content_type,
        body,
    );
    assert_eq!(status, 202, "uploading {name}: {reply}");
    assert_eq!(reply["status"], "uploaded");
    reply["id"].as_str().expect("id").to_owned()
}

fn document(base: &str, id: &str) -> Value {
    call("GET", &format!("{base}/v1/documents/{id}"), "", b"").1
}

/// Waits until the document's status is settled; returns its record.
fn settle(base: &str, id: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let doc = document(base, id);
        if matches!(
            doc["status"].as_str(),
            Some("indexed" | "failed" | "deleted")
        ) {
            return doc;
        }
        assert!(
            start.elapsed() < within,
            "document {id} did not settle: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn search(base: &str, query: &str, k: u32) -> Vec<Value> {
    let body = serde_json::json!({"query": query, "k": k}).to_string();
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/search"),
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(status, 200, "search {query}: {reply}");
    reply["hits"].as_array().cloned().unwrap_or_default()
}

fn event_types(base: &str, id: &str) -> Vec<String> {
    let (status, log) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
    assert_eq!(status, 200);
    let events = log.as_array().expect("an array of events");
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "the audit trail repeats an event: {log}"
    );
    events
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

use troupe_tests::both;

both!(
    documents_flow_from_upload_to_search_with_every_event_twice,
    a_stuck_document_is_failed_by_the_sweeper_and_a_failing_webhook_opens_its_circuit,
);

fn documents_flow_from_upload_to_search_with_every_event_twice(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let (hooks, url) = Hooks::start(200);
    let up = Child::pipeline_on(
        &stack,
        &["--duplicate-deliveries"],
        &[
            ("TROUPE_VARIABLE_WEBHOOK_URLS", url),
            ("TROUPE_VARIABLE_WEBHOOK_SECRET", SECRET.into()),
            ("TROUPE_VARIABLE_MAX_UPLOAD_BYTES", "1000000".into()),
            // Jobs with more than 1 KiB of chunk text travel by blob key (claim-check).
            ("TROUPE_VARIABLE_CLAIM_CHECK_BYTES", "1024".into()),
        ],
    );
    let base = format!("http://{}", up.addr);

    // Refused at the door, with the error shape of the public API.
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=a.png"),
        "image/png",
        b"\x89PNG",
    );
    assert_eq!(status, 415, "{reply}");
    assert_eq!(reply["error"]["code"], "unsupported_type");
    // Refused on its Content-Length, before the body is read.
    let mut raw = std::net::TcpStream::connect(up.addr).expect("connect");
    raw.write_all(b"POST /v1/documents HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1500000\r\nconnection: close\r\n\r\n")
        .expect("send headers");
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"too_large""#), "{answer}");
    let (status, reply) = call("GET", &format!("{base}/v1/documents/nope"), "", b"");
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].is_string());

    let ids = [
        ("lighthouse.txt", "text/plain; charset=utf-8"),
        ("sourdough.md", "text/markdown"),
        ("volcano.html", "text/html"),
        ("glacier.pdf", "application/pdf"),
        ("corrupt.pdf", "application/pdf"),
    ]
    .map(|(name, ct)| (name, upload(&base, name, ct, &fixture(name))));
    let empty = upload(&base, "empty.txt", "text/plain", b"  \n\n  ");
    // A file put straight into the bucket's uploads folder (a file copied into it; an
    // S3 put announced by the bucket's notification) is ingested too.
    stack.put_object(
        "uploads/aurora.txt",
        b"The aurora borealis. Charged particles from the solar wind strike oxygen and nitrogen high in the atmosphere, painting the polar night sky green and violet.",
    );

    for (name, id) in &ids {
        let doc = settle(&base, id, Duration::from_secs(180));
        if *name == "corrupt.pdf" {
            assert_eq!(doc["status"], "failed", "{doc}");
            assert_eq!(doc["error"]["code"], "corrupt", "{doc}");
        } else {
            assert_eq!(doc["status"], "indexed", "{name}: {doc}");
            assert_eq!(doc["name"], *name);
            let chunks = doc["chunks"].as_u64().expect("chunks") as usize;
            assert!(chunks >= 1);
            assert_eq!(doc["progress"]["done"], doc["progress"]["total"], "{doc}");
            // Delivered twice, stored once.
            assert_eq!(stack.vector_count(id), chunks, "{name}");
            let types = event_types(&base, id);
            for t in ["uploaded", "extracted", "inspected", "indexed"] {
                assert!(
                    types.contains(&format!("troupe.document.{t}.v1")),
                    "{name}: no {t} in {types:?}"
                );
            }
        }
    }
    assert_eq!(document(&base, &ids[3].1)["pages"], 2);
    let doc = settle(&base, &empty, Duration::from_secs(30));
    assert_eq!(
        (doc["status"].as_str(), doc["error"]["code"].as_str()),
        (Some("failed"), Some("empty")),
        "{doc}"
    );
    // The lighthouse's chunks went to the worker by blob key.
    let chunk_blobs = format!("chunks/default/{}/", ids[0].1);
    assert!(
        !stack.keys(&chunk_blobs).is_empty(),
        "no claim-checked chunks under {chunk_blobs}"
    );

    for (query, name) in [
        ("Fresnel lens in a lighthouse tower", "lighthouse.txt"),
        ("how to feed a sourdough starter", "sourdough.md"),
        ("magma chamber pressure and eruptions", "volcano.html"),
        ("moraine left by a retreating glacier", "glacier.pdf"),
    ] {
        let hits = search(&base, query, 3);
        assert_eq!(
            hits.first().map(|h| h["name"].clone()),
            Some(name.into()),
            "{query}: {hits:?}"
        );
        assert!(
            hits.iter()
                .all(|h| !h["text"].as_str().unwrap_or_default().contains("zebra")),
            "script text was indexed"
        );
        assert!(hits[0]["score"].as_f64().expect("score") > 0.3);
    }

    // The corrupt document was compensated and left nothing behind.
    let corrupt = &ids[4].1;
    let start = Instant::now();
    while !event_types(&base, corrupt).contains(&"troupe.document.compensated.v1".to_owned()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no compensation for the corrupt pdf"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stack.vector_count(corrupt), 0);

    // The dropped-in file became a searchable document.
    let start = Instant::now();
    loop {
        let hits = search(&base, "aurora borealis solar wind", 1);
        if hits.first().is_some_and(|h| h["name"] == "aurora.txt") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the dropped-in file was not indexed: {hits:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The live stream of a settled document replays its trail and ends.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(format!("{base}/v1/documents/{}/events", ids[0].1))
        .header("accept", "text/event-stream")
        .call()
        .expect("sse");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("text/event-stream")
    );
    let stream = resp
        .body_mut()
        .read_to_string()
        .expect("stream ends once settled");
    assert!(
        stream.contains("event: troupe.document.indexed.v1"),
        "{stream}"
    );

    // One signed webhook per transition (6 uploads + the drop-in; two failed).
    let start = Instant::now();
    while hooks.received().len() < 7 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "webhooks: {}",
            hooks.received().len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let received = hooks.received();
    let mut transitions = std::collections::HashSet::new();
    for (headers, body) in &received {
        let timestamp = header(headers, "troupe-timestamp");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            header(headers, "troupe-signature"),
            expected,
            "bad signature"
        );
        let json: Value = serde_json::from_slice(body).expect("json body");
        assert!(
            transitions.insert((json["document_id"].to_string(), json["type"].to_string())),
            "webhook sent twice: {json}"
        );
    }
    assert_eq!(received.len(), 7);
    assert_eq!(
        transitions
            .iter()
            .filter(|t| t.1.contains("failed"))
            .count(),
        2
    );

    // A live stream follows a document from its upload until it settles.
    let live = upload(&base, "live.md", "text/markdown", &fixture("sourdough.md"));
    let mut resp = agent
        .get(format!("{base}/v1/documents/{live}/events"))
        .header("accept", "text/event-stream")
        .call()
        .expect("live sse");
    let stream = resp
        .body_mut()
        .read_to_string()
        .expect("the stream ends when the document settles");
    let order: Vec<&str> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        order.first(),
        Some(&"troupe.document.uploaded.v1"),
        "{stream}"
    );
    assert_eq!(
        order.last(),
        Some(&"troupe.document.indexed.v1"),
        "{stream}"
    );
    assert!(order.contains(&"troupe.embedding.completed.v1"), "{stream}");

    // Deleting cascades: gone from search, vectors removed.
    let lighthouse = &ids[0].1;
    let (status, _) = call(
        "DELETE",
        &format!("{base}/v1/documents/{lighthouse}"),
        "",
        b"",
    );
    assert_eq!(status, 202);
    let start = Instant::now();
    // Once compensation is done the document is forgotten: 404.
    while call("GET", &format!("{base}/v1/documents/{lighthouse}"), "", b"").0 != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not deleted: {}",
            document(&base, lighthouse)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        search(&base, "Fresnel lens in a lighthouse tower", 5)
            .iter()
            .all(|h| h["document_id"] != lighthouse.as_str())
    );
    let start = Instant::now();
    while stack.vector_count(lighthouse) != 0 || !stack.keys(&chunk_blobs).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "vectors or chunk blobs of the deleted document remain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The command line against the same server.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(troupe_tests::troupe_bin())
            .args(args)
            .arg("--url")
            .arg(&base)
            .output()
            .expect("running troupe");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("sub")).expect("mkdir");
    std::fs::write(
        folder.join("sub/tides.md"),
        "# Tides\n\nThe moon's gravity pulls the oceans into two bulges, so coasts see two high tides a day.",
    )
    .expect("write");
    std::fs::write(folder.join("broken.pdf"), b"%PDF-1.4 nothing else").expect("write");
    let (ok, stdout, stderr) = cli(&["ingest", folder.to_str().expect("utf-8 path")]);
    assert!(
        !ok,
        "ingest must fail when a document fails: {stdout} {stderr}"
    );
    assert!(
        stderr.contains("broken.pdf") && stderr.contains("corrupt"),
        "{stderr}"
    );
    let tides = stdout
        .lines()
        .find(|l| l.ends_with("tides.md"))
        .and_then(|l| l.split('\t').next())
        .expect("an id for tides.md")
        .to_owned();
    let (ok, stdout, stderr) = cli(&["status", &tides]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).expect("json")["status"],
        "indexed"
    );
    let (ok, stdout, stderr) = cli(&[
        "search", "why", "are", "there", "two", "high", "tides", "-k", "1",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tides.md"), "{stdout}");
    let (ok, _, stderr) = cli(&["status", "no-such-document"]);
    assert!(!ok && stderr.contains("not_found"), "{stderr}");
    drop(up);
}

fn a_stuck_document_is_failed_by_the_sweeper_and_a_failing_webhook_opens_its_circuit(
    stack: fn(&Path) -> Stack,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let (hooks, url) = Hooks::start(500);
    // Without the model, extraction cannot tokenize and keeps retrying: stuck.
    let up = Child::pipeline_on(
        &stack,
        &["--no-embeddings"],
        &[
            ("TROUPE_VARIABLE_UPLOADED_TIMEOUT_MS", "1000".into()),
            ("TROUPE_VARIABLE_SWEEP_SCHEDULE", "*/5 * * * * *".into()),
            ("TROUPE_VARIABLE_WEBHOOK_URLS", url),
            ("TROUPE_VARIABLE_WEBHOOK_SECRET", SECRET.into()),
            ("TROUPE_VARIABLE_BREAKER_FAILURES", "2".into()),
            ("TROUPE_VARIABLE_BREAKER_OPEN_MS", "60000".into()),
        ],
    );
    let base = format!("http://{}", up.addr);
    let id = upload(
        &base,
        "stuck.txt",
        "text/plain",
        b"This document will never be embedded.",
    );
    let doc = settle(&base, &id, Duration::from_secs(30));
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "timeout", "{doc}");
    let start = Instant::now();
    while !event_types(&base, &id).contains(&"troupe.document.compensated.v1".to_owned()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no compensation after the timeout"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The endpoint answers 500: two tries (retried through the queue, backoff from 1 s),
    // then the circuit opens for a minute and the event waits instead of calling.
    let start = Instant::now();
    while hooks.received().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the webhook was not retried"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        hooks.received().len(),
        2,
        "calls went on while the circuit was open"
    );
}
