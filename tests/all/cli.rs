//! The `troupe` binary: clear errors for bad manifests, and the dead-letter commands.

use std::process::Command;

use troupe_core::{Event, Message, Queue};
use troupe_local::Local;
use troupe_tests::{manifest, troupe_bin};

fn up_fails_with(manifest: &std::path::Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(troupe_bin())
        .args([
            "up",
            "--no-embeddings",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--manifest")
        .arg(manifest)
        .output()
        .unwrap();
    assert!(!out.status.success(), "troupe up accepted a bad manifest");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn malformed_manifest_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
        "[[trigger.http]]\nroute = \"/x\"\ncomponant = \"x\"\n",
    );
    let err = up_fails_with(&path);
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("componant"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn missing_component_file_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
        "[component.ghost]\nsource = \"nowhere/ghost.wasm\"\n",
    );
    let err = up_fails_with(&path);
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("component.ghost.source"), "{err}");
    assert!(err.contains("ghost.wasm"), "{err}");
    assert!(err.contains("make setup"), "{err}");
}

#[tokio::test]
async fn dlq_list_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open(dir.path()).unwrap();
    local
        .queue
        .subscribe(&troupe_core::Subscription {
            name: "extract".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy: Default::default(),
        })
        .await
        .unwrap();
    let e = Event::new("/test", "t.v1", &serde_json::json!({"x": 1}));
    local
        .queue
        .publish("t", &[Message::from_event(&e)])
        .await
        .unwrap();
    let d = local
        .queue
        .receive("extract", 1, std::time::Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    local
        .queue
        .reject("extract", &d.receipt, "corrupt_pdf", "xref table missing")
        .await
        .unwrap();

    let run = |args: &[&str]| {
        let out = Command::new(troupe_bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["dlq", "list", "extract"])).unwrap();
    assert_eq!(listed[0]["id"], e.id.as_str());
    assert_eq!(listed[0]["reason"], "corrupt_pdf");
    assert_eq!(listed[0]["last_error"], "xref table missing");
    let summary: serde_json::Value = serde_json::from_str(&run(&["dlq", "list"])).unwrap();
    assert_eq!(summary[0]["dead"], 1);
    assert!(run(&["dlq", "redrive", "extract"]).contains("redrove 1"));
    assert_eq!(local.queue.depth("extract").await.unwrap().ready, 1);

    let out = Command::new(troupe_bin())
        .args(["dlq", "list", "nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// `troupe dlq redrive` writes from another process, which no notifier in this one
/// hears: a consumer already waiting still gets the redriven message (the queue's
/// fallback look at the database), well before its wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_what_another_process_redrives() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open(dir.path()).unwrap();
    local
        .queue
        .subscribe(&troupe_core::Subscription {
            name: "extract".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy: Default::default(),
        })
        .await
        .unwrap();
    let e = Event::new("/test", "t.v1", &serde_json::json!({"x": 1}));
    let queue = &local.queue;
    queue
        .publish("t", &[Message::from_event(&e)])
        .await
        .unwrap();
    let d = queue
        .receive("extract", 1, std::time::Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    queue
        .reject("extract", &d.receipt, "corrupt_pdf", "xref table missing")
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(300);
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move {
            let started = std::time::Instant::now();
            let got = queue.receive("extract", 1, wait).await.unwrap();
            (got, started.elapsed())
        }
    });
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            Command::new(troupe_bin())
                .args(["dlq", "redrive", "extract", "--data-dir"])
                .arg(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the redriven message reached the waiting consumer"
    );
    assert_eq!(got[0].id, e.id);
    assert!(waited < wait, "received before the wait ran out");
}

#[test]
fn the_repository_manifest_loads() {
    troupe_tests::components();
    let app = troupe_host::App::load(&troupe_tests::repo_root().join("spin.toml"))
        .unwrap_or_else(|e| panic!("spin.toml, which `make run` serves: {e}"));
    assert!(app.route("/hello/x").is_some());
}

#[test]
fn a_trigger_on_the_wrong_kind_of_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
        "[[trigger.queue]]\ntopic = \"t\"\ncomponent = \"web\"\n[component.web]\nsource = \"{dist}/hello.wasm\"\n",
    );
    let err = up_fails_with(&path);
    assert!(err.contains("trigger.queue[0].component"), "{err}");
    assert!(err.contains("troupe:pipeline/handler"), "{err}");
}

