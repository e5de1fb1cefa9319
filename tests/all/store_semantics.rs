//! The state, blob and vector contracts, on both backend sets: SQLite and files, and
//! Postgres (pgvector) and S3 on moto. Each test is written once and instantiated for
//! both by `both!`; the embedded set's own details (file layout, key rules of a file
//! system) stay in `crates/local/tests/state_blobs.rs`.

use std::sync::Arc;

use troupe_core::{Blobs, Error, Event, State, VectorRecord, Vectors};
use troupe_tests::stack::AwsStack;

struct Set {
    state: Arc<dyn State>,
    blobs: Arc<dyn Blobs>,
    vectors: Arc<dyn Vectors>,
    _dir: Option<tempfile::TempDir>,
}

impl Set {
    async fn local() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = troupe_local::Local::open(dir.path()).expect("open");
        Self {
            state: Arc::new(l.state),
            blobs: Arc::new(l.blobs),
            vectors: Arc::new(l.vectors),
            _dir: Some(dir),
        }
    }

    async fn aws() -> Self {
        let stack = tokio::task::spawn_blocking(AwsStack::new)
            .await
            .expect("stack");
        let s = stack.scale().await;
        Self {
            state: Arc::new(s.state),
            blobs: Arc::new(s.blobs),
            vectors: Arc::new(s.vectors),
            _dir: None,
        }
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Set::local().await).await })*
        }
        mod aws {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Set::aws().await).await })*
        }
    };
}

both!(
    compare_and_set_guards_writes,
    concurrent_compare_and_set_loses_no_update,
    event_log_appends_once_per_event_id,
    tenant_feed_reads_on_without_gaps_or_repeats,
    blobs_round_trip_and_list_by_prefix,
    vectors_are_stored_once_searched_per_tenant_and_deleted_for_good,
);

async fn compare_and_set_guards_writes(s: Set) {
    let st = &s.state;
    assert_eq!(st.put("k", b"a", Some(0)).await.unwrap(), 1);
    assert!(matches!(
        st.put("k", b"b", Some(0)).await,
        Err(Error::Conflict {
            expected: 0,
            found: 1,
            ..
        })
    ));
    assert_eq!(st.put("k", b"b", Some(1)).await.unwrap(), 2);
    assert_eq!(st.put("k", b"c", None).await.unwrap(), 3);
    let e = st.get("k").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"c"[..], 3));
    assert!(matches!(
        st.delete("k", Some(2)).await,
        Err(Error::Conflict {
            expected: 2,
            found: 3,
            ..
        })
    ));
    assert!(st.delete("k", Some(3)).await.unwrap());
    assert_eq!(st.get("k").await.unwrap(), None);
    assert!(!st.delete("k", Some(0)).await.unwrap());
    assert!(!st.delete("k", None).await.unwrap());
    // Written again from absent: versions start over.
    assert_eq!(st.put("k", b"d", Some(0)).await.unwrap(), 1);
    for k in ["p/2", "p/1", "q/1", "p0"] {
        st.put(k, b"", None).await.unwrap();
    }
    assert_eq!(st.list("p/").await.unwrap(), ["p/1", "p/2"]);
    assert!(st.get("").await.unwrap_err().to_string().contains("key"));
}

async fn concurrent_compare_and_set_loses_no_update(s: Set) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let st = s.state.clone();
        tasks.spawn(async move {
            for _ in 0..5 {
                loop {
                    let current = st.get("counter").await.unwrap();
                    let (n, version) = current.map_or((0u32, 0), |e| {
                        (
                            String::from_utf8(e.value).unwrap().parse().unwrap(),
                            e.version,
                        )
                    });
                    match st
                        .put("counter", (n + 1).to_string().as_bytes(), Some(version))
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let e = s.state.get("counter").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"40"[..], 40));
}

async fn event_log_appends_once_per_event_id(s: Set) {
    let a = Event::new("/t", "t.a.v1", &serde_json::json!({"n": 1})).with_subject("doc");
    let b = Event::new("/t", "t.b.v1", &serde_json::json!({"n": 2})).with_subject("doc");
    assert_eq!(s.state.append_event("doc", &a).await.unwrap(), 1);
    assert_eq!(s.state.append_event("doc", &b).await.unwrap(), 2);
    assert_eq!(s.state.append_event("doc", &a).await.unwrap(), 1);
    assert_eq!(s.state.read_events("doc").await.unwrap(), [a.clone(), b]);
    assert!(s.state.read_events("other").await.unwrap().is_empty());
    // Concurrent appends of distinct events get distinct, gapless numbers.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let st = s.state.clone();
        tasks.spawn(async move {
            let e = Event::new("/t", "t.c.v1", &serde_json::json!({"i": i}));
            st.append_event("busy", &e).await.unwrap()
        });
    }
    let mut seqs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seqs.push(r.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
}

async fn tenant_feed_reads_on_without_gaps_or_repeats(s: Set) {
    let st = &s.state;
    let event = |n: u32| Event::new("/t", "t.a.v1", &serde_json::json!({"n": n}));
    assert_eq!(st.feed_head("a").await.unwrap(), 0);
    let (a1, b1, a2) = (event(1), event(2), event(3));
    st.append_event("a/doc1", &a1).await.unwrap();
    st.append_event("b/doc1", &b1).await.unwrap();
    st.append_event("a/doc2", &a2).await.unwrap();
    // A repeated append is not a new feed entry; a subject without a tenant has no feed.
    st.append_event("a/doc1", &a1).await.unwrap();
    st.append_event("notenant", &event(4)).await.unwrap();
    let feed = st.read_feed("a", 0, 100).await.unwrap();
    let seen: Vec<_> = feed
        .iter()
        .map(|f| (f.subject.as_str(), &f.event))
        .collect();
    assert_eq!(seen, [("a/doc1", &a1), ("a/doc2", &a2)]);
    assert!(feed[0].position < feed[1].position);
    assert_eq!(st.feed_head("a").await.unwrap(), feed[1].position);
    let b = st.read_feed("b", 0, 100).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].event, b1);
    assert!(st.read_feed("", 0, 100).await.unwrap().is_empty());
    // Reading on from a position: what came after it, a page at a time.
    assert_eq!(
        st.read_feed("a", feed[0].position, 100).await.unwrap(),
        feed[1..]
    );
    assert_eq!(st.read_feed("a", 0, 1).await.unwrap(), feed[..1]);
    // Concurrent appenders: a reader that reads on from the last position it saw
    // collects every event once, in increasing positions.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4u32 {
        let st = st.clone();
        tasks.spawn(async move {
            for i in 0..15 {
                st.append_event(&format!("a/w{w}"), &event(100 + w * 100 + i))
                    .await
                    .unwrap();
            }
        });
    }
    let mut after = feed[1].position;
    let mut got = Vec::new();
    loop {
        let done = tasks.is_empty();
        let page = st.read_feed("a", after, 7).await.unwrap();
        if done && page.is_empty() {
            break; // every appender finished before this read
        }
        if let Some(last) = page.last() {
            after = last.position;
        }
        got.extend(page.into_iter().map(|f| f.event.id));
        if let Some(r) = tasks.try_join_next() {
            r.unwrap();
        }
        tokio::task::yield_now().await;
    }
    let unique: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!((got.len(), unique.len()), (60, 60));
    // Deleting a log takes its events out of the feed.
    assert_eq!(st.delete_events("a/doc1").await.unwrap(), 1);
    let feed = st.read_feed("a", 0, 100).await.unwrap();
    assert_eq!(feed.len(), 61);
    assert!(feed.iter().all(|f| f.subject != "a/doc1"));
}

