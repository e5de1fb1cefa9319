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
    deferring_does_not_count_a_delivery,
    one_subscription_takes_several_topics,
    redeclaring_a_subscription_changes_its_topics,
    retiring_a_subscription_moves_what_it_holds,
);

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

/// A [`State`] whose process dies at its `at`-th dedupe call (keys under
/// `queue-dedupe/`), before making it or right after: the call never returns.
struct DiesAt {
    inner: Arc<dyn State>,
    at: usize,
    after: bool,
    calls: std::sync::atomic::AtomicUsize,
    died: Arc<tokio::sync::Notify>,
}

impl DiesAt {
    async fn step<T>(
        &self,
        key: &str,
        call: impl std::future::Future<Output = troupe_core::Result<T>>,
    ) -> troupe_core::Result<T> {
        if !key.starts_with("queue-dedupe/") {
            return call.await;
        }
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n != self.at {
            return call.await;
        }
        if self.after {
            let _ = call.await;
        }
        self.died.notify_one();
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl State for DiesAt {
    async fn get(&self, key: &str) -> troupe_core::Result<Option<Entry>> {
        self.step(key, self.inner.get(key)).await
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> troupe_core::Result<u64> {
        self.step(key, self.inner.put(key, value, expected)).await
    }
    async fn delete(&self, key: &str, expected: Option<u64>) -> troupe_core::Result<bool> {
        self.step(key, self.inner.delete(key, expected)).await
    }
    async fn list(&self, prefix: &str) -> troupe_core::Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn append_event(&self, subject: &str, event: &Event) -> troupe_core::Result<u64> {
        self.inner.append_event(subject, event).await
    }
    async fn read_events(&self, subject: &str) -> troupe_core::Result<Vec<Event>> {
        self.inner.read_events(subject).await
    }
    async fn delete_events(&self, subject: &str) -> troupe_core::Result<u64> {
        self.inner.delete_events(subject).await
    }
    async fn read_feed(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> troupe_core::Result<Vec<troupe_core::FeedEntry>> {
        self.inner.read_feed(tenant, after, limit).await
    }
    async fn feed_head(&self, tenant: &str) -> troupe_core::Result<u64> {
        self.inner.feed_head(tenant).await
    }
    async fn health(&self) -> troupe_core::Result<()> {
        self.inner.health().await
    }
}

/// A publish on SQS cut short at any step of its dedupe (a component or Lambda
/// timeout, a crash) is never deduplicated to nothing: the retried publish delivers
/// the message, and once it was really sent a further repeat is still dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_publish_cut_short_is_repeated_not_deduplicated_away() {
    let stack = tokio::task::spawn_blocking(AwsStack::new)
        .await
        .expect("stack");
    let scale = stack.scale().await;
    let healthy = scale.queue.clone();
    healthy
        .subscribe(&Subscription {
            name: "a".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy: policy(),
        })
        .await
        .expect("subscribe");
    let store: Arc<dyn State> = Arc::new(scale.state.clone());
    let mut ids = Vec::new();
    let mut cut = 0;
    for (at, after) in [(1, false), (1, true), (2, false), (2, true)] {
        let id = format!("m-{at}-{after}");
        let died = Arc::new(tokio::sync::Notify::new());
        let dying = troupe_aws::SqsQueue::new(
            scale.clients.sqs.clone(),
            stack.prefix.clone(),
            Some(Arc::new(DiesAt {
                inner: store.clone(),
                at,
                after,
                calls: Default::default(),
                died: died.clone(),
            })),
        );
        let batch = [msg(&id)];
        tokio::select! {
            sent = dying.publish("t", &batch) => {
                sent.expect("publish");
            }
            () = died.notified() => cut += 1,
        }
        // The retried invocation publishes again, and completes...
        let again = healthy.publish("t", &[msg(&id)]).await.expect("publish");
        assert!(again <= 1, "{id}: {again}");
        // ...after which the message was really sent: a repeat is dropped.
        assert_eq!(
            healthy.publish("t", &[msg(&id)]).await.expect("publish"),
            0,
            "{id}: a repeat after the message was sent is deduplicated"
        );
        ids.push(id);
    }
    assert!(cut > 0, "no publish was cut short: the test tests nothing");
    let mut got: Vec<String> = Vec::new();
    loop {
        let batch = healthy
            .receive("a", 10, Duration::from_secs(1))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt.clone()).collect();
        healthy.ack("a", &receipts).await.expect("ack");
        got.extend(batch.into_iter().map(|d| d.id));
    }
    for id in &ids {
        let copies = got.iter().filter(|g| *g == id).count();
        assert!(
            (1..=2).contains(&copies),
            "{id} arrived {copies} times (received: {got:?}): a publish cut short must be repeated, not deduplicated to nothing"
        );
    }
}

async fn deferring_does_not_count_a_delivery(s: Set) {
    s.sub("a", "t", None).await;
    s.queue.send("a", &[msg("m")]).await.unwrap();
    // A failure counts.
    let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap().remove(0);
    assert_eq!(d.deliveries, 1);
    s.queue
        .retry("a", &d.receipt, Some(Duration::ZERO), "failed once")
        .await
        .unwrap();
    s.pass(Duration::ZERO).await;
    // Waits, more of them than max_deliveries (3) allows deliveries, do not.
    for wait in 1..=4 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "wait {wait}: not redelivered after deferrals");
        assert_eq!((d[0].id.as_str(), d[0].deliveries), ("m", 2), "wait {wait}");
        assert_eq!(d[0].body, b"body-m");
        s.queue
            .defer("a", &d[0].receipt, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty(),
            "wait {wait}: delivered before the deferral's delay"
        );
        if s.strict_receipts {
            // The deferral gave the lease up.
            assert!(matches!(
                s.queue.ack("a", &[d[0].receipt.clone()]).await,
                Ok(0)
            ));
            assert!(matches!(
                s.queue.defer("a", &d[0].receipt, Duration::ZERO).await,
                Err(Error::LeaseLost { .. })
            ));
        }
        s.pass(Duration::from_secs(1)).await;
    }
    assert_eq!(s.dead.dead_letters("a", 10).await.unwrap().len(), 0);
    // Deliveries still count after deferrals: leases running out use up the rest.
    for attempt in 2..=3u32 {
        let d = s.queue.receive("a", 1, NO_WAIT).await.unwrap();
        assert_eq!(d.len(), 1, "attempt {attempt}");
        assert_eq!(d[0].deliveries, attempt);
        s.pass(VISIBILITY).await;
    }
    assert!(s.queue.receive("a", 1, NO_WAIT).await.unwrap().is_empty());
    let dead = s.dead.dead_letters("a", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].id.as_str(), dead[0].reason.as_str()),
        ("m", REASON_MAX_DELIVERIES)
    );
    assert_eq!(dead[0].body, "body-m");
}

