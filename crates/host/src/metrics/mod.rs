//! Prometheus metrics: invocations, durations and outcomes per component and trigger,
//! events settled per subscription, and queue and dead-letter depth read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
        Self {
            registry,
            invocations,
            duration,
            events,
            queue_depth,
            dlq_depth,
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

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
