//! SQLite-only queue details, with a hand-moved clock. The queue contract shared with
//! SQS is tested on both in `tests/all/queue_semantics.rs`.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::{DeliveryPolicy, ManualClock, Message, Queue, RetryOutcome, Subscription};
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

/// Time as tokio's (paused) clock tells it, so queue delays and tokio timers agree.
#[derive(Debug)]
struct TokioClock {
    start_ms: u64,
    origin: tokio::time::Instant,
}

impl troupe_core::Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A message retried with a short delay reaches a waiting consumer when the delay
/// ends, not at the consumer's next 100 ms poll.
#[tokio::test(start_paused = true)]
async fn a_short_retry_delay_wakes_waiting_consumers_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("q.db"), Durability::Normal).unwrap();
    let clock = TokioClock {
        start_ms: 1_700_000_000_000,
        origin: tokio::time::Instant::now(),
    };
    let q = SqliteQueue::new(db, Arc::new(clock)).with_seed(42);
    sub(&q, "s", "t").await;
    q.publish("t", &[msg("a")]).await.unwrap();
    let got = q.receive("s", 1, NO_WAIT).await.unwrap();
    let outcome = q
        .retry(
            "s",
            &got[0].receipt,
            Some(Duration::from_millis(30)),
            "not yet",
        )
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::Scheduled(Duration::from_millis(30)));
    let start = tokio::time::Instant::now();
    let again = q.receive("s", 1, Duration::from_secs(5)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(again.len(), 1);
    assert!(
        waited >= Duration::from_millis(25) && waited < Duration::from_millis(60),
        "redelivered after {waited:?}"
    );
}
