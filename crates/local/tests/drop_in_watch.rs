//! The drop-in folders are watched: a file copied in is announced because the
//! filesystem said so, not because a timer came round (the rescan here is an hour).

use std::time::Duration;

use troupe_core::blobs::created_topic;
use troupe_core::{DeliveryPolicy, Event, Queue, Subscription};
use troupe_local::{DropInScanner, Local};

/// Long enough for any announcement; a missed notification waits an hour.
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dropped_into_a_watched_folder_is_announced_on_notification() {
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
    // One file there before the watcher starts: the scans at start announce it.
    let early = uploads.join("early.txt");
    std::fs::write(&early, b"there first").unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&early)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let watching = tokio::spawn(DropInScanner::new(l.blobs.clone()).run(
        vec![("docs".into(), "uploads/".into())],
        Duration::from_secs(3600),
        stop,
    ));
    let subject = |got: &[troupe_core::Delivery]| -> Vec<String> {
        got.iter()
            .map(|d| Event::from_json(&d.body).unwrap().subject.unwrap())
            .collect()
    };
    let got = l.queue.receive("intake", 10, WAIT).await.unwrap();
    assert_eq!(subject(&got), ["uploads/early.txt"]);
    // Announced: the scanner has nothing settling and sleeps towards its hourly rescan.
    // Only a notification can make it look now.
    std::fs::create_dir_all(uploads.join("later")).unwrap();
    std::fs::write(uploads.join("later/late.txt"), b"copied in afterwards").unwrap();
    let got = l.queue.receive("intake", 10, WAIT).await.unwrap();
    assert_eq!(
        subject(&got),
        ["uploads/later/late.txt"],
        "the file written later was announced before the wait ran out"
    );
    stop_tx.send(true).unwrap();
    watching.await.unwrap();
}
