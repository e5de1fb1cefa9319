//! The worker's Prometheus metrics, under `troupe_embed_`: fed by the batcher after
//! every batch (sizes, waits, inference time, tokens — `rate(troupe_embed_tokens_total)`
//! is tokens/s) and by the job consumer (how long jobs waited in the queue, how they
//! ended).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::batcher::{BatchStats, Observer};

/// Labels of a settled job.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `ok`, `retry` or `dead_lettered`.
    pub outcome: String,
}

/// Batch sizes, waits, inference time and token throughput; job waits and outcomes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batch_tokens: Histogram,
    batch_texts: Histogram,
    queue_wait: Histogram,
    inference: Histogram,
    tokens: Counter,
    texts: Counter,
    /// Publish → first receive of a job: the backlog as the worker feels it.
    job_wait: Histogram,
    /// Jobs settled, by outcome.
    jobs: Family<JobLabels, Counter>,
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
        // 1 ms … ~9 min.
        let job_wait = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let jobs = Family::<JobLabels, Counter>::default();
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
        registry.register(
            "job_wait_seconds",
            "Time an embedding job waited in the queue before its first delivery",
            job_wait.clone(),
        );
        registry.register(
            "jobs",
            "Embedding jobs settled, by outcome (ok, retry, dead_lettered)",
            jobs.clone(),
        );
        Self {
            registry,
            batch_tokens,
            batch_texts,
            queue_wait,
            inference,
            tokens,
            texts,
            job_wait,
            jobs,
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

    /// Records a job's first delivery, enqueued at `enqueued_at_ms` (ms since the
    /// epoch); redeliveries are not queue wait but retry delays, and are skipped.
    pub fn job_received(&self, enqueued_at_ms: u64, deliveries: u32) {
        if deliveries != 1 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.job_wait
            .observe(now.saturating_sub(enqueued_at_ms) as f64 / 1000.0);
    }

    /// Records a job settled with `outcome`.
    pub fn job_settled(&self, outcome: &str) {
        self.jobs
            .get_or_create(&JobLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
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
