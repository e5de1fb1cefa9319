//! The worker's Prometheus metrics, fed by the batcher after every batch.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::batcher::{BatchStats, Observer};

/// Batch sizes, waits, inference time and token throughput.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batch_tokens: Histogram,
    batch_texts: Histogram,
    queue_wait: Histogram,
    inference: Histogram,
    tokens: Counter,
    texts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("troupe_embed");
        let batch_tokens = Histogram::new(exponential_buckets(16.0, 2.0, 12));
        let batch_texts = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let queue_wait = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let inference = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let tokens = Counter::default();
        let texts = Counter::default();
        registry.register(
            "batch_tokens",
            "Padded tokens per batch (what the budget bounds)",
            batch_tokens.clone(),
        );
        registry.register("batch_texts", "Inputs per batch", batch_texts.clone());
        registry.register(
            "queue_wait_seconds",
            "Longest wait of an input before its batch ran",
            queue_wait.clone(),
        );
        registry.register(
            "inference_seconds",
            "Time in the model per batch",
            inference.clone(),
        );
        registry.register(
            "tokens",
            "Tokens embedded (rate() gives tokens/s)",
            tokens.clone(),
        );
        registry.register("texts", "Inputs embedded", texts.clone());
        Self {
            registry,
            batch_tokens,
            batch_texts,
            queue_wait,
            inference,
            tokens,
            texts,
        }
    }
}

impl Metrics {
    /// Records one batch.
    pub fn record(&self, s: &BatchStats) {
        self.batch_tokens.observe(s.computed_tokens as f64);
        self.batch_texts.observe(s.texts as f64);
        self.queue_wait.observe(s.max_wait.as_secs_f64());
        self.inference.observe(s.inference.as_secs_f64());
        self.tokens.inc_by(s.tokens as u64);
        self.texts.inc_by(s.texts as u64);
    }

    /// An observer for [`crate::Embedder::start`] that records into `metrics`, then
    /// calls `then` if given.
    pub fn observer(metrics: Arc<Self>, mut then: Option<Observer>) -> Observer {
        Box::new(move |s| {
            metrics.record(s);
            if let Some(f) = then.as_mut() {
                f(s);
            }
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
