//! Durability: `troupe up` is SIGKILLed in the middle of a batch; after a restart every
//! accepted message is delivered and none is lost. A data directory (or queue set)
//! from before topic lists hands what its per-topic subscriptions hold to the
//! subscription that replaces them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_core::{DeliveryPolicy, Event, Message, Queue, State, Subscription};
use troupe_local::Local;
use troupe_tests::stack::{Stack, runtime};
use troupe_tests::{Child, call, eventually, manifest};

troupe_tests::both!(the_per_topic_subscriptions_of_before_hand_their_messages_on);

const TOTAL: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = manifest(
        dir.path(),
        r#"
[[trigger.queue]]
topic = "work.v1"
component = "recorder"
batch_size = 10
visibility_timeout_ms = 2000
[component.recorder]
source = "{dist}/recorder.wasm"
variables = { delay_ms = "100" }
[component.recorder.tool.troupe]
max_concurrency = 1
timeout_ms = 1500
[component.recorder.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#,
    );
    // First start declares the subscription; then messages are accepted through the
    // same database from this process, as another producer would.
    let first = Child::up(&data, &path);
    let local = Local::open(&data).unwrap();
    let events: Vec<Event> = (0..TOTAL)
        .map(|i| Event::new("/test", "test.work.v1", &serde_json::json!({"n": i})))
        .collect();
    let messages: Vec<Message> = events.iter().map(Message::from_event).collect();
    assert_eq!(
        local.queue.publish("work.v1", &messages).await.unwrap(),
        TOTAL
    );

    let seen = async || local.state.list("count/default/").await.unwrap().len();
    let before = eventually(Duration::from_secs(20), async || {
        let n = seen().await;
        (n >= 30).then_some(n)
    })
    .await
    .expect("the first process handles some batches");
    first.kill();
    assert!(
        before < TOTAL,
        "killed mid-stream: {before} of {TOTAL} handled"
    );
    let depth = local.queue.depth("recorder").await.unwrap();
    assert!(
        depth.ready + depth.in_flight > 0,
        "work was left when it died"
    );

    let _second = Child::up(&data, &path);
    eventually(Duration::from_secs(60), async || {
        let d = local.queue.depth("recorder").await.unwrap();
        (d.ready + d.in_flight == 0).then_some(())
    })
    .await
    .expect("the restarted process drains the queue");
    for e in &events {
        let count = local
            .state
            .get(&format!("count/default/{}", e.id))
            .await
            .unwrap();
        assert!(
            count.is_some(),
            "event {} was accepted but never delivered",
            e.id
        );
    }
    assert_eq!(local.queue.depth("recorder").await.unwrap().dead, 0);
}

/// A file dropped into the uploads folder becomes one document even when `troupe up`
/// dies between announcing it and recording it seen (each announcement carries its
/// own time, from which intake derives the document id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_is_one_document_when_troupe_dies_before_recording_it_seen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let local = Local::open(&data).unwrap();
    // The crash point: recording a file as seen fails, as if the process died right
    // after announcing it.
    local
        .queue
        .db()
        .write(|c| {
            c.execute_batch(
                "CREATE TRIGGER crash_before_seen BEFORE INSERT ON blob_seen
                 BEGIN SELECT RAISE(ABORT, 'the process died here'); END;",
            )
            .map_err(|e| troupe_core::Error::backend("sqlite", e))
        })
        .await
        .unwrap();
    let uploads = data.join("blobs/documents/uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let file = uploads.join("tides.md");
    std::fs::write(&file, b"# Tides\n\nTwice a day.").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(5))
        .unwrap();
    let documents = async || local.state.list("doc/default/").await.unwrap();

    let first = Child::pipeline(&data, &["--no-embeddings"], &[]);
    // Several scans come and go (one a second), each dying at the same point.
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.kill();
    local
        .queue
        .db()
        .write(|c| {
            c.execute_batch("DROP TRIGGER crash_before_seen")
                .map_err(|e| troupe_core::Error::backend("sqlite", e))
        })
        .await
        .unwrap();

    let _second = Child::pipeline(&data, &["--no-embeddings"], &[]);
    eventually(Duration::from_secs(30), async || {
        (!documents().await.is_empty()).then_some(())
    })
    .await
    .expect("the dropped-in file becomes a document after the restart");
    // Everything announced has been handled by now (and a few more scans ran).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let docs = documents().await;
    assert_eq!(docs.len(), 1, "one file, one document: {docs:?}");
}

