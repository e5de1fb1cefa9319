//! Retention: nothing is kept forever. A settled document's working state goes soon
//! after it settles (its record and trail stay); a deleted document goes entirely
//! once compensation is done, and a late event does not bring it back; the host
//! purges dead letters past their retention and expired dedupe claims. Prefix
//! listings are index range scans on both backends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_core::{Event, Message, Queue, State};
use troupe_tests::stack::{AwsStack, Stack, runtime};
use troupe_tests::{Child, call};

use troupe_tests::both;

both!(settled_documents_lose_their_working_state_and_deleted_ones_everything);

/// The set's state store and queue, opened in this process.
fn backends(stack: &Stack) -> (Arc<dyn State>, Arc<dyn Queue>) {
    runtime().block_on(async {
        match stack {
            Stack::Local { data } => {
                let l = troupe_local::Local::open(data).expect("open data dir");
                (
                    Arc::new(l.state) as Arc<dyn State>,
                    Arc::new(l.queue) as Arc<dyn Queue>,
                )
            }
            Stack::Aws { aws, .. } => {
                let s = aws.scale().await;
                (Arc::new(s.state) as _, Arc::new(s.queue) as _)
            }
        }
    })
}

/// A webhook receiver that answers 200 to everything.
fn hooks() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let mut length = 0;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    url
}

fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn settled_documents_lose_their_working_state_and_deleted_ones_everything(
    stack: fn(&Path) -> Stack,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let up = Child::pipeline_on(
        &stack,
        &[],
        &[
            ("TROUPE_VARIABLE_WEBHOOK_URLS", hooks()),
            ("TROUPE_VARIABLE_WEBHOOK_SECRET", "s".into()),
            ("TROUPE_VARIABLE_RETENTION_INTERVAL_MS", "200".into()),
            ("TROUPE_VARIABLE_SWEEP_SCHEDULE", "*/5 * * * * *".into()),
            ("TROUPE_VARIABLE_SETTLED_RETENTION_MS", "8000".into()),
            ("TROUPE_VARIABLE_TOMBSTONE_RETENTION_MS", "20000".into()),
        ],
    );
    let base = format!("http://{}", up.addr);
    let (state, queue) = backends(&stack);
    let keys = |prefix: &str| -> Vec<String> {
        let (st, prefix) = (state.clone(), prefix.to_owned());
        runtime().block_on(async move { st.list(&prefix).await.expect("listing state") })
    };
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=kept.txt"),
        "text/plain",
        b"Retention keeps the record and the trail of a settled document.",
    );
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().expect("id").to_owned();
    let doc = |id: &str| call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
    wait_until("the document is indexed", Duration::from_secs(120), || {
        doc(&id).1["status"] == "indexed"
    });
    let working = |id: &str| -> Vec<String> {
        let mut found = Vec::new();
        for prefix in ["heartbeat/", "join/", "active/", "settled/"] {
            found.extend(
                keys(&format!("{prefix}default/{id}"))
                    .into_iter()
                    .filter(|k| k.ends_with(id)),
            );
        }
        found.extend(
            keys("webhook/")
                .into_iter()
                .filter(|k| k.ends_with(&format!("/{id}-indexed"))),
        );
        found
    };
    // Right after settling the working state is there (the webhook claim once sent).
    wait_until(
        "the working state and the webhook claim are there",
        Duration::from_secs(6),
        || {
            let w = working(&id);
            ["heartbeat/", "join/", "settled/", "webhook/"]
                .iter()
                .all(|p| w.iter().any(|k| k.starts_with(p)))
        },
    );
    wait_until(
        "the settled document's working state is purged",
        Duration::from_secs(60),
        || working(&id).is_empty(),
    );
    // The record and the trail stay.
    let (status, kept) = doc(&id);
    assert_eq!((status, kept["status"].as_str()), (200, Some("indexed")));
    let (status, trail) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
    assert_eq!(status, 200);
    assert!(trail.as_array().is_some_and(|t| t.len() >= 4), "{trail}");
    let subject = format!("default/{id}");
    let read_log = |subject: &str| -> Vec<Event> {
        let (st, subject) = (state.clone(), subject.to_owned());
        runtime().block_on(async move { st.read_events(&subject).await.expect("reading the log") })
    };
    let uploaded = read_log(&subject)
        .into_iter()
        .find(|e| e.ty == "troupe.document.uploaded.v1")
        .expect("the uploaded event in the log");

    // Deleting removes everything once compensation is done: GET says 404.
    let (status, _) = call("DELETE", &format!("{base}/v1/documents/{id}"), "", b"");
    assert_eq!(status, 202);
    wait_until(
        "the deleted document answers 404",
        Duration::from_secs(60),
        || doc(&id).0 == 404,
    );
    let (status, _) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
    assert_eq!(status, 404);
    assert_eq!(stack.vector_count(&id), 0);
    assert!(
        read_log(&subject).is_empty(),
        "the trail of a deleted document remains"
    );
    assert!(keys(&format!("doc/default/{id}")).is_empty());
    assert_eq!(keys(&format!("gone/default/{id}")).len(), 1, "no tombstone");

    // A late `uploaded` for it (a fresh id: not a queue duplicate) brings nothing back.
    let mut late = uploaded;
    late.id = format!("{id}-uploaded-late");
    let q = queue.clone();
    runtime().block_on(async move {
        q.publish("troupe.document.uploaded", &[Message::from_event(&late)])
            .await
            .expect("publishing a late event")
    });
    wait_until(
        "status took the late event",
        Duration::from_secs(30),
        || {
            let q = queue.clone();
            runtime().block_on(async move {
                let d = q.depth("status").await.expect("depth");
                d.ready + d.in_flight == 0
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        doc(&id).0,
        404,
        "a late event resurrected the deleted document"
    );
    assert!(
        read_log(&subject).is_empty(),
        "a late event started a new trail"
    );
    // The working state of the deleted document goes with it, and then its tombstone.
    wait_until(
        "the deleted document's working state is purged",
        Duration::from_secs(30),
        || working(&id).is_empty(),
    );
    wait_until("the tombstone is purged", Duration::from_secs(60), || {
        keys(&format!("gone/default/{id}")).is_empty()
    });
    drop(up);
}

/// Postgres: a prefix listing is a range scan of the primary key; the host's purge
/// removes dedupe claims past their window (and nothing else) and old vector
/// tombstones; a subject's log can be deleted.
#[test]
fn postgres_lists_by_index_range_and_purges_expired_claims() {
    let aws = AwsStack::new();
    runtime().block_on(async {
        let scale = aws.scale().await;
        let st = &scale.state;
        for key in ["doc/", "doc/a", "doc0", "doc.", "docx", "active/a"] {
            st.put(key, b"1", None).await.expect("put");
        }
        assert_eq!(st.list("doc/").await.expect("list"), ["doc/", "doc/a"]);

        let (client, conn) = tokio_postgres::connect(&aws.database_url, tokio_postgres::NoTls)
            .await
            .expect("connecting");
        tokio::spawn(conn);
        // With so few rows the planner would scan the table anyway; forbidding that
        // shows whether the query can use the index at all.
        client
            .batch_execute("SET enable_seqscan = off")
            .await
            .expect("set");
        let plan: Vec<String> = client
            .query(
                format!("EXPLAIN {}", troupe_postgres::state::LIST_RANGE).as_str(),
                &[&"doc/", &"doc0"],
            )
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        // The range bounds the index scan (not a filter over every key of it).
        let bounded = plan
            .lines()
            .any(|l| l.contains("Index Cond") && l.contains("key >=") && l.contains("key <"));
        assert!(bounded && plan.contains("troupe_kv_pkey"), "{plan}");

        for (key, value) in [
            ("queue-dedupe/p-q/1", "1000"),
            ("queue-dedupe/p-q/2", "5000 owner"),
            ("queue-dedupe/p-q/3", "not a time"),
            ("queue-dedupe/other-q/4", "1000"),
        ] {
            st.put(key, value.as_bytes(), None).await.expect("put");
        }
        assert_eq!(
            st.purge_expired("queue-dedupe/p-", 2000)
                .await
                .expect("purge"),
            1
        );
        assert_eq!(
            st.purge_expired("queue-dedupe/p-", 6000)
                .await
                .expect("purge"),
            1
        );
        assert_eq!(
            st.list("queue-dedupe/").await.expect("list"),
            ["queue-dedupe/other-q/4", "queue-dedupe/p-q/3"]
        );

        // Vector tombstones go once old enough, not before.
        troupe_core::Vectors::delete_document(&scale.vectors, "t", "d")
            .await
            .expect("tombstone");
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_millis(),
        )
        .expect("ms");
        let vectors = &scale.vectors;
        assert_eq!(
            vectors
                .purge_tombstones(now - 3_600_000)
                .await
                .expect("purge"),
            0
        );
        assert_eq!(
            vectors.purge_tombstones(now + 60_000).await.expect("purge"),
            1
        );

        let mut e = Event::new("test", "t.v1", &serde_json::json!({}));
        st.append_event("t/a", &e).await.expect("append");
        e.id = "second".into();
        st.append_event("t/a", &e).await.expect("append");
        st.append_event("t/ab", &e).await.expect("append");
        assert_eq!(st.delete_events("t/a").await.expect("delete"), 2);
        assert!(st.read_events("t/a").await.expect("read").is_empty());
        assert_eq!(st.read_events("t/ab").await.expect("read").len(), 1);
    });
}

/// `troupe up` purges dead letters once they are older than
/// `--dead-letter-retention-ms`.
#[test]
fn the_host_purges_dead_letters_past_their_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::local(dir.path());
    let up = Child::pipeline_on(
        &stack,
        &["--no-embeddings"],
        &[
            ("TROUPE_MAINTENANCE_INTERVAL_MS", "200".into()),
            ("TROUPE_DEAD_LETTER_RETENTION_MS", "3000".into()),
        ],
    );
    let local = troupe_local::Local::open(stack.data()).expect("open data dir");
    let dead = || {
        runtime().block_on(async {
            troupe_core::DeadLetters::dead_letters(&local.queue, "status", 10)
                .await
                .expect("listing dead letters")
                .len()
        })
    };
    // An event without a valid subject is rejected at once: a dead letter.
    let bad = Event::new(
        "test",
        "troupe.document.uploaded.v1",
        &serde_json::json!({}),
    )
    .with_subject("not a valid id!");
    runtime().block_on(async {
        local
            .queue
            .publish("troupe.document.uploaded", &[Message::from_event(&bad)])
            .await
            .expect("publish")
    });
    wait_until(
        "the bad event is dead-lettered",
        Duration::from_secs(30),
        || dead() == 1,
    );
    // Kept for a while, then gone.
    let died = Instant::now();
    wait_until("the dead letter is purged", Duration::from_secs(30), || {
        dead() == 0
    });
    assert!(
        died.elapsed() >= Duration::from_millis(2000),
        "purged after {:?}, before its retention",
        died.elapsed()
    );
    drop(up);
}
