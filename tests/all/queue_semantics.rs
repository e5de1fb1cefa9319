//! The queue contract, on both backend sets: the embedded SQLite queue (its clock moved
//! by hand) and SQS on moto's server (real time, whole seconds). Each test is written
//! once against the traits and instantiated for both by `both!`.
//!
//! The SQLite-only details (jitter spread at millisecond resolution, the duplicate
//! delivery switch, durability across reopening) stay in `crates/local/tests/queue.rs`.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{
    DeadLetters, DeliveryPolicy, Entry, Error, Event, Leases, ManualClock, Message, Queue,
    RetryOutcome, State, Subscription,
};
use troupe_tests::stack::AwsStack;

const NO_WAIT: Duration = Duration::ZERO;
/// The visibility timeout of every test subscription (SQS counts whole seconds).
const VISIBILITY: Duration = Duration::from_secs(2);
/// Slack for SQS's clock when waiting for something to become visible.
const SLACK: Duration = Duration::from_millis(700);

/// One backend's queue, and how time passes for it.
struct Set {
    queue: Arc<dyn Queue>,
    dead: Arc<dyn DeadLetters>,
    leases: Arc<dyn Leases>,
    clock: Option<ManualClock>,
    /// SQS may accept a receipt from an earlier delivery of the same message.
    strict_receipts: bool,
    _dir: Option<tempfile::TempDir>,
}

impl Set {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = troupe_local::Db::open(&dir.path().join("q.db"), troupe_local::Durability::Normal)
            .expect("db");
        let clock = ManualClock::new(1_700_000_000_000);
        let queue = troupe_local::SqliteQueue::new(db, Arc::new(clock.clone())).with_seed(42);
        Self {
            queue: Arc::new(queue.clone()),
            dead: Arc::new(queue.clone()),
            leases: Arc::new(queue),
            clock: Some(clock),
            strict_receipts: true,
            _dir: Some(dir),
        }
    }

    async fn sqs() -> Self {
        let stack = tokio::task::spawn_blocking(AwsStack::new)
            .await
            .expect("stack");
        let scale = stack.scale().await;
        Self {
            queue: Arc::new(scale.queue.clone()),
            dead: Arc::new(scale.queue.clone()),
            leases: Arc::new(scale.queue),
            clock: None,
            strict_receipts: false,
            _dir: None,
        }
    }

    /// Lets `d` pass: the manual clock moves, or the test sleeps.
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(c) => c.advance(d),
            None => tokio::time::sleep(d + SLACK).await,
        }
    }

    async fn sub(&self, name: &str, topic: &str, prefix: Option<&str>) {
        self.queue
            .subscribe(&Subscription {
                name: name.into(),
                topics: vec![topic.into()],
                subject_prefix: prefix.map(str::to_owned),
                policy: policy(),
            })
            .await
            .expect("subscribe");
    }

    /// Declares (or redeclares) `name` on several topics.
    async fn sub_topics(&self, name: &str, topics: &[&str]) {
        self.queue
            .subscribe(&Subscription {
                name: name.into(),
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                subject_prefix: None,
                policy: policy(),
            })
            .await
            .expect("subscribe");
    }

    /// The topics of subscription `name`, as the backend lists them.
    async fn topics_of(&self, name: &str) -> Vec<String> {
        self.queue
            .subscriptions()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.topics)
            .unwrap_or_default()
    }

    /// Ids received from `queue` now, sorted.
    async fn ids(&self, queue: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .queue
            .receive(queue, 10, NO_WAIT)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        ids.sort();
        ids
    }
}

fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        visibility_timeout: VISIBILITY,
        max_deliveries: 3,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(2),
        dedupe_window: Duration::from_secs(60),
    }
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

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Set::sqlite().await).await })*
        }
        mod sqs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Set::sqs().await).await })*
        }
    };
}

both!(
    lease_expiry_redelivers,
    explicit_retry_delay_is_honoured,
    backoff_retry_waits_at_most_its_cap,
    last_retry_dead_letters_with_reason_and_last_error,
    expired_leases_count_as_deliveries,
    reject_dead_letters_at_once_with_its_reason,
    repeated_id_inside_the_window_is_delivered_once,
    one_publish_reaches_every_matching_subscription,
    redrive_moves_dead_letters_back_with_fresh_deliveries,
    delayed_delivery_waits,
    extending_a_lease_keeps_the_message_leased,
    unknown_queue_is_a_clear_error,
    depth_counts_ready_leased_and_dead,
);