/// The set's queue, opened in this process.
fn queue_of(stack: &Stack) -> Arc<dyn Queue> {
    runtime().block_on(async {
        match stack {
            Stack::Local { data } => {
                Arc::new(Local::open(data).expect("open data dir").queue) as Arc<dyn Queue>
            }
            Stack::Aws { aws, .. } => Arc::new(aws.scale().await.queue) as Arc<dyn Queue>,
        }
    })
}

/// Before topic lists, `status` had a subscription per topic (`status-uploaded` …).
/// Messages still in them when the new manifest starts are handled by `status`, dead
/// letters included, and the old subscriptions receive nothing more.
fn the_per_topic_subscriptions_of_before_hand_their_messages_on(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let queue = queue_of(&stack);
    let doc = "before-lists-1";
    runtime().block_on(async {
        for (name, topic) in [
            ("status-uploaded", "troupe.document.uploaded"),
            ("status-failed", "troupe.document.failed"),
        ] {
            queue
                .subscribe(&Subscription {
                    name: name.into(),
                    topics: vec![topic.into()],
                    subject_prefix: None,
                    policy: DeliveryPolicy::default(),
                })
                .await
                .expect("declaring an old subscription");
        }
        let mut uploaded = Event::new(
            "/troupe/api",
            "troupe.document.uploaded.v1",
            &serde_json::json!({
                "document": doc, "name": "before.txt", "content_type": "text/plain",
                "size": 6, "blob": { "bucket": "documents", "key": format!("docs/default/{doc}") },
            }),
        )
        .with_subject(doc);
        uploaded.id = format!("{doc}-uploaded");
        uploaded.tenant = Some("default".into());
        let sent = queue
            .publish(
                "troupe.document.uploaded",
                &[Message::from_event(&uploaded)],
            )
            .await
            .expect("publishing to the old subscription");
        assert_eq!(sent, 1);
        // A dead letter of the old `status-failed`.
        let mut failed = Event::new("/test", "troupe.document.failed.v1", &serde_json::json!({}));
        failed.id = "dead-before-lists".into();
        queue
            .publish("troupe.document.failed", &[Message::from_event(&failed)])
            .await
            .expect("publishing");
        let got = queue
            .receive("status-failed", 1, Duration::from_secs(1))
            .await
            .expect("receiving");
        queue
            .reject(
                "status-failed",
                &got[0].receipt,
                "old_rejection",
                "before lists",
            )
            .await
            .expect("dead-lettering");
    });

    let up = Child::pipeline_on(&stack, &["--no-embeddings"], &[]);
    let base = format!("http://{}", up.addr);
    let start = Instant::now();
    loop {
        let (status, record) = call("GET", &format!("{base}/v1/documents/{doc}"), "", b"");
        if status == 200 {
            assert_eq!(record["name"], "before.txt", "{record}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "status never handled the event left in status-uploaded: {status} {record}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dead = stack.dead_letters("status");
    assert!(
        dead.iter()
            .any(|l| l.id == "dead-before-lists" && l.reason == "old_rejection"),
        "{dead:?}"
    );
    let names: Vec<String> = runtime().block_on(async {
        queue
            .subscriptions()
            .await
            .expect("listing")
            .into_iter()
            .map(|s| s.name)
            .collect()
    });
    assert!(
        names.contains(&"status".to_owned()) && !names.iter().any(|n| n.starts_with("status-")),
        "{names:?}"
    );
}
