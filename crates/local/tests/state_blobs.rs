//! The embedded set's own state and blob details: files an operator can read, file
//! system key rules, object-created notifications. The contracts shared with Postgres
//! and S3 are tested on both in `tests/all/store_semantics.rs`.

use std::time::Duration;

use troupe_core::blobs::{OBJECT_CREATED_TYPE, created_topic};
use troupe_core::{Blobs, DeliveryPolicy, Event, ObjectCreated, Queue, Subscription};
use troupe_local::{DropInScanner, Local};

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
            topics: vec![created_topic("docs")],
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
            topics: vec![created_topic("docs")],
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

/// Sets a file's modification time in the past, so a scan sees it settled.
fn settle(path: &std::path::Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

#[tokio::test]
async fn drop_ins_ingest_regular_files_only_never_what_a_link_points_at() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, b"AWS_SECRET_ACCESS_KEY=hunter2").unwrap();
    std::fs::create_dir(outside.path().join("etc")).unwrap();
    std::fs::write(outside.path().join("etc/passwd"), b"root:x:0:0").unwrap();
    let l = Local::open(dir.path()).unwrap();
    l.queue
        .subscribe(&Subscription {
            name: "intake".into(),
            topics: vec![created_topic("docs")],
            subject_prefix: Some("uploads/".into()),
            policy: DeliveryPolicy::default(),
        })
        .await
        .unwrap();
    let uploads = dir.path().join("blobs/docs/uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    // The attacks: a link to a file outside, a link to a directory outside, a link to
    // the process's environment, a FIFO (a reader would block on it), and a file over
    // the size limit (sparse: nothing is written).
    std::os::unix::fs::symlink(&secret, uploads.join("env.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("etc"), uploads.join("etc")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", uploads.join("environ.txt")).unwrap();
    let fifo = uploads.join("pipe.txt");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = uploads.join("huge.txt");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(troupe_local::drop_ins::MAX_DROP_IN_BYTES + 1)
        .unwrap();
    settle(&huge);
    // And one real file.
    let real = uploads.join("notes.txt");
    std::fs::write(&real, b"plain notes").unwrap();
    settle(&real);
    // A file is announced once two scans agree on it.
    let mut scanner = DropInScanner::new(l.blobs.clone());
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 0);
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 1);
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 0);
    let got = l.queue.receive("intake", 10, Duration::ZERO).await.unwrap();
    let keys: Vec<_> = got
        .iter()
        .map(|m| Event::from_json(&m.body).unwrap().subject.unwrap())
        .collect();
    assert_eq!(keys, ["uploads/notes.txt"]);
    // Nor can a read through the blob store reach past a link.
    for key in [
        "uploads/env.txt",
        "uploads/etc/passwd",
        "uploads/environ.txt",
        "uploads/pipe.txt",
    ] {
        assert_eq!(l.blobs.get("docs", key).await.unwrap(), None, "{key}");
    }
    assert_eq!(
        l.blobs.list("docs", "uploads/").await.unwrap(),
        ["uploads/huge.txt", "uploads/notes.txt"]
    );
    assert_eq!(
        l.blobs
            .get("docs", "uploads/notes.txt")
            .await
            .unwrap()
            .unwrap(),
        b"plain notes"
    );
}

#[tokio::test]
async fn a_drop_in_is_announced_once_when_the_process_dies_before_recording_it_seen() {
    let dir = tempfile::tempdir().unwrap();
    let l = Local::open(dir.path()).unwrap();
    l.queue
        .subscribe(&Subscription {
            name: "intake".into(),
            topics: vec![created_topic("docs")],
            subject_prefix: Some("uploads/".into()),
            policy: DeliveryPolicy::default(),
        })
        .await
        .unwrap();
    let uploads = dir.path().join("blobs/docs/uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let file = uploads.join("notes.txt");
    std::fs::write(&file, b"plain notes").unwrap();
    settle(&file);
    // The crash point: recording the file as seen fails, as if the process died
    // right after announcing it.
    l.queue
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
    let mut scanner = DropInScanner::new(l.blobs.clone());
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 0);
    let err = scanner.scan("docs", "uploads/").await.unwrap_err();
    assert!(err.to_string().contains("the process died here"), "{err}");
    drop((scanner, l));

    // The restart: the file is still there, unrecorded, and is announced now.
    let l = Local::open(dir.path()).unwrap();
    l.queue
        .db()
        .write(|c| {
            c.execute_batch("DROP TRIGGER crash_before_seen")
                .map_err(|e| troupe_core::Error::backend("sqlite", e))
        })
        .await
        .unwrap();
    assert_eq!(l.blobs.recover().await.unwrap(), 0, "nothing left pending");
    let mut scanner = DropInScanner::new(l.blobs.clone());
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 0);
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 1);
    assert_eq!(scanner.scan("docs", "uploads/").await.unwrap(), 0);
    let got = l.queue.receive("intake", 10, Duration::ZERO).await.unwrap();
    let announced: Vec<_> = got
        .iter()
        .map(|m| {
            let e = Event::from_json(&m.body).unwrap();
            (e.subject.unwrap(), e.time)
        })
        .collect();
    assert_eq!(
        announced.len(),
        1,
        "one write, one announcement (each one's time makes a document): {announced:?}"
    );
}