// Deferrals and subscriptions over several topics; SQS publishes cut short mid-dedupe.
mod sqs_dedupe;
mod topics;

async fn lease_expiry_redelivers(s: Set) {
    s.sub("a", "t", None).await;
    assert_eq!(s.queue.publish("t", &[msg("m1")]).await.unwrap(), 1);
    let first = s.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].id.as_str(), first[0].deliveries), ("m1", 1));
    assert_eq!(first[0].body, b"body-m1");
    // Leased: invisible until the visibility timeout passes.
    assert!(s.queue.receive("a", 10, NO_WAIT).await.unwrap().is_empty());
    s.pass(VISIBILITY).await;
    let again = s.queue.receive("a", 10, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1, "not redelivered after its lease expired");
    assert_eq!((again[0].id.as_str(), again[0].deliveries), ("m1", 2));
    if s.strict_receipts {
        // The stale lease can no longer settle it.
        assert_eq!(
            s.queue.ack("a", &[first[0].receipt.clone()]).await.unwrap(),
            0
        );
    }
    assert_eq!(
        s.queue.ack("a", &[again[0].receipt.clone()]).await.unwrap(),
        1
    );
    s.pass(VISIBILITY).await;
    assert!(s.queue.receive("a", 10, NO_WAIT).await.unwrap().is_empty());
}

async fn explicit_retry_delay_is_honoured(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    let out = s
        .queue
        .retry("a", &d.receipt, Some(Duration::from_secs(3)), "later")
        .await
        .unwrap();
    assert_eq!(out, RetryOutcome::Scheduled(Duration::from_secs(3)));
    s.pass(Duration::from_secs(1)).await;
    assert!(
        s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty(),
        "delivered before its delay"
    );
    s.pass(Duration::from_secs(2)).await;
    let again = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries, 2);
}

async fn backoff_retry_waits_at_most_its_cap(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    let RetryOutcome::Scheduled(delay) =
        s.queue.retry("a", &d.receipt, None, "boom").await.unwrap()
    else {
        panic!("dead-lettered on its first retry");
    };
    let cap = policy().backoff_cap(1);
    assert!(delay <= cap, "{delay:?} over the cap {cap:?}");
    s.pass(cap).await;
    let again = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "not redelivered once the backoff cap passed"
    );
    assert_eq!(again[0].deliveries, 2);
}

async fn last_retry_dead_letters_with_reason_and_last_error(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    for attempt in 1..=3u32 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "attempt {attempt}");
        assert_eq!(d[0].deliveries, attempt);
        let out = s
            .queue
            .retry(
                "a",
                &d[0].receipt,
                Some(Duration::ZERO),
                &format!("failure {attempt}"),
            )
            .await
            .unwrap();
        if attempt < 3 {
            assert!(
                matches!(out, RetryOutcome::Scheduled(_)),
                "attempt {attempt}"
            );
            s.pass(Duration::ZERO).await;
        } else {
            assert_eq!(out, RetryOutcome::DeadLettered);
        }
    }
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = s.dead.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "m");
    assert_eq!(dead[0].reason, REASON_MAX_DELIVERIES);
    assert_eq!(dead[0].last_error.as_deref(), Some("failure 3"));
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(dead[0].body, "body-m");
    // Listing does not consume them.
    assert_eq!(s.dead.dead_letters("a", 10).await.unwrap().len(), 1);
}

async fn expired_leases_count_as_deliveries(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    for attempt in 1..=3u32 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "attempt {attempt}");
        assert_eq!(d[0].deliveries, attempt);
        s.pass(VISIBILITY).await;
    }
    // Its leases ran out three times: dead-lettered, never delivered a fourth time.
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = s.dead.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, REASON_MAX_DELIVERIES);
}

async fn reject_dead_letters_at_once_with_its_reason(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    s.queue
        .reject("a", &d.receipt, "corrupt", "page 3 is not a PDF object")
        .await
        .unwrap();
    s.pass(VISIBILITY).await;
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = s.dead.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "corrupt");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("page 3 is not a PDF object")
    );
    assert_eq!(dead[0].deliveries, 1);
}

