//! State (compare-and-set, event log) and filesystem blobs (atomic writes,
//! object-created notifications).

use std::time::Duration;

use troupe_core::blobs::{OBJECT_CREATED_TYPE, created_topic};
use troupe_core::{Blobs, DeliveryPolicy, Error, Event, ObjectCreated, Queue, State, Subscription};
use troupe_local::Local;

#[tokio::test]
async fn compare_and_set_guards_writes() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    assert_eq!(l.state.put("k", b"a", Some(0)).await.unwrap(), 1);
    assert!(matches!(
        l.state.put("k", b"b", Some(0)).await,
        Err(Error::Conflict {
            expected: 0,
            found: 1,
            ..
        })
    ));
    assert_eq!(l.state.put("k", b"b", Some(1)).await.unwrap(), 2);
    assert_eq!(l.state.put("k", b"c", None).await.unwrap(), 3);
    let e = l.state.get("k").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"c"[..], 3));
    assert!(l.state.delete("k", Some(2)).await.is_err());
    assert!(l.state.delete("k", Some(3)).await.unwrap());
    assert_eq!(l.state.get("k").await.unwrap(), None);
    l.state.put("p/1", b"", None).await.unwrap();
    l.state.put("p/2", b"", None).await.unwrap();
    l.state.put("q/1", b"", None).await.unwrap();
    assert_eq!(l.state.list("p/").await.unwrap(), ["p/1", "p/2"]);
    assert!(
        l.state
            .get("")
            .await
            .unwrap_err()
            .to_string()
            .contains("key")
    );
}

#[tokio::test]
async fn event_log_appends_once_per_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    let a = Event::new("/t", "t.a.v1", &serde_json::json!({"n": 1})).with_subject("doc");
    let b = Event::new("/t", "t.b.v1", &serde_json::json!({"n": 2})).with_subject("doc");
    assert_eq!(l.state.append_event("doc", &a).await.unwrap(), 1);
    assert_eq!(l.state.append_event("doc", &b).await.unwrap(), 2);
    assert_eq!(l.state.append_event("doc", &a).await.unwrap(), 1);
    let log = l.state.read_events("doc").await.unwrap();
    assert_eq!(log, [a, b]);
}

#[tokio::test]
async fn blobs_round_trip_and_list_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    l.blobs
        .put("docs", "uploads/a.txt", b"alpha")
        .await
        .unwrap();
    l.blobs
        .put("docs", "uploads/sub/b.txt", b"beta")
        .await
        .unwrap();
    l.blobs.put("docs", "chunks/c", b"gamma").await.unwrap();
    assert_eq!(
        l.blobs.get("docs", "uploads/a.txt").await.unwrap().unwrap(),
        b"alpha"
    );
    assert_eq!(l.blobs.get("docs", "missing").await.unwrap(), None);
    assert_eq!(
        l.blobs.list("docs", "uploads/").await.unwrap(),
        ["uploads/a.txt", "uploads/sub/b.txt"]
    );
    assert_eq!(l.blobs.list("docs", "up").await.unwrap().len(), 2);
    // Files are plain files an operator can read.
    assert_eq!(
        std::fs::read(dir.path().join("blobs/docs/chunks/c")).unwrap(),
        b"gamma"
    );
    assert!(l.blobs.delete("docs", "chunks/c").await.unwrap());
    assert!(!l.blobs.delete("docs", "chunks/c").await.unwrap());
    for bad in ["../escape", "/abs", "a//b", ""] {
        let err = l
            .blobs
            .put("docs", bad, b"x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("key"), "{bad}: {err}");
    }
    assert!(
        l.blobs
            .put("Bad_Bucket", "k", b"x")
            .await
            .unwrap_err()
            .to_string()
            .contains("bucket")
    );
}

#[tokio::test]
async fn writes_under_a_watched_prefix_notify_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    l.queue
        .subscribe(&Subscription {
            name: "ingest".into(),
            topic: created_topic("docs"),
            subject_prefix: Some("uploads/".into()),
            policy: DeliveryPolicy::default(),
        })
        .await
        .unwrap();
    l.blobs
        .put("docs", "uploads/report.txt", b"hello")
        .await
        .unwrap();
    l.blobs
        .put("docs", "chunks/1", b"not watched")
        .await
        .unwrap();
    let got = l.queue.receive("ingest", 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    let event = Event::from_json(&got[0].body).unwrap();
    assert_eq!(event.ty, OBJECT_CREATED_TYPE);
    assert_eq!(event.subject.as_deref(), Some("uploads/report.txt"));
    let record: ObjectCreated = serde_json::from_slice(&event.data).unwrap();
    assert_eq!(record.event_name, "ObjectCreated:Put");
    assert_eq!(record.s3.bucket.name, "docs");
    assert_eq!(record.s3.object.key, "uploads/report.txt");
    assert_eq!(record.s3.object.size, 5);
    assert_eq!(
        record.s3.object.e_tag,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
}

#[tokio::test]
async fn notifications_left_pending_by_a_crash_are_published_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    l.queue
        .subscribe(&Subscription {
            name: "ingest".into(),
            topic: created_topic("docs"),
            subject_prefix: None,
            policy: DeliveryPolicy::default(),
        })
        .await
        .unwrap();
    // A crash after the rename but before the publish: the object is there, its
    // outbox row too, no event. And one before the rename: a row, no object.
    std::fs::create_dir_all(dir.path().join("blobs/docs/uploads")).unwrap();
    std::fs::write(dir.path().join("blobs/docs/uploads/a.txt"), b"hello").unwrap();
    let etag = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    l.queue
        .db()
        .write(move |c| {
            c.execute_batch(&format!(
                "INSERT INTO blob_outbox (bucket, key, size, etag, created_at) VALUES
                   ('docs', 'uploads/a.txt', 5, '{etag}', '2026-01-01T00:00:00.000Z'),
                   ('docs', 'uploads/never.txt', 3, 'abc', '2026-01-01T00:00:00.000Z')"
            ))
            .map_err(|e| troupe_core::Error::backend("sqlite", e))
        })
        .await
        .unwrap();
    assert!(
        l.queue
            .receive("ingest", 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    drop(l);
    let l = Local::open(dir.path()).unwrap();
    assert_eq!(l.blobs.recover().await.unwrap(), 1);
    let got = l.queue.receive("ingest", 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        Event::from_json(&got[0].body).unwrap().subject.as_deref(),
        Some("uploads/a.txt")
    );
    assert_eq!(
        l.blobs.recover().await.unwrap(),
        0,
        "the outbox is empty afterwards"
    );
}
