//! Documents by final status, and upload → indexed latency, counted where every final
//! event passes: the queue's `publish`. [`Counted`] wraps the host's queue, so it sees
//! what functions publish through the `publisher` import and, in `troupe up`, what the
//! embedding worker publishes (its `document.failed` of stage `embed`) — not through a
//! hook in each publisher.
//!
//! # Counted once per document
//!
//! A document's final event has one id whoever publishes it (`<document>-indexed`,
//! `<document>-failed`: [`troupe_events::id`]), and the queue enqueues an id once per
//! dedupe window: a repeat (a handler run twice, two stages failing the same document)
//! enqueues nothing, and [`Queue::publish`] says so by returning 0. Only a publish that
//! enqueued something counts. What can still count twice, rarely: a repeat after the
//! dedupe window (the indexer publishes only while the document is not yet indexed); a
//! document failed by the sweeper while its indexed event was being published (two
//! ids; the status projection keeps the first); and, on SQS, a publish interrupted
//! between two subscriptions' queues, whose repeat enqueues the rest. Each host counts
//! what it publishes: sum over instances.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use troupe_core::{
    Delivery, Depth, Message, Queue, Receipt, Result, Retired, RetryOutcome, Subscription,
};
use troupe_events::{FAILED, INDEXED, Indexed};

use super::{DocumentLabels, Metrics};

/// A queue whose publishes of documents' final events are counted into [`Metrics`].
pub struct Counted {
    inner: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
}

impl Counted {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Queue>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl Metrics {
    /// Counts the messages of a publish to `topic` that enqueued `copies` copies.
    pub fn published(&self, topic: &str, messages: &[Message], copies: usize) {
        let status = match topic {
            INDEXED => "indexed",
            FAILED => "failed",
            _ => return,
        };
        // A repeat inside the dedupe window enqueued nothing. (Troupe publishes these
        // one at a time; a batch that enqueued anything counts whole.)
        if copies == 0 {
            return;
        }
        self.documents
            .get_or_create(&DocumentLabels {
                status: status.to_owned(),
            })
            .inc_by(messages.len() as u64);
        if topic == INDEXED {
            let now = chrono::Utc::now();
            for m in messages {
                if let Some(took) = indexed_after(&m.body, now) {
                    self.indexed_seconds.observe(took.as_secs_f64());
                }
            }
        }
    }
}

/// Upload → `now` for the indexed event whose CloudEvent JSON is `body`; `None` when it
/// does not say when its document was uploaded (events from before `uploaded_at`).
fn indexed_after(body: &[u8], now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let event = troupe_core::Event::from_json(body).ok()?;
    let data: Indexed = serde_json::from_slice(&event.data).ok()?;
    let uploaded = chrono::DateTime::parse_from_rfc3339(data.uploaded_at.as_deref()?).ok()?;
    // A guest clock a little ahead of the host's reads as 0, not as a negative time.
    Some((now - uploaded.to_utc()).to_std().unwrap_or_default())
}

#[async_trait]
impl Queue for Counted {
    async fn subscribe(&self, subscription: &Subscription) -> Result<()> {
        self.inner.subscribe(subscription).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.inner.subscriptions().await
    }

    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<usize> {
        let copies = self.inner.publish(topic, messages).await?;
        self.metrics.published(topic, messages, copies);
        Ok(copies)
    }

    async fn send(&self, queue: &str, messages: &[Message]) -> Result<usize> {
        self.inner.send(queue, messages).await
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.inner.receive(queue, max, wait).await
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<usize> {
        self.inner.ack(queue, receipts).await
    }

    async fn retry(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<RetryOutcome> {
        self.inner.retry(queue, receipt, delay, error).await
    }

    async fn defer(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.inner.defer(queue, receipt, delay).await
    }

    async fn reject(
        &self,
        queue: &str,
        receipt: &Receipt,
        reason: &str,
        detail: &str,
    ) -> Result<()> {
        self.inner.reject(queue, receipt, reason, detail).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        self.inner.depth(queue).await
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }

    async fn retire(&self, from: &str, into: &str) -> Result<Retired> {
        self.inner.retire(from, into).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_events::{Failed, Payload, id};

    fn event<P: Payload>(id: String, data: &P) -> Message {
        let data = serde_json::to_value(data).unwrap();
        let mut e = troupe_core::Event::new("/functions/t", P::TYPE, &data);
        e.id = id;
        Message::from_event(&e)
    }

    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    #[test]
    fn a_final_event_counts_once_and_indexed_observes_its_latency() {
        let m = Metrics::default();
        let uploaded = chrono::Utc::now() - chrono::Duration::seconds(3);
        let indexed = event(
            id::indexed("d1"),
            &Indexed {
                document: "d1".into(),
                chunks: 2,
                batches: 1,
                uploaded_at: Some(uploaded.to_rfc3339()),
            },
        );
        m.published(INDEXED, std::slice::from_ref(&indexed), 3);
        // The same event again: the queue enqueued nothing.
        m.published(INDEXED, std::slice::from_ref(&indexed), 0);
        let old = event(
            id::indexed("d0"),
            &Indexed {
                document: "d0".into(),
                chunks: 1,
                batches: 1,
                uploaded_at: None,
            },
        );
        m.published(INDEXED, &[old], 1);
        let failed = event(
            id::failed("d2"),
            &Failed {
                document: "d2".into(),
                code: "corrupt".into(),
                message: "no pages".into(),
                stage: "extract".into(),
            },
        );
        m.published(FAILED, std::slice::from_ref(&failed), 1);
        m.published("troupe.document.uploaded", &[failed], 1);
        let text = m.encode();
        assert_eq!(
            sample(&text, r#"troupe_documents_total{status="indexed"} "#),
            2.0
        );
        assert_eq!(
            sample(&text, r#"troupe_documents_total{status="failed"} "#),
            1.0
        );
        // Only the event that says when its document was uploaded is timed.
        assert_eq!(sample(&text, "troupe_document_indexed_seconds_count "), 1.0);
        let took = sample(&text, "troupe_document_indexed_seconds_sum ");
        assert!((3.0..10.0).contains(&took), "{took} in {text}");
        assert_eq!(
            sample(
                &text,
                r#"troupe_document_indexed_seconds_bucket{le="2.0"} "#
            ),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                r#"troupe_document_indexed_seconds_bucket{le="4.0"} "#
            ),
            1.0
        );
    }
}
