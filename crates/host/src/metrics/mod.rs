//! Prometheus metrics, under the `troupe_` prefix: what an operator pages on and what
//! autoscaling follows.
//!
//! - Functions: invocations by outcome, their wall time and the CPU time spent running
//!   them (guest code and the host calls it makes inline), per component and trigger.
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
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

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
    /// CPU time spent polling invocations ([`cpu_timed`]).
    pub cpu: Family<ComponentLabels, Counter<f64, AtomicU64>>,
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
        let cpu = Family::<ComponentLabels, Counter<f64, AtomicU64>>::default();
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
            "invocation_cpu_seconds",
            "CPU time of function invocations: guest code and the host calls it makes on \
             the invoking thread (not the SQLite writer's commits nor the inference threads)",
            cpu.clone(),
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
            cpu,
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
    pub fn invoked(
        &self,
        component: &str,
        trigger: &str,
        outcome: &str,
        seconds: f64,
        cpu: Duration,
    ) {
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
        self.cpu
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
                trigger: trigger.to_owned(),
            })
            .inc_by(cpu.as_secs_f64());
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

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Runs `f`, adding up the CPU time of the threads while they poll it: an
/// invocation's own cost, whichever worker threads it moved between, without the
/// time it spent waiting (two clock reads per poll, ~0.1 µs each).
pub async fn cpu_timed<F: Future>(f: F) -> (F::Output, Duration) {
    let mut f = std::pin::pin!(f);
    let mut spent = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let before = thread_cpu();
        let polled = f.as_mut().poll(cx);
        spent += thread_cpu().saturating_sub(before);
        polled
    })
    .await;
    (out, spent)
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

    #[tokio::test]
    async fn cpu_time_counts_work_in_polls_and_not_waiting() {
        let busy = Duration::from_millis(30);
        let ((), cpu) = cpu_timed(async {
            // CPU work in the first poll, then a wait that takes no CPU.
            let start = thread_cpu();
            while thread_cpu() - start < busy {
                std::hint::black_box(0u64);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await;
        assert!(cpu >= busy, "{cpu:?} counts the {busy:?} of work");
        assert!(
            cpu < Duration::from_millis(200),
            "{cpu:?} left out the 300 ms wait"
        );
        let m = Metrics::default();
        m.invoked("extract", "queue", "ok", 0.5, Duration::from_millis(250));
        m.invoked("extract", "queue", "ok", 0.5, Duration::from_millis(250));
        let text = m.encode();
        assert!(
            text.lines().any(|l| l
                == r#"troupe_invocation_cpu_seconds_total{component="extract",trigger="queue"} 0.5"#),
            "{text}"
        );
    }
}
