//! Delivery that never drops, end to end with the `troupe` binary and the repository's
//! `spin.toml`: a deterministic fault fails its document at once (compensated, the
//! dead letter keeping the reason); documents of one, two and seven embedding batches
//! (claim-checked jobs among them) join once each with every event delivered twice; a
//! document one of whose batches is dead-lettered fails and never shows `indexed`.
//! On the embedded backends and on S3 + SQS + Postgres.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use troupe_tests::api::{search, settle, settle_watching, trail, trail_types, upload};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, call};

use troupe_tests::both;

both!(
    a_document_whose_extraction_hits_its_memory_cap_fails_at_once,
    documents_of_one_two_and_seven_batches_join_once_with_every_event_twice,
    a_document_one_of_whose_batches_is_dead_lettered_fails_and_is_compensated,
);

/// Polls `check` every 200 ms until it returns `Some`, for at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < within, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `paragraphs` paragraphs of distinct English-like text, about 60 words each.
fn text(seed: &str, paragraphs: usize) -> String {
    const WORDS: &[&str] = &[
        "river", "lantern", "harbor", "meadow", "copper", "signal", "orchard", "glacier", "engine",
        "ledger", "canyon", "violin", "pepper", "market", "compass", "thunder", "garden", "bridge",
        "forest", "archive", "planet", "silver", "window", "valley",
    ];
    let mut out = String::new();
    for p in 0..paragraphs {
        out.push_str(&format!("{seed} section {p}. "));
        for w in 0..60 {
            out.push_str(WORDS[(p * 7 + w * 5 + w / 3) % WORDS.len()]);
            out.push(if w % 12 == 11 { '.' } else { ' ' });
            if w % 12 == 11 {
                out.push(' ');
            }
        }
        out.push_str("\n\n");
    }
    out
}

fn a_document_whose_extraction_hits_its_memory_cap_fails_at_once(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let troupe = Child::pipeline_on(
        &stack,
        &[],
        &[("TROUPE_VARIABLE_EXTRACT_MEMORY_LIMIT_MB", "24".into())],
    );
    let base = format!("http://{}", troupe.addr);
    // 30 MB of text: `extract` cannot even read it within 24 MiB, on any delivery.
    let big = "a few words of plain text, over and over again.\n".repeat(30 << 20 >> 6);
    let started = Instant::now();
    let id = upload(&base, "big.txt", "text/plain", big.as_bytes());
    let doc = settle(&base, &id, Duration::from_secs(90));
    let took = started.elapsed();
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "extract_failed", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("memory_cap"), "{message}");
    assert!(message.contains("troupe dlq list extract"), "{message}");
    // Not five retries and then the sweeper's timeout: at once.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Compensation ran.
    wait_for(Duration::from_secs(30), "compensation runs", || {
        trail_types(&base, &id)
            .iter()
            .any(|t| t == "troupe.document.compensated.v1")
            .then_some(())
    });
    // The dead letter keeps the reason; it was delivered once.
    let dead = stack.dead_letters("extract");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "memory_cap", "{dead:?}");
    assert_eq!(dead[0].deliveries, 1, "{dead:?}");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("memory cap of 24 MiB"),
        "{dead:?}"
    );
    // The notice was consumed, and nothing else is left waiting.
    wait_for(Duration::from_secs(30), "the notice is consumed", || {
        let d = stack.depth("sweeper-dead-lettered");
        (d.ready == 0 && d.in_flight == 0 && d.dead == 0).then_some(())
    });
    drop(troupe);
}

/// What one test document should become.
struct Expect {
    name: &'static str,
    batches: u64,
    id: String,
}

