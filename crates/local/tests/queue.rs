//! Queue semantics on the SQLite backend, with a hand-moved clock.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{
    DeadLetters, DeliveryPolicy, ManualClock, Message, Queue, RetryOutcome, Subscription,
};
use troupe_local::{Db, Durability, SqliteQueue};

const NO_WAIT: Duration = Duration::ZERO;

struct Env {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    queue: SqliteQueue,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("q.db"), Durability::Normal).unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let queue = SqliteQueue::new(db, Arc::new(clock.clone())).with_seed(42);
    Env {
        _dir: dir,
        clock,
        queue,
    }
}

fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: 3,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        dedupe_window: Duration::from_secs(60),
    }
}

async fn sub(q: &SqliteQueue, name: &str, topic: &str) {
    q.subscribe(&Subscription {
        name: name.into(),
        topic: topic.into(),
        subject_prefix: None,
        policy: policy(),
    })
    .await
    .unwrap();
}

fn msg(id: &str) -> Message {
    Message {
        id: id.into(),
        subject: None,
        body: format!("body-{id}").into_bytes(),
        delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn lease_expiry_redelivers() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.publish("t", &[msg("m1")]).await.unwrap();
    let first = e.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].deliveries, 1);
    // Leased: invisible until the visibility timeout passes.
    assert!(e.queue.receive("a", 10, NO_WAIT).await.unwrap().is_empty());
    e.clock.advance(Duration::from_secs(9));
    assert!(e.queue.receive("a", 10, NO_WAIT).await.unwrap().is_empty());
    e.clock.advance(Duration::from_secs(2));
    let again = e.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, "m1");
    assert_eq!(again[0].deliveries, 2);
    // The stale lease can no longer settle it; the fresh one can.
    assert_eq!(
        e.queue.ack("a", &[first[0].receipt.clone()]).await.unwrap(),
        0
    );
    assert_eq!(
        e.queue.ack("a", &[again[0].receipt.clone()]).await.unwrap(),
        1
    );
    e.clock.advance(Duration::from_secs(60));
    assert!(e.queue.receive("a", 10, NO_WAIT).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_backoff_grows_with_jitter_inside_its_bounds() {
    let e = env();
    let p = DeliveryPolicy {
        max_deliveries: 50,
        ..policy()
    };
    e.queue
        .subscribe(&Subscription {
            name: "a".into(),
            topic: "t".into(),
            subject_prefix: None,
            policy: p.clone(),
        })
        .await
        .unwrap();
    let mut delays = Vec::new();
    for i in 0..40 {
        e.queue.send("a", &[msg(&format!("m{i}"))]).await.unwrap();
    }
    // Each message: deliver, retry with backoff; record the delay per attempt.
    for attempt in 1..=4u32 {
        let batch = e.queue.receive("a", 100, NO_WAIT).await.unwrap();
        assert_eq!(batch.len(), 40, "attempt {attempt}");
        let mut these = Vec::new();
        for d in &batch {
            assert_eq!(d.deliveries, attempt);
            match e.queue.retry("a", &d.receipt, None, "boom").await.unwrap() {
                RetryOutcome::Scheduled(delay) => these.push(delay),
                RetryOutcome::DeadLettered => panic!("not yet"),
            }
        }
        let cap = p.backoff_cap(attempt);
        assert!(
            these.iter().all(|d| *d <= cap),
            "attempt {attempt}: over cap {cap:?}"
        );
        let distinct: std::collections::BTreeSet<_> = these.iter().collect();
        assert!(
            distinct.len() > 10,
            "attempt {attempt}: delays must be jittered"
        );
        delays.push(these.iter().sum::<Duration>() / 40);
        // Nothing is delivered before its delay; everything after the cap.
        e.clock.advance(cap + Duration::from_millis(1));
    }
    assert!(delays[3] > delays[0], "mean backoff must grow: {delays:?}");
}

#[tokio::test]
async fn explicit_retry_delay_is_honoured() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.send("a", &[msg("m")]).await.unwrap();
    let d = e.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    e.queue
        .retry("a", &d.receipt, Some(Duration::from_secs(5)), "later")
        .await
        .unwrap();
    e.clock.advance(Duration::from_millis(4999));
    assert!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    e.clock.advance(Duration::from_millis(1));
    assert_eq!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().len(), 1);
}

#[tokio::test]
async fn max_deliveries_dead_letters_with_reason_and_last_error() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.send("a", &[msg("m")]).await.unwrap();
    for n in 1..=3 {
        let d = e.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
        assert_eq!(d.deliveries, n);
        let out = e
            .queue
            .retry(
                "a",
                &d.receipt,
                Some(Duration::ZERO),
                &format!("failure {n}"),
            )
            .await
            .unwrap();
        assert_eq!(out == RetryOutcome::DeadLettered, n == 3);
    }
    assert!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = e.queue.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, REASON_MAX_DELIVERIES);
    assert_eq!(dead[0].last_error.as_deref(), Some("failure 3"));
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(e.queue.depth("a").await.unwrap().dead, 1);
}