#[test]
fn up_serves_openai_embeddings_on_its_main_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
        "[[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n[component.hello]\nsource = \"{dist}/hello.wasm\"\n",
    );
    let up = troupe_tests::Child::up_with_embeddings(&dir.path().join("data"), &path);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{}/v1/embeddings", up.addr))
        .header("content-type", "application/json")
        .send(r#"{"input": ["Hello, world!", "second"], "model": "all-MiniLM-L6-v2"}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(body["usage"]["prompt_tokens"], 6 + 3);
    let (_, metrics) = troupe_tests::get(&format!("http://{}/metrics", up.addr));
    assert!(metrics.contains("troupe_embed_texts_total 2"), "{metrics}");
    assert!(
        metrics.contains("troupe_invocations_total")
            || metrics.contains("troupe_queue_depth")
            || metrics.contains("# HELP troupe_invocations"),
        "{metrics}"
    );
    let (status, health) = troupe_tests::get(&format!("http://{}/health", up.addr));
    assert_eq!(status, 200, "{health}");
    assert!(health.contains(r#""model":{"status":"ok"}"#), "{health}");
    // The component routes still work beside it.
    assert_eq!(
        troupe_tests::get(&format!("http://{}/hello", up.addr)).0,
        200
    );
}

#[test]
fn a_missing_model_stops_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(dir.path(), "");
    let out = Command::new(troupe_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(dir.path().join("no-model"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--manifest")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("make setup") && err.contains("--model-dir"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_consumes_embedding_jobs_and_exits_cleanly_on_sigterm() {
    use troupe_core::Vectors as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = manifest(dir.path(), "");
    let mut up = troupe_tests::Child::up_with_embeddings(&data, &path);
    let local = Local::open(&data).unwrap();
    local
        .queue
        .subscribe(&troupe_core::Subscription {
            name: "indexer".into(),
            topics: vec!["troupe.embedding.completed".into()],
            subject_prefix: None,
            policy: Default::default(),
        })
        .await
        .unwrap();
    let job = serde_json::json!({"document": "doc-9", "batch": 1, "of": 1, "chunks": [
        {"id": "c1", "text": "Troupe embeds chunks on its worker."},
        {"id": "c2", "text": "Vectors are stored per document."}
    ]});
    let mut event =
        Event::new("/test", "troupe.embedding.requested.v1", &job).with_subject("doc-9");
    event.tenant = Some("acme".into());
    local
        .queue
        .publish("troupe.embedding.requested", &[Message::from_event(&event)])
        .await
        .unwrap();
    let done = troupe_tests::eventually(std::time::Duration::from_secs(30), async || {
        let got = local
            .queue
            .receive("indexer", 1, std::time::Duration::ZERO)
            .await
            .unwrap();
        got.into_iter().next()
    })
    .await
    .expect("a completion event");
    let done = Event::from_json(&done.body).unwrap();
    assert_eq!(done.ty, "troupe.embedding.completed.v1");
    assert_eq!(local.vectors.count("acme", "doc-9").await.unwrap(), 2);

    let pid = up.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = up.child.wait().unwrap();
    assert!(status.success(), "troupe up exits 0 on SIGTERM: {status:?}");
}

#[test]
fn worker_alone_serves_embeddings_health_and_metrics() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(troupe_bin())
        .args(["worker", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(troupe_tests::model_dir())
        .arg("--data-dir")
        .arg(dir.path())
        .env("TROUPE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    let (status, body) = troupe_tests::get(&format!("http://{addr}/health"));
    assert_eq!(status, 200, "{body}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{addr}/v1/embeddings"))
        .send(r#"{"input": "worker alone", "model": "all-MiniLM-L6-v2"}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
    let (_, metrics) = troupe_tests::get(&format!("http://{addr}/metrics"));
    for name in [
        "troupe_embed_batch_tokens",
        "troupe_embed_queue_wait_seconds",
        "troupe_embed_inference_seconds",
        "troupe_embed_tokens_total",
        // Filled by the job consumer: named even before the first job.
        "# TYPE troupe_embed_job_wait_seconds histogram",
        "# TYPE troupe_embed_jobs counter",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    let (status, _) = troupe_tests::get(&format!("http://{addr}/nope"));
    assert_eq!(status, 404);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
