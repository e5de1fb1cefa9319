//! SQS publishes cut short in the middle of their dedupe (a timeout, a crash) are
//! repeated, never deduplicated away.

use super::*;

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