async fn one_subscription_takes_several_topics(s: Set) {
    s.sub_topics("a", &["t2", "t1"]).await;
    s.sub("b", "t2", None).await;
    assert_eq!(s.queue.publish("t1", &[msg("m1")]).await.unwrap(), 1);
    assert_eq!(s.queue.publish("t2", &[msg("m2")]).await.unwrap(), 2);
    assert_eq!(s.queue.publish("t3", &[msg("m3")]).await.unwrap(), 0);
    assert_eq!(s.ids("a").await, ["m1", "m2"]);
    assert_eq!(s.ids("b").await, ["m2"]);
    assert_eq!(s.topics_of("a").await, ["t1", "t2"]);
}

async fn redeclaring_a_subscription_changes_its_topics(s: Set) {
    // Long enough that SQS keeps the list in more than one tag.
    let long: Vec<String> = (0..3).map(|i| format!("{}.{i}", "t".repeat(120))).collect();
    let mut first: Vec<&str> = long.iter().map(String::as_str).collect();
    first.push("t1");
    s.sub_topics("a", &first).await;
    assert_eq!(s.queue.publish(&long[2], &[msg("l")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["l"]);

    s.sub_topics("a", &["t1", "t2"]).await;
    assert_eq!(s.topics_of("a").await, ["t1", "t2"]);
    for dropped in &long {
        assert_eq!(
            s.queue.publish(dropped, &[msg("x")]).await.unwrap(),
            0,
            "a dropped topic still reaches it"
        );
    }
    assert_eq!(s.queue.publish("t1", &[msg("m1")]).await.unwrap(), 1);
    assert_eq!(s.queue.publish("t2", &[msg("m2")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["m1", "m2"]);

    s.sub("a", "t3", None).await;
    assert_eq!(s.topics_of("a").await, ["t3"]);
    assert_eq!(s.queue.publish("t1", &[msg("n1")]).await.unwrap(), 0);
    assert_eq!(s.queue.publish("t3", &[msg("n3")]).await.unwrap(), 1);
    assert_eq!(s.ids("a").await, ["n3"]);
}

async fn retiring_a_subscription_moves_what_it_holds(s: Set) {
    s.sub("old", "t", None).await;
    s.sub("new", "u", None).await;
    assert_eq!(
        s.queue
            .publish("t", &[msg("waiting"), msg("dead")])
            .await
            .unwrap(),
        2
    );
    for d in s.queue.receive("old", 10, NO_WAIT).await.unwrap() {
        if d.id == "dead" {
            s.queue
                .reject("old", &d.receipt, "bad_input", "unreadable")
                .await
                .unwrap();
        } else {
            s.queue
                .retry("old", &d.receipt, Some(Duration::ZERO), "busy")
                .await
                .unwrap();
        }
    }

    let retired = s.queue.retire("old", "new").await.unwrap();
    assert_eq!((retired.moved, retired.left), (2, 0));
    assert_eq!(s.queue.publish("t", &[msg("later")]).await.unwrap(), 0);
    let names: Vec<String> = s
        .queue
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["new"]);
    // The message keeps its id, body and the delivery it had.
    let got = s.queue.receive("new", 10, NO_WAIT).await.unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|d| (d.id.as_str(), d.body.as_slice(), d.deliveries))
        .collect();
    assert_eq!(got, [("waiting", b"body-waiting".as_slice(), 2)]);
    let dead = s.dead.dead_letters("new", 10).await.unwrap();
    let dead: Vec<_> = dead
        .iter()
        .map(|l| (l.id.as_str(), l.reason.as_str(), l.last_error.as_deref()))
        .collect();
    assert_eq!(dead, [("dead", "bad_input", Some("unreadable"))]);

    assert_eq!(
        s.queue.retire("old", "new").await.unwrap(),
        troupe_core::Retired::default()
    );
    assert_eq!(
        s.queue.retire("never-was", "new").await.unwrap(),
        troupe_core::Retired::default()
    );
    assert!(matches!(
        s.queue.retire("new", "gone").await,
        Err(Error::NoSuchQueue(_))
    ));
}