async fn repeated_id_inside_the_window_is_delivered_once(s: Set) {
    s.sub("a", "t", None).await;
    assert_eq!(s.queue.publish("t", &[msg("m")]).await.unwrap(), 1);
    assert_eq!(s.queue.publish("t", &[msg("m")]).await.unwrap(), 0);
    assert_eq!(s.queue.send("a", &[msg("m"), msg("n")]).await.unwrap(), 1);
    let got = s.queue.receive("a", 10, NO_WAIT).await.unwrap();
    let mut ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["m", "n"]);
}

async fn one_publish_reaches_every_matching_subscription(s: Set) {
    s.sub("a", "t", None).await;
    s.sub("b", "t", None).await;
    s.sub("c", "t", Some("uploads/")).await;
    s.sub("other", "u", None).await;
    let mut m = msg("m");
    m.subject = Some("uploads/x".into());
    let mut n = msg("n");
    n.subject = Some("docs/y".into());
    assert_eq!(s.queue.publish("t", &[m, n]).await.unwrap(), 5);
    for (name, want) in [("a", 2), ("b", 2), ("c", 1), ("other", 0)] {
        let got = s.queue.receive(name, 10, NO_WAIT).await.unwrap();
        assert_eq!(got.len(), want, "{name}");
    }
    let names: Vec<String> = s
        .queue
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "other"]);
}

async fn redrive_moves_dead_letters_back_with_fresh_deliveries(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m"), msg("n")]).await.unwrap();
    for d in s.queue.receive("a", 10, NO_WAIT).await.unwrap() {
        s.queue.reject("a", &d.receipt, "bad", "").await.unwrap();
    }
    assert_eq!(s.dead.dead_letters("a", 10).await.unwrap().len(), 2);
    assert_eq!(s.dead.redrive("a").await.unwrap(), 2);
    assert!(s.dead.dead_letters("a", 10).await.unwrap().is_empty());
    let back = s.queue.receive("a", 10, NO_WAIT).await.unwrap();
    let mut got: Vec<_> = back.iter().map(|d| (d.id.clone(), d.deliveries)).collect();
    got.sort();
    assert_eq!(got, [("m".to_owned(), 1), ("n".to_owned(), 1)]);
}

async fn delayed_delivery_waits(s: Set) {
    s.sub("a", "t", None).await;
    let mut m = msg("m");
    m.delay = Duration::from_secs(3);
    s.queue.send("a", &[m]).await.unwrap();
    s.pass(Duration::from_secs(1)).await;
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    s.pass(Duration::from_secs(2)).await;
    assert_eq!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().len(), 1);
}

async fn extending_a_lease_keeps_the_message_leased(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    assert!(
        s.leases
            .extend("a", &d.receipt, Duration::from_secs(6))
            .await
            .unwrap()
    );
    s.pass(VISIBILITY).await;
    assert!(
        s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty(),
        "redelivered while its lease was extended"
    );
    assert_eq!(
        s.queue
            .ack("a", std::slice::from_ref(&d.receipt))
            .await
            .unwrap(),
        1
    );
    // Settled: nothing left to extend.
    assert!(!s.leases.extend("a", &d.receipt, VISIBILITY).await.unwrap());
}

async fn unknown_queue_is_a_clear_error(s: Set) {
    let err = s.queue.receive("nope", 1, NO_WAIT).await.unwrap_err();
    assert!(
        matches!(err, Error::NoSuchQueue(ref q) if q == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("subscribe it first"), "{err}");
    let err = s.queue.send("nope", &[msg("m")]).await.unwrap_err();
    assert!(matches!(err, Error::NoSuchQueue(_)), "{err}");
}

async fn depth_counts_ready_leased_and_dead(s: Set) {
    s.sub("a", "t", None).await;
    s.queue
        .send("a", &[msg("m"), msg("n"), msg("o")])
        .await
        .unwrap();
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    let e = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    s.queue.reject("a", &e.receipt, "bad", "").await.unwrap();
    let depth = s.queue.depth("a").await.unwrap();
    assert_eq!(
        (depth.ready, depth.in_flight, depth.dead),
        (1, 1, 1),
        "{depth:?}"
    );
    s.queue.ack("a", &[d.receipt]).await.unwrap();
    let depth = s.queue.depth("a").await.unwrap();
    assert_eq!(
        (depth.ready, depth.in_flight, depth.dead),
        (1, 0, 1),
        "{depth:?}"
    );
}
