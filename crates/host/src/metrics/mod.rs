//! Prometheus metrics, under the `troupe_` prefix: what an operator pages on and what
//! autoscaling follows.
//!
//! - Functions: invocations by outcome and their wall time, per component and trigger.
//! - Subscriptions: events settled by outcome; dead letters by reason; queue depth,
//!   dead-letter depth and the age of the oldest message, read from the queue backend
//!   at scrape time ([`crate::Shared::refresh_depths`]).
//! - Documents: how many reached their final status, and upload → indexed latency,
//!   counted as those events are published ([`documents`]).
//! - HTTP: requests by method, route pattern and status code, with their duration
//!   ([`http`]).
//!
//! The embedding worker's metrics (`troupe_embed_…`) are its own registry
//! (`troupe_gpu_worker::metrics`), appended to `/metrics` where it runs in-process.
//!
//! # Layout
//!
//! - this module: the registry and the recording calls.
//! - [`documents`]: a [`troupe_core::Queue`] wrapper that counts documents' final events.
//! - [`http`]: bounded labels of a request (the manifest's route, not the raw path).

pub mod documents;
pub mod http;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of an invocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// Component id.
    pub component: String,
    /// `http`, `queue`, `blob` or `cron`.
    pub trigger: String,
    /// `ok`, `timeout`, `memory_cap`, `trap`, `overloaded`.
    pub outcome: String,
}

/// Labels of a duration sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Component id.
    pub component: String,
    /// Trigger kind.
    pub trigger: String,
}

/// Labels of a settled event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Subscription (queue) name.
    pub subscription: String,
    /// `ok`, `retry`, `defer`, `reject`, `dead_lettered`.
    pub outcome: String,
}

/// Labels of a depth gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Subscription (queue) name.
    pub subscription: String,
}

/// Labels of a dead letter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// Subscription (queue) name.
    pub subscription: String,
    /// The reason code: `max_deliveries`, a handler's rejection code, or the host's
    /// (`malformed_event`, `invalid_tenant`, `trap`, …). Handlers choose codes from a
    /// small set, as they are meant for machines.
    pub reason: String,
}

/// Labels of a document count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocumentLabels {
    /// `indexed` or `failed`.
    pub status: String,
}

/// Every metric the host exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Invocations by outcome.
    pub invocations: Family<InvocationLabels, Counter>,
    /// Invocation wall time.
    pub duration: Family<ComponentLabels, Histogram>,
    /// Events settled.
    pub events: Family<EventLabels, Counter>,
    /// Ready + in-flight messages.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Dead letters.
    pub dlq_depth: Family<QueueLabels, Gauge>,
    /// Age of the oldest message not yet done: the backlog signal that, unlike depth,
    /// does not depend on how fast consumers are.
    pub oldest_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    /// Messages this host dead-lettered, by reason.
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// Documents that reached their final status.
    pub documents: Family<DocumentLabels, Counter>,
    /// Upload → indexed, per document.
    pub indexed_seconds: Histogram,
    /// Requests and their duration to the response head.
    pub http: Family<http::RequestLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("troupe");
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration = Family::<ComponentLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        let events = Family::<EventLabels, Counter>::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let dlq_depth = Family::<QueueLabels, Gauge>::default();
        let oldest_age = Family::<QueueLabels, Gauge<f64, AtomicU64>>::default();
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        let documents = Family::<DocumentLabels, Counter>::default();
        // 0.25 s … ~68 min.
        let indexed_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 15));
        // 0.5 ms … ~65 s.
        let http = Family::<http::RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
        });
        registry.register(
            "invocations",
            "Function invocations by outcome",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Function invocation wall time",
            duration.clone(),
        );
        registry.register(
            "events",
            "Events settled per subscription, by outcome",
            events.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages ready or in flight per subscription",
            queue_depth.clone(),
        );
        registry.register(
            "dlq_depth",
            "Dead-lettered messages per subscription",
            dlq_depth.clone(),
        );
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message ready or in flight per subscription (absent on SQS: \
             read CloudWatch's ApproximateAgeOfOldestMessage there)",
            oldest_age.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages dead-lettered per subscription, by reason code",
            dead_letters.clone(),
        );
        registry.register(
            "documents",
            "Documents that reached their final status (indexed or failed), counted once \
             per document as that event is published",
            documents.clone(),
        );
        registry.register(
            "document_indexed_seconds",
            "Time from a document's upload to its indexed event",
            indexed_seconds.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by method, route (the manifest's pattern) and status code, \
             with the time to the response head",
            http.clone(),
        );
        Self {
            registry,
            invocations,
            duration,
            events,
            queue_depth,
            dlq_depth,
            oldest_age,
            dead_letters,
            documents,
            indexed_seconds,
            http,
        }
    }
}

impl Metrics {
    /// Records one invocation.
    pub fn invoked(&self, component: &str, trigger: &str, outcome: &str, seconds: f64) {
        self.invocations
            .get_or_create(&InvocationLabels {
                component: component.to_owned(),
                trigger: trigger.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
                trigger: trigger.to_owned(),
            })
            .observe(seconds);
    }

    /// Records settled events.
    pub fn settled(&self, subscription: &str, outcome: &str, n: u64) {
        self.events
            .get_or_create(&EventLabels {
                subscription: subscription.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// Records a message dead-lettered from `subscription` with `reason`.
    pub fn dead_lettered(&self, subscription: &str, reason: &str) {
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                subscription: subscription.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets the gauges of `subscription` from its queue's depth.
    pub fn depth(&self, subscription: &str, d: &troupe_core::Depth) {
        let labels = QueueLabels {
            subscription: subscription.to_owned(),
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(&labels)
            .set(count(d.ready + d.in_flight));
        self.dlq_depth.get_or_create(&labels).set(count(d.dead));
        if let Some(ms) = d.oldest_age_ms {
            self.oldest_age
                .get_or_create(&labels)
                .set(ms as f64 / 1000.0);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let m = Metrics::default();
        m.dead_lettered("extract", "corrupt");
        m.dead_lettered("extract", "corrupt");
        m.depth(
            "extract",
            &troupe_core::Depth {
                ready: 2,
                in_flight: 1,
                dead: 2,
                oldest_age_ms: Some(1500),
            },
        );
        // SQS cannot say: no age sample rather than a wrong one.
        m.depth("gpu-worker", &troupe_core::Depth::default());
        let text = m.encode();
        for line in [
            r#"troupe_dead_letters_total{subscription="extract",reason="corrupt"} 2"#,
            r#"troupe_queue_depth{subscription="extract"} 3"#,
            r#"troupe_dlq_depth{subscription="extract"} 2"#,
            r#"troupe_queue_oldest_message_age_seconds{subscription="extract"} 1.5"#,
            r#"troupe_queue_depth{subscription="gpu-worker"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"troupe_queue_oldest_message_age_seconds{subscription="gpu-worker"}"#),
            "{text}"
        );
    }
}