#[tokio::test]
async fn expired_leases_count_as_deliveries() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.send("a", &[msg("m")]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().len(), 1);
        e.clock.advance(Duration::from_secs(11));
    }
    assert!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = e.queue.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead[0].reason, REASON_MAX_DELIVERIES);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("visibility timeout")
    );
}

#[tokio::test]
async fn reject_dead_letters_at_once() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.send("a", &[msg("m")]).await.unwrap();
    let d = e.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    e.queue
        .reject("a", &d.receipt, "unsupported_type", "application/x-foo")
        .await
        .unwrap();
    e.clock.advance(Duration::from_secs(3600));
    assert!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = e.queue.dead_letters("a", 10).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].deliveries),
        ("unsupported_type", 1)
    );
    assert_eq!(dead[0].last_error.as_deref(), Some("application/x-foo"));
}

#[tokio::test]
async fn repeated_id_inside_the_window_is_delivered_once() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    assert_eq!(e.queue.publish("t", &[msg("m")]).await.unwrap(), 1);
    assert_eq!(e.queue.publish("t", &[msg("m")]).await.unwrap(), 0);
    e.clock.advance(Duration::from_secs(30));
    assert_eq!(e.queue.send("a", &[msg("m")]).await.unwrap(), 0);
    let got = e.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    e.queue.ack("a", &[got[0].receipt.clone()]).await.unwrap();
    // Outside the window the id is new again.
    e.clock.advance(Duration::from_secs(31));
    assert_eq!(e.queue.publish("t", &[msg("m")]).await.unwrap(), 1);
}

#[tokio::test]
async fn one_publish_reaches_every_subscription() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    sub(&e.queue, "b", "t").await;
    sub(&e.queue, "other", "u").await;
    assert_eq!(
        e.queue.publish("t", &[msg("m1"), msg("m2")]).await.unwrap(),
        4
    );
    for name in ["a", "b"] {
        let got = e.queue.receive(name, 10, NO_WAIT).await.unwrap();
        let ids: Vec<_> = got.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"], "{name}");
        assert_eq!(got[0].body, b"body-m1");
    }
    assert!(
        e.queue
            .receive("other", 10, NO_WAIT)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn subject_prefix_filters_a_subscription() {
    let e = env();
    e.queue
        .subscribe(&Subscription {
            name: "uploads".into(),
            topic: "t".into(),
            subject_prefix: Some("uploads/".into()),
            policy: policy(),
        })
        .await
        .unwrap();
    let with = |id: &str, subject: &str| Message {
        subject: Some(subject.into()),
        ..msg(id)
    };
    e.queue
        .publish(
            "t",
            &[with("1", "uploads/a.txt"), with("2", "tmp/b.txt"), msg("3")],
        )
        .await
        .unwrap();
    let got = e.queue.receive("uploads", 10, NO_WAIT).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["1"]);
}

#[tokio::test]
async fn redrive_moves_dead_letters_back() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue.send("a", &[msg("m1"), msg("m2")]).await.unwrap();
    for d in e.queue.receive("a", 10, NO_WAIT).await.unwrap() {
        e.queue.reject("a", &d.receipt, "bad", "x").await.unwrap();
    }
    assert_eq!(e.queue.depth("a").await.unwrap().dead, 2);
    assert_eq!(e.queue.redrive("a").await.unwrap(), 2);
    let depth = e.queue.depth("a").await.unwrap();
    assert_eq!((depth.ready, depth.dead), (2, 0));
    let got = e.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|d| d.deliveries == 1),
        "redriven messages get fresh deliveries"
    );
}

#[tokio::test]
async fn delayed_delivery_waits() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    e.queue
        .send(
            "a",
            &[Message {
                delay: Duration::from_secs(3),
                ..msg("m")
            }],
        )
        .await
        .unwrap();
    assert!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(e.queue.depth("a").await.unwrap().in_flight, 1);
    e.clock.advance(Duration::from_secs(3));
    assert_eq!(e.queue.receive("a", 1, NO_WAIT).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_queue_and_bad_receipts_are_clear_errors() {
    let e = env();
    let err = e
        .queue
        .receive("nope", 1, NO_WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("subscribe"), "{err}");
    sub(&e.queue, "a", "t").await;
    let bad = troupe_core::Receipt {
        handle: "garbage".into(),
        message_id: "m".into(),
    };
    let err = e.queue.ack("a", &[bad]).await.unwrap_err().to_string();
    assert!(err.contains("receipt"), "{err}");
}

#[tokio::test]
async fn duplicate_delivery_switch_delivers_each_message_twice() {
    let e = env();
    let q = e.queue.clone().with_duplicate_deliveries(true);
    sub(&q, "a", "t").await;
    q.publish("t", &[msg("m")]).await.unwrap();
    let got = q.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(got.iter().filter(|d| d.id == "m").count(), 2);
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = ManualClock::new(1);
    {
        let q = SqliteQueue::new(
            Db::open(&path, Durability::Full).unwrap(),
            Arc::new(clock.clone()),
        );
        sub(&q, "a", "t").await;
        q.publish("t", &[msg("m")]).await.unwrap();
    }
    let q = SqliteQueue::new(Db::open(&path, Durability::Full).unwrap(), Arc::new(clock));
    assert_eq!(q.receive("a", 1, NO_WAIT).await.unwrap().len(), 1);
}