async fn blobs_round_trip_and_list_by_prefix(s: Set) {
    let b = &s.blobs;
    b.put("documents", "uploads/a.txt", b"alpha").await.unwrap();
    b.put("documents", "uploads/sub/b.txt", b"beta")
        .await
        .unwrap();
    b.put("documents", "chunks/c", b"gamma").await.unwrap();
    b.put("documents", "chunks/c", b"gamma, replaced")
        .await
        .unwrap();
    assert_eq!(
        b.get("documents", "uploads/a.txt").await.unwrap().unwrap(),
        b"alpha"
    );
    assert_eq!(
        b.get("documents", "chunks/c").await.unwrap().unwrap(),
        b"gamma, replaced"
    );
    assert_eq!(b.get("documents", "missing").await.unwrap(), None);
    assert_eq!(
        b.list("documents", "uploads/").await.unwrap(),
        ["uploads/a.txt", "uploads/sub/b.txt"]
    );
    assert_eq!(b.list("documents", "up").await.unwrap().len(), 2);
    assert!(b.delete("documents", "chunks/c").await.unwrap());
    assert!(!b.delete("documents", "chunks/c").await.unwrap());
    assert_eq!(b.get("documents", "chunks/c").await.unwrap(), None);
    let err = b
        .put("Bad_Bucket", "k", b"x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket"), "{err}");
    b.health().await.unwrap();
}

fn record(tenant: &str, document: &str, chunk: &str, vector: [f32; 3], text: &str) -> VectorRecord {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    VectorRecord {
        tenant: tenant.into(),
        document: document.into(),
        chunk: chunk.into(),
        model: "m".into(),
        vector: vector.iter().map(|x| x / norm).collect(),
        text: text.into(),
    }
}

async fn vectors_are_stored_once_searched_per_tenant_and_deleted_for_good(s: Set) {
    let v = &s.vectors;
    let batch = [
        record("t1", "d1", "0", [1.0, 0.0, 0.0], "east"),
        record("t1", "d1", "1", [0.0, 1.0, 0.0], "north"),
        record("t1", "d2", "0", [0.7, 0.7, 0.0], "north-east"),
        record("t2", "d9", "0", [1.0, 0.0, 0.0], "other tenant's east"),
    ];
    assert_eq!(v.upsert(&batch).await.unwrap(), 4);
    // A redelivered job writes nothing twice.
    assert_eq!(v.upsert(&batch[..2]).await.unwrap(), 0);
    assert_eq!(v.count("t1", "d1").await.unwrap(), 2);
    let hits = v.search("t1", "m", &[1.0, 0.0, 0.0], 2).await.unwrap();
    let got: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| (h.document.as_str(), h.text.as_str()))
        .collect();
    assert_eq!(got, [("d1", "east"), ("d2", "north-east")]);
    assert!((hits[0].score - 1.0).abs() < 1e-5, "{hits:?}");
    assert!(hits[0].score >= hits[1].score);
    // Scoped to the tenant and the model; k larger than what is there.
    assert_eq!(
        v.search("t2", "m", &[1.0, 0.0, 0.0], 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        v.search("t1", "other-model", &[1.0, 0.0, 0.0], 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        v.search("t1", "m", &[1.0, 0.0, 0.0, 0.0], 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Deletes are final: a late upsert of the same document is ignored.
    assert_eq!(v.delete_document("t1", "d1").await.unwrap(), 2);
    assert_eq!(v.count("t1", "d1").await.unwrap(), 0);
    assert_eq!(v.upsert(&batch[..2]).await.unwrap(), 0);
    assert_eq!(v.count("t1", "d1").await.unwrap(), 0);
    let hits = v.search("t1", "m", &[1.0, 0.0, 0.0], 5).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].document, "d2");
    v.health().await.unwrap();
}
