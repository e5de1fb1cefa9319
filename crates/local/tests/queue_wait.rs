//! How a receive with nothing ready waits: woken by a publish in this process, by the
//! next delayed message or lease expiry falling due, and (the fallback) by another
//! process's write to the same database. Time is tokio's paused clock, so the waits
//! are exact and cost no real time.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::{Clock, DeliveryPolicy, Message, Queue, Subscription};
use troupe_local::queue::EXTERNAL_POLL;
use troupe_local::{Db, Durability, SqliteQueue};

/// Longer than anything below should take: a receive that returns before it was woken.
const LONG_WAIT: Duration = Duration::from_secs(600);

/// Wall time that moves with tokio's (paused) clock.
#[derive(Debug)]
struct TokioClock {
    start_ms: u64,
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock {
        start_ms: 1_700_000_000_000,
        origin: tokio::time::Instant::now(),
    })
}

/// A queue on `path` with subscription `s` to topic `t` (10 s leases).
async fn queue(path: &std::path::Path) -> SqliteQueue {
    let db = Db::open(path, Durability::Normal).unwrap();
    let q = SqliteQueue::new(db, clock());
    q.subscribe(&Subscription {
        name: "s".into(),
        topics: vec!["t".into()],
        subject_prefix: None,
        policy: DeliveryPolicy {
            visibility_timeout: Duration::from_secs(10),
            ..DeliveryPolicy::default()
        },
    })
    .await
    .unwrap();
    q
}

fn msg(id: &str, delay: Duration) -> Message {
    Message {
        id: id.into(),
        subject: None,
        body: id.as_bytes().to_vec(),
        delay,
        traceparent: None,
    }
}

/// Checks that a wait took `expected` of paused time (to the millisecond the clock
/// rounds to): the receive woke at that moment, neither earlier nor at a later poll.
#[track_caller]
fn woke_after(waited: Duration, expected: Duration) {
    assert!(
        waited >= expected && waited < expected + Duration::from_millis(50),
        "woke after {waited:?}, expected {expected:?}"
    );
}

/// Receives on `q` with [`LONG_WAIT`]; returns what came and how long it took.
async fn receive(q: &SqliteQueue) -> (Vec<String>, Duration) {
    let start = tokio::time::Instant::now();
    let got = q.receive("s", 10, LONG_WAIT).await.unwrap();
    (got.into_iter().map(|d| d.id).collect(), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_publish_wakes_a_waiting_receive_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir.path().join("q.db")).await;
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { receive(&q).await }
    });
    // The receiver is asleep by now (paused time moves only when every task waits).
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.publish("t", &[msg("a", Duration::ZERO)]).await.unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, ["a"]);
    // Woken by the publish itself, not by a poll (EXTERNAL_POLL) or the wait's end.
    woke_after(waited, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_message_is_received_when_it_falls_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir.path().join("q.db")).await;
    q.publish("t", &[msg("later", Duration::from_secs(7))])
        .await
        .unwrap();
    let (got, waited) = receive(&q).await;
    assert_eq!(got, ["later"]);
    woke_after(waited, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_makes_the_message_receivable_again() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir.path().join("q.db")).await;
    q.publish("t", &[msg("m", Duration::ZERO)]).await.unwrap();
    let first = q.receive("s", 1, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].deliveries, 1);
    // Never settled: the 10 s lease runs out, and the waiting receive gets it.
    let start = tokio::time::Instant::now();
    let again = q.receive("s", 1, LONG_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries, 2);
    woke_after(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_retry_moves_a_sleeping_receive_to_its_earlier_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir.path().join("q.db")).await;
    q.publish("t", &[msg("m", Duration::ZERO)]).await.unwrap();
    let first = q.receive("s", 1, Duration::ZERO).await.unwrap();
    // The receiver sleeps towards the lease's end (10 s) ...
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { receive(&q).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ... until a retry makes the message due in 2 s.
    q.retry(
        "s",
        &first[0].receipt,
        Some(Duration::from_secs(2)),
        "later",
    )
    .await
    .unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, ["m"]);
    woke_after(waited, Duration::from_secs(3));
}

/// `troupe dlq redrive` or a second host writes through its own connection, which no
/// notifier of this process hears: the `data_version` fallback finds it.
#[tokio::test(start_paused = true)]
async fn a_message_another_process_writes_is_received_by_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let here = queue(&path).await;
    let elsewhere = queue(&path).await;
    // A wait with nothing written anywhere ends empty, having only polled the version.
    let quiet = here.receive("s", 10, EXTERNAL_POLL * 4).await.unwrap();
    assert!(quiet.is_empty());
    let waiting = tokio::spawn({
        let q = here.clone();
        async move { receive(&q).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    elsewhere
        .publish("t", &[msg("from-afar", Duration::ZERO)])
        .await
        .unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got, ["from-afar"]);
    // Found at the receiver's next look at the database's version.
    woke_after(waited, EXTERNAL_POLL);
}