fn documents_of_one_two_and_seven_batches_join_once_with_every_event_twice(
    stack: fn(&Path) -> Stack,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let troupe = Child::pipeline_on(
        &stack,
        &["--duplicate-deliveries"],
        &[
            // Three chunks a batch, and jobs over 2 KiB claim-checked (chunks of some
            // 1 KiB each: every multi-chunk job).
            ("TROUPE_VARIABLE_BATCH_CHUNKS", "3".into()),
            ("TROUPE_VARIABLE_CLAIM_CHECK_BYTES", "2048".into()),
        ],
    );
    let base = format!("http://{}", troupe.addr);
    let mut docs = [
        Expect {
            name: "one",
            batches: 1,
            id: String::new(),
        },
        Expect {
            name: "two",
            batches: 2,
            id: String::new(),
        },
        Expect {
            name: "seven",
            batches: 7,
            id: String::new(),
        },
    ];
    for d in &mut docs {
        // Chunks of at most 254 tokens: some 3.2 paragraphs of 60 words each.
        let paragraphs = match d.batches {
            1 => 1,
            2 => 16,
            _ => 63,
        };
        let body = text(d.name, paragraphs);
        d.id = upload(
            &base,
            &format!("{}.txt", d.name),
            "text/plain",
            body.as_bytes(),
        );
    }
    for d in &docs {
        let doc = settle(&base, &d.id, Duration::from_secs(180));
        assert_eq!(doc["status"], "indexed", "{}: {doc}", d.name);
        assert_eq!(doc["progress"]["total"], d.batches, "{}: {doc}", d.name);
        assert_eq!(doc["progress"]["done"], d.batches, "{}: {doc}", d.name);
        let chunks = doc["chunks"].as_u64().expect("chunks");
        assert!(
            chunks > (d.batches - 1) * 3 && chunks <= d.batches * 3,
            "{}: {chunks} chunks for {} batches",
            d.name,
            d.batches
        );
        assert_eq!(
            stack.vector_count(&d.id) as u64,
            chunks,
            "{}: one vector per chunk",
            d.name
        );
        // One completion per batch, one `indexed`, no event twice (trail() checks).
        let events = trail(&base, &d.id);
        let count = |ty: &str| events.iter().filter(|e| e["type"] == ty).count() as u64;
        assert_eq!(
            count("troupe.embedding.completed.v1"),
            d.batches,
            "{}",
            d.name
        );
        assert_eq!(count("troupe.document.indexed.v1"), 1, "{}", d.name);
        let batches: std::collections::BTreeSet<u64> = events
            .iter()
            .filter(|e| e["type"] == "troupe.embedding.completed.v1")
            .filter_map(|e| e["data"]["batch"].as_u64())
            .collect();
        assert_eq!(
            batches,
            (1..=d.batches).collect(),
            "{}: each batch once",
            d.name
        );
    }
    // The multi-chunk jobs went by claim check (their chunk blobs remain until the
    // daily purge).
    let seven = &docs[2].id;
    let claimed = stack.keys(&format!("chunks/default/{seven}/"));
    assert_eq!(claimed.len(), 7, "{claimed:?}");
    // Search: no chunk twice.
    let hits = search(&base, "seven section 20 lantern harbor", 50);
    assert!(!hits.is_empty());
    let mut seen = std::collections::HashSet::new();
    for h in &hits {
        let key = (
            h["document_id"].as_str().unwrap_or_default().to_owned(),
            h["chunk_id"].as_str().unwrap_or_default().to_owned(),
        );
        assert!(seen.insert(key.clone()), "hit {key:?} twice: {hits:?}");
    }
    drop(troupe);
}

