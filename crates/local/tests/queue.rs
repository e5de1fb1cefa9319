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
        topics: vec![topic.into()],
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
        traceparent: None,
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
            topics: vec!["t".into()],
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

/// The queue tables as a data directory from before topic lists has them: one topic
/// per subscription, in `subscriptions.topic`.
const SCHEMA_BEFORE_TOPIC_LISTS: &str = r"
CREATE TABLE subscriptions (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    subject_prefix TEXT,
    policy TEXT NOT NULL
);
CREATE INDEX subscriptions_topic ON subscriptions(topic);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL,
    visible_at INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    enqueued_at INTEGER NOT NULL,
    last_error TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    dead_at INTEGER
);
CREATE INDEX messages_ready ON messages(queue, dead, visible_at, seq);
CREATE TABLE dedupe (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
";

#[tokio::test]
async fn a_database_from_before_topic_lists_keeps_its_subscriptions_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA_BEFORE_TOPIC_LISTS).unwrap();
        let policy = serde_json::to_string(&policy()).unwrap();
        for (name, topic) in [("status-uploaded", "uploaded"), ("status-failed", "failed")] {
            old.execute(
                "INSERT INTO subscriptions (name, topic, subject_prefix, policy) VALUES (?1, ?2, NULL, ?3)",
                rusqlite::params![name, topic, policy],
            )
            .unwrap();
        }
        old.execute(
            "INSERT INTO messages (queue, id, body, visible_at, enqueued_at) VALUES ('status-uploaded', 'waiting', x'77', 0, 0)",
            [],
        )
        .unwrap();
    }
    // Opened twice, as a second process would: the second finds nothing to move.
    for _ in 0..2 {
        let db = Db::open(&path, Durability::Normal).unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let q = SqliteQueue::new(db, Arc::new(clock));
        let subs: Vec<(String, Vec<String>)> = q
            .subscriptions()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.topics))
            .collect();
        assert_eq!(
            subs,
            [
                ("status-failed".to_owned(), vec!["failed".to_owned()]),
                ("status-uploaded".to_owned(), vec!["uploaded".to_owned()]),
            ]
        );
    }
    let db = Db::open(&path, Durability::Normal).unwrap();
    let q = SqliteQueue::new(db, Arc::new(ManualClock::new(1_700_000_000_000)));
    assert_eq!(q.publish("uploaded", &[msg("new")]).await.unwrap(), 1);
    let got: Vec<String> = q
        .receive("status-uploaded", 10, NO_WAIT)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, ["waiting", "new"], "the old message and a new one");
    // The old column is gone; a redeclaration writes the topic list alone.
    let has_topic: bool = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('subscriptions') WHERE name = 'topic'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!has_topic);
    sub(&q, "status-uploaded", "uploaded").await;
    assert_eq!(q.publish("uploaded", &[msg("newer")]).await.unwrap(), 1);
}

#[tokio::test]
async fn retiring_moves_leased_delayed_and_dead_messages_in_one_step() {
    let e = env();
    sub(&e.queue, "old", "t").await;
    sub(&e.queue, "new", "u").await;
    let mut delayed = msg("delayed");
    delayed.delay = Duration::from_secs(5);
    e.queue
        .publish("t", &[msg("leased"), msg("dead"), delayed])
        .await
        .unwrap();
    let got = e.queue.receive("old", 2, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    let leased = got.iter().find(|d| d.id == "leased").unwrap();
    let dead = got.iter().find(|d| d.id == "dead").unwrap();
    e.queue
        .reject("old", &dead.receipt, "bad_input", "no")
        .await
        .unwrap();

    let retired = e.queue.retire("old", "new").await.unwrap();
    assert_eq!((retired.moved, retired.left), (3, 0));
    let names: Vec<String> = e
        .queue
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["new"]);
    assert_eq!(e.queue.publish("t", &[msg("later")]).await.unwrap(), 0);
    // The lease still holds: its holder settles it where it now is.
    assert_eq!(
        e.queue
            .ack("old", std::slice::from_ref(&leased.receipt))
            .await
            .unwrap(),
        1
    );
    let depth = e.queue.depth("new").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight, depth.dead), (0, 1, 1));
    e.clock.advance(Duration::from_secs(5));
    let got = e.queue.receive("new", 10, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].deliveries), ("delayed", 1));
    let letters = troupe_core::DeadLetters::dead_letters(&e.queue, "new", 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].id.as_str(), letters[0].reason.as_str()),
        ("dead", "bad_input")
    );
    // The ids `old` saw stay seen inside the window.
    assert_eq!(e.queue.send("new", &[msg("leased")]).await.unwrap(), 0);
    // Again: nothing left to move.
    assert_eq!(
        e.queue.retire("old", "new").await.unwrap(),
        troupe_core::Retired::default()
    );
}

#[tokio::test]
async fn the_oldest_message_ages_until_it_is_acked_and_a_retry_keeps_its_age() {
    let e = env();
    sub(&e.queue, "a", "t").await;
    let age = |d: troupe_core::Depth| d.oldest_age_ms;
    assert_eq!(age(e.queue.depth("a").await.unwrap()), Some(0), "empty");
    e.queue.publish("t", &[msg("first")]).await.unwrap();
    e.clock.advance(Duration::from_secs(3));
    e.queue.publish("t", &[msg("second")]).await.unwrap();
    e.clock.advance(Duration::from_secs(2));
    assert_eq!(age(e.queue.depth("a").await.unwrap()), Some(5_000));
    // Leased, then retried: still not done, and as old as when it was first enqueued.
    let first = e.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    assert_eq!(first.id, "first");
    e.queue
        .retry("a", &first.receipt, Some(Duration::from_secs(1)), "later")
        .await
        .unwrap();
    e.clock.advance(Duration::from_secs(1));
    assert_eq!(age(e.queue.depth("a").await.unwrap()), Some(6_000));
    let mut both = e.queue.receive("a", 10, NO_WAIT).await.unwrap();
    both.sort_by(|a, b| a.id.cmp(&b.id));
    let (first, second) = (both.remove(0), both.remove(0));
    assert_eq!((first.id.as_str(), second.id.as_str()), ("first", "second"));
    e.queue.ack("a", &[first.receipt]).await.unwrap();
    // The second, leased, still waits to be done.
    assert_eq!(age(e.queue.depth("a").await.unwrap()), Some(3_000));
    // A dead letter no longer waits in the queue.
    e.queue
        .reject("a", &second.receipt, "bad", "")
        .await
        .unwrap();
    let depth = e.queue.depth("a").await.unwrap();
    assert_eq!((depth.dead, age(depth)), (1, Some(0)));
}
