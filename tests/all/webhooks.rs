//! Webhooks through an outage: `notify` waits for a receiver that answers errors, then
//! does not answer at all, for longer than the subscription's deliveries would last if
//! waiting counted, and still delivers every event once when it is back. Webhooks are
//! never sent unsigned: an empty secret stops start-up, and `notify` refuses to send
//! without one even when the manifest does not check.

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, call, get, repo_root, troupe_bin};

const SECRET: &str = "outage-secret";
/// `max_deliveries` of the `notify` subscription in spin.toml.
const MAX_DELIVERIES: u64 = 10;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `503 Service Unavailable` at once.
    Errors,
    /// Reads the request and never answers (the caller's timeout runs out).
    Silent,
    /// `200`, and the request is recorded.
    Up,
}

use troupe_tests::Request;

#[derive(Default)]
struct Seen {
    /// Requests answered 200.
    delivered: Vec<Request>,
    /// Requests that arrived, by the mode they met.
    errors: usize,
    silent: usize,
}

/// A webhook receiver whose mode the test switches.
#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    url: String,
}

impl Receiver {
    fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let receiver = Self {
            mode: Arc::new(Mutex::new(mode)),
            seen: Arc::default(),
            url,
        };
        let r = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || r.answer(stream));
            }
        });
        receiver
    }

    fn answer(&self, stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream);
        let (headers, body) = troupe_tests::read_request(&mut reader);
        let status = match self.mode() {
            Mode::Errors => {
                self.seen.lock().expect("lock").errors += 1;
                503
            }
            Mode::Silent => {
                self.seen.lock().expect("lock").silent += 1;
                // Hold the connection without a word until the mode changes; by then
                // the caller has given up, so this request is not delivered.
                let start = Instant::now();
                while self.mode() == Mode::Silent && start.elapsed() < Duration::from_secs(120) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Mode::Up => {
                self.seen
                    .lock()
                    .expect("lock")
                    .delivered
                    .push((headers, body));
                200
            }
        };
        let _ = reader.get_mut().write_all(
            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().expect("lock")
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn counts(&self) -> (usize, usize, usize) {
        let s = self.seen.lock().expect("lock");
        (s.errors, s.silent, s.delivered.len())
    }

    fn delivered(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").delivered.clone()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|h| h.0 == name)
        .map(|h| h.1.as_str())
        .unwrap_or_default()
}

/// A sample of the `/metrics` counter or gauge `name` with these labels; 0 when absent.
fn metric(base: &str, line_prefix: &str) -> u64 {
    let (status, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn settled(base: &str, outcome: &str) -> u64 {
    metric(
        base,
        &format!(r#"troupe_events_total{{subscription="notify",outcome="{outcome}"}}"#),
    )
}

/// Deliveries of `notify` that ended waiting or failing: each one a counted
/// delivery when waits counted.
fn waited(base: &str) -> u64 {
    settled(base, "defer") + settled(base, "retry")
}

fn dead(base: &str) -> u64 {
    metric(base, r#"troupe_dlq_depth{subscription="notify"}"#)
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod local {
    #[test]
    fn a_receiver_down_longer_than_the_deliveries_last_still_gets_every_event_once() {
        super::receiver_down(troupe_tests::stack::Stack::local);
    }
}

mod aws {
    /// SQS delays are whole seconds: the waits are longer, the test too.
    #[test]
    fn a_receiver_down_longer_than_the_deliveries_last_still_gets_every_event_once() {
        super::receiver_down(troupe_tests::stack::Stack::aws);
    }
}

fn receiver_down(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let hooks = Receiver::start(Mode::Errors);
    // Without the model, documents stay `uploaded` and the sweeper fails them after a
    // second: each failure is one `document.failed` webhook. Short circuit and call
    // timeouts stand in for the defaults (30 s, 10 s).
    let up = Child::pipeline_on(
        &stack,
        &["--no-embeddings"],
        &[
            ("TROUPE_VARIABLE_UPLOADED_TIMEOUT_MS", "1000".into()),
            ("TROUPE_VARIABLE_SWEEP_SCHEDULE", "*/5 * * * * *".into()),
            ("TROUPE_VARIABLE_WEBHOOK_URLS", hooks.url.clone()),
            ("TROUPE_VARIABLE_WEBHOOK_SECRET", SECRET.into()),
            ("TROUPE_VARIABLE_BREAKER_FAILURES", "2".into()),
            ("TROUPE_VARIABLE_BREAKER_OPEN_MS", "300".into()),
            ("TROUPE_VARIABLE_WEBHOOK_TIMEOUT_MS", "300".into()),
        ],
    );
    let base = format!("http://{}", up.addr);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (status, reply) = call(
                "POST",
                &format!("{base}/v1/documents?name=d{i}.txt"),
                "text/plain",
                format!("Document {i} will never be embedded.").as_bytes(),
            );
            assert_eq!(status, 202, "{reply}");
            reply["id"].as_str().expect("id").to_owned()
        })
        .collect();

    // Down, answering errors: the endpoint is called, fails, and its circuit opens.
    let within = Duration::from_secs(90);
    wait_for("calls answered with errors", within, || {
        hooks.counts().0 >= 2
    });
    // Every delivery of a waiting event would have counted before: keep the receiver
    // down until the three events have waited, together, more than three times the
    // deliveries each had (so at least one of them more than all of its own), first
    // answering errors, then not answering at all.
    let waits = 3 * (MAX_DELIVERIES + 1);
    wait_for("the events to wait", within, || {
        waited(&base) >= waits / 2 || dead(&base) > 0
    });
    hooks.set(Mode::Silent);
    wait_for("calls left unanswered", within, || hooks.counts().1 >= 2);
    wait_for("the events to wait", within, || {
        waited(&base) >= waits || dead(&base) > 0
    });
    assert!(
        hooks.delivered().is_empty(),
        "delivered while the receiver was down"
    );
    let (errors, silent, _) = hooks.counts();
    eprintln!(
        "receiver down: {errors} calls answered 503, {silent} unanswered, {} deferrals, {} retries",
        settled(&base, "defer"),
        settled(&base, "retry"),
    );
    assert_eq!(
        dead(&base),
        0,
        "a webhook was dead-lettered during the outage"
    );

    // Back: every event arrives, once, signed.
    hooks.set(Mode::Up);
    wait_for("every webhook after the outage", within, || {
        hooks.counts().2 >= ids.len()
    });
    std::thread::sleep(Duration::from_secs(3));
    let delivered = hooks.delivered();
    let mut documents: Vec<String> = delivered
        .iter()
        .map(|(headers, body)| {
            let timestamp = header(headers, "troupe-timestamp");
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            assert_eq!(
                header(headers, "troupe-signature"),
                format!("v1={}", hex::encode(mac.finalize().into_bytes())),
                "bad signature"
            );
            let json: serde_json::Value = serde_json::from_slice(body).expect("json body");
            assert_eq!(json["type"], "troupe.document.failed.v1", "{json}");
            json["document_id"]
                .as_str()
                .expect("document_id")
                .to_owned()
        })
        .collect();
    documents.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(documents, expected, "each event once");
    assert_eq!(dead(&base), 0, "a webhook was dead-lettered");
}

#[test]
fn webhook_urls_without_a_secret_stop_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    troupe_tests::components();
    let out = Command::new(troupe_bin())
        .args([
            "up",
            "--no-embeddings",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--manifest")
        .arg(repo_root().join("spin.toml"))
        .env("TROUPE_LOG", "warn")
        .env("TROUPE_VARIABLE_WEBHOOK_URLS", "http://127.0.0.1:9/hooks")
        .env_remove("TROUPE_VARIABLE_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning troupe");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut child = out;
    let mut stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let Ok(stderr) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("troupe started with webhook_urls set and no webhook_secret");
    };
    let status = child.wait().expect("wait");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("component.notify.variables.webhook_secret")
            && stderr.contains("TROUPE_VARIABLE_WEBHOOK_SECRET"),
        "the error should name the variable and how to set it: {stderr}"
    );
}

#[test]
fn notify_never_sends_unsigned_even_unchecked() {
    // The repository's pipeline without the start-up check, webhooks configured with
    // an empty secret: `notify` itself must refuse to send.
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Receiver::start(Mode::Up);
    let dist = troupe_tests::components().display().to_string();
    let manifest = std::fs::read_to_string(repo_root().join("spin.toml"))
        .expect("spin.toml")
        .replace("source = \"functions/dist", &format!("source = \"{dist}"))
        .replace(
            "variables_require = { webhook_urls = [\"webhook_secret\"] }",
            "",
        )
        .replace(
            "webhook_urls = { default = \"\" }",
            &format!("webhook_urls = {{ default = \"{}\" }}", hooks.url),
        )
        .replace(
            "uploaded_timeout_ms = { default = \"900000\" }",
            "uploaded_timeout_ms = { default = \"1000\" }",
        )
        .replace(
            "sweep_schedule = { default = \"*/30 * * * * *\" }",
            "sweep_schedule = { default = \"*/5 * * * * *\" }",
        );
    assert!(manifest.contains("*/5 * * * * *"), "{manifest}");
    assert!(!manifest.contains("variables_require = {"), "{manifest}");
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).expect("write manifest");
    let up = Child::up(&dir.path().join("data"), &path);
    let base = format!("http://{}", up.addr);
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=unsigned.txt"),
        "text/plain",
        b"This document will fail, and its webhook must not go out unsigned.",
    );
    assert_eq!(status, 202, "{reply}");
    wait_for("the webhook to be refused", Duration::from_secs(60), || {
        assert_eq!(hooks.counts(), (0, 0, 0), "a webhook went out unsigned");
        metric(
            &base,
            r#"troupe_events_total{subscription="notify",outcome="reject"}"#,
        ) >= 1
    });
    assert_eq!(
        metric(&base, r#"troupe_dlq_depth{subscription="notify"}"#),
        1
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hooks.counts(), (0, 0, 0), "a webhook went out unsigned");
    drop(up);
    let (cli_ok, listing) = {
        let out = Command::new(troupe_bin())
            .args(["dlq", "list", "notify", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("troupe dlq list");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(
        cli_ok && listing.contains("webhook_secret_missing"),
        "{listing}"
    );
}

/// A settling event that reaches `notify` after its document was deleted and forgotten
/// is dropped quietly: `notify` may read the tombstone under the repository's
/// manifest. (Found by Schemathesis' stateful runs, upload → delete: the manifest did
/// not grant `gone/`, so every such event was dead-lettered as `denied`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settling_event_for_a_forgotten_document_is_dropped_not_dead_lettered() {
    use troupe_core::{Event, Message, Queue as _, State as _};
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).expect("spin.toml");
    let header = "spin_manifest_version = 2\n\n[application]\nname = \"troupe\"\n";
    assert!(text.contains(header), "spin.toml's header moved");
    // A webhook to call (a closed port: the call is never reached).
    let body = text
        .replace(header, "")
        .replace("functions/dist", "{dist}")
        .replace(
            "webhook_urls = { default = \"\" }",
            "webhook_urls = { default = \"http://127.0.0.1:9/hook\" }",
        )
        .replace(
            "webhook_secret = { default = \"\", secret = true }",
            "webhook_secret = { default = \"s\", secret = true }",
        );
    assert!(body.contains("127.0.0.1:9/hook") && body.contains("\"s\""));
    let host = troupe_tests::InProcess::start(&body).await;
    host.local
        .state
        .put("gone/default/doc-1", b"1", None)
        .await
        .expect("tombstone");
    let mut e = Event::new(
        "/functions/indexer",
        "troupe.document.indexed.v1",
        &serde_json::json!({"document": "doc-1"}),
    )
    .with_subject("doc-1");
    e.tenant = Some("default".into());
    host.local
        .queue
        .publish("troupe.document.indexed", &[Message::from_event(&e)])
        .await
        .expect("published");
    let queue = host.local.queue.clone();
    let settled = troupe_tests::eventually(Duration::from_secs(20), async || {
        let d = queue.depth("notify").await.expect("depth");
        (d.ready + d.in_flight == 0).then_some(d)
    })
    .await
    .expect("notify handled the event");
    assert_eq!(settled.dead, 0, "the event was dead-lettered: {settled:?}");
    host.shutdown().await;
}