/// A batch whose chunks are gone is rejected by the worker: the document fails
/// (compensated), even though its other batches complete, and never shows `indexed`.
fn a_document_one_of_whose_batches_is_dead_lettered_fails_and_is_compensated(
    stack: fn(&Path) -> Stack,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let env = [
        ("TROUPE_VARIABLE_BATCH_CHUNKS", "3".to_owned()),
        ("TROUPE_VARIABLE_CLAIM_CHECK_BYTES", "2048".to_owned()),
    ];
    // The functions without the job consumer: the jobs wait in their queue.
    let manifest = troupe_tests::repo_root().join("spin.toml");
    stack.init(&manifest);
    let serve = Child::serve_with(&stack, stack.data(), &manifest, &[], &env);
    let base = format!("http://{}", serve.addr);
    let id = upload(
        &base,
        "seven.txt",
        "text/plain",
        text("doomed", 63).as_bytes(),
    );
    wait_for(Duration::from_secs(60), "extraction queues 7 jobs", || {
        let (_, doc) = call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
        (doc["progress"]["total"] == 7).then_some(())
    });
    // Batch 4's chunks vanish before the worker reads them.
    stack.delete_object(&format!("chunks/default/{id}/00004.json"));
    let worker = Child::worker_on(&stack, &[]);
    let mut shown: Vec<String> = Vec::new();
    let doc = settle_watching(&base, &id, Duration::from_secs(120), |d: &Value| {
        if let Some(s) = d["status"].as_str() {
            shown.push(s.to_owned());
        }
    });
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "chunks_missing", "{doc}");
    let dead = stack.dead_letters("gpu-worker");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "chunks_missing");
    // The other batches still complete; whatever they stored is removed again.
    wait_for(Duration::from_secs(60), "no vector is left", || {
        let d = stack.depth("gpu-worker");
        (d.ready == 0 && d.in_flight == 0 && stack.vector_count(&id) == 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, after) = call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
    assert_eq!(after["status"], "failed", "{after}");
    let types = trail_types(&base, &id);
    assert!(
        types.iter().any(|t| t == "troupe.document.compensated.v1"),
        "{types:?}"
    );
    assert!(
        !types.iter().any(|t| t == "troupe.document.indexed.v1"),
        "{types:?}"
    );
    assert!(
        !shown.iter().any(|s| s == "indexed"),
        "the document showed indexed: {shown:?}"
    );
    assert_eq!(stack.vector_count(&id), 0);
    drop((worker, serve));
}

/// A queue subscription whose component takes 3 s per batch; `visibility_ms` its lease.
fn slow_app(visibility_ms: u64) -> String {
    format!(
        r#"
[[trigger.queue]]
topic = "slow.v1"
component = "slow"
subscription = "slow"
visibility_timeout_ms = {visibility_ms}
[component.slow]
source = "{{dist}}/recorder.wasm"
variables = {{ delay_ms = "3000" }}
[component.slow.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#
    )
}

fn slow_event() -> troupe_core::Message {
    troupe_core::Message::from_event(&troupe_core::Event::new(
        "/test",
        "test.slow.v1",
        &serde_json::json!({}),
    ))
}

async fn count(local: &troupe_local::Local, id: &str) -> u64 {
    use troupe_core::State as _;
    local
        .state
        .get(&format!("count/default/{id}"))
        .await
        .unwrap()
        .map_or(0, |e| String::from_utf8_lossy(&e.value).parse().unwrap())
}

/// A 1 s lease on 3 s of work: renewed while the component runs, the message is
/// handled once, not handed out again when the first second runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_renewed_while_its_component_runs() {
    use troupe_core::Queue as _;
    let host = troupe_tests::InProcess::start(&slow_app(1000)).await;
    let message = slow_event();
    host.local
        .queue
        .publish("slow.v1", std::slice::from_ref(&message))
        .await
        .unwrap();
    let done = troupe_tests::eventually(Duration::from_secs(20), async || {
        let d = host.local.queue.depth("slow").await.unwrap();
        (count(&host.local, &message.id).await >= 1 && d.ready == 0 && d.in_flight == 0)
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "the message was handled and acked");
    // Had the lease run out, a second delivery would have run (and counted) too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count(&host.local, &message.id).await, 1, "handled once");
    host.shutdown().await;
}

/// `troupe up` killed while a message is leased for ten minutes: started again on the
/// same data directory, it takes the message up at once rather than after the lease,
/// and the delivery the killed process never finished is not counted.
#[test]
fn a_restart_releases_the_leases_of_the_killed_process_at_once() {
    use troupe_core::Queue as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = troupe_tests::manifest(dir.path(), &slow_app(600_000));
    let data = dir.path().join("data");
    let rt = troupe_tests::stack::runtime();
    let first = Child::up(&data, &manifest);
    let local = troupe_local::Local::open(&data).expect("data dir");
    let message = slow_event();
    rt.block_on(
        local
            .queue
            .publish("slow.v1", std::slice::from_ref(&message)),
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the message is leased", || {
        let d = rt.block_on(local.queue.depth("slow")).unwrap();
        (d.in_flight == 1).then_some(())
    });
    first.kill();
    let restarted = Instant::now();
    let second = Child::up(&data, &manifest);
    wait_for(
        Duration::from_secs(20),
        "the restarted host handles the message",
        || {
            let d = rt.block_on(local.queue.depth("slow")).unwrap();
            (rt.block_on(count(&local, &message.id)) == 1 && d.in_flight == 0 && d.ready == 0)
                .then_some(())
        },
    );
    let recovered = restarted.elapsed();
    eprintln!("recovered {recovered:?} after the restart");
    assert!(recovered < Duration::from_secs(15), "{recovered:?}");
    drop(second);
}
