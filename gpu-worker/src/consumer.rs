//! The queue side of the worker: embedding jobs in, vectors and
//! `embedding.completed` out.
//!
//! A job (`troupe.embedding.requested.v1`) names a document, its batch number and
//! batch count, and carries its chunks inline or by blob reference (claim-check, for
//! jobs larger than a queue message may be). Vectors are upserted keyed on (tenant,
//! document, chunk, model), so a redelivered job writes nothing twice; the completion
//! event's id derives from the job's, so the queue's dedupe window drops a repeated
//! one. Jobs received together are embedded concurrently, so the batcher can pack
//! their chunks into shared batches.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use tokio::sync::watch;
use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{Blobs, Delivery, Event, Leases, Message, Queue, VectorRecord, Vectors};
use troupe_events::{Chunk, Completed, Failed, Job, Payload, Tenant, id};

use crate::metrics::Metrics;
use crate::{Embedder, Error};

/// Topic of the embedding jobs this consumes (their payload is [`Job`]).
pub const JOB_TOPIC: &str = Job::TOPIC;
/// Jobs in flight per job leased by one receive (`batch_size`): enough to keep the
/// batcher packing from several documents, few enough that a worker that dies leaves
/// little leased work behind (on SQS each of those receives counts as a delivery).
pub const IN_FLIGHT_PER_RECEIVE: usize = 2;

/// How long an idle consumer's receive waits: SQS's longest long poll.
const IDLE_WAIT: Duration = Duration::from_secs(20);

/// Why a job did not complete.
#[derive(Debug)]
enum Failure {
    /// Try again later.
    Retry(String, Option<Duration>),
    /// Never going to work: dead-letter with this reason code.
    Reject(&'static str, String),
    /// The worker itself is broken (the inference thread died): leave the job
    /// leased, so it is redelivered elsewhere, and stop consuming.
    Fatal(String),
}

impl Failure {
    /// What a job whose texts failed to embed with `e` becomes, by the error's kind:
    /// input the model refuses is rejected (it would fail the same way anywhere), a
    /// stopped backend stops this consumer, and anything else is retried.
    fn of_embedding(e: Error) -> Self {
        match e {
            Error::Invalid(_) => Failure::Reject("invalid_input", e.to_string()),
            Error::Stopped => Failure::Fatal(e.to_string()),
            Error::Backend(_)
            | Error::Candle(_)
            | Error::Tokenizer(_)
            | Error::Overloaded { .. }
            | Error::ModelMissing { .. }
            | Error::ModelInvalid { .. } => Failure::Retry(e.to_string(), None),
        }
    }
}

/// Consumes one subscription of [`JOB_TOPIC`].
#[derive(Clone)]
pub struct Consumer {
    /// Queues and topics.
    pub queue: Arc<dyn Queue>,
    /// For claim-checked chunks.
    pub blobs: Arc<dyn Blobs>,
    /// Where vectors go.
    pub vectors: Arc<dyn Vectors>,
    /// The model.
    pub embedder: Embedder,
    /// The subscription (queue) to consume.
    pub subscription: String,
    /// Jobs leased per receive.
    pub batch_size: usize,
    /// Where leases are extended, and the visibility each extension grants: a job
    /// still running at a third of it gets its lease renewed, so a long backlog on a
    /// slow device never hands the same job to a second consumer.
    pub leases: Option<(Arc<dyn Leases>, Duration)>,
    /// The subscription's deliveries before a retried job is dead-lettered: a retry
    /// on the last one fails the document first, as a rejection does.
    pub max_deliveries: u32,
    /// Where job waits and outcomes are recorded (the worker's `/metrics`).
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Receives and handles jobs until `stop` turns true; then finishes what it leased.
    ///
    /// Up to [`IN_FLIGHT_PER_RECEIVE`] × `batch_size` jobs run at once, and new ones are
    /// leased as soon as others finish, so the batcher always has work from several
    /// documents to pack (no round waits for its slowest job).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let max_in_flight = self.batch_size.max(1) * IN_FLIGHT_PER_RECEIVE;
        let mut running = tokio::task::JoinSet::new();
        let mut healthy = true;
        while healthy && !*stop.borrow() {
            // Reap what finished; wait for a slot when all are busy.
            while let Some(done) = running.try_join_next() {
                healthy &= done.unwrap_or(false);
            }
            if running.len() >= max_in_flight {
                if let Some(done) = running.join_next().await {
                    healthy &= done.unwrap_or(false);
                }
                continue;
            }
            let free = (max_in_flight - running.len()).min(self.batch_size.max(1));
            // Idle: one long wait, which costs nothing (the embedded queue sleeps until
            // a job is published, SQS long-polls) and which shutdown abandons (a batch
            // it had just leased is redelivered). While jobs run: short waits, so
            // finished ones are reaped promptly.
            let wait = if running.is_empty() {
                IDLE_WAIT
            } else {
                Duration::from_millis(20)
            };
            let received = tokio::select! {
                r = self.queue.receive(&self.subscription, free, wait) => r,
                _ = stop.changed() => break,
            };
            match received {
                Ok(deliveries) => {
                    for d in deliveries {
                        let me = self.clone();
                        running.spawn(async move { me.settle(d).await });
                    }
                }
                Err(e) => {
                    tracing::warn!(messaging.destination.name = %self.subscription, error = %e, "receive failed; retrying in 1s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        if !healthy {
            tracing::error!(
                messaging.destination.name = %self.subscription,
                "the inference thread has stopped: no longer consuming embedding jobs (leased ones will be redelivered)"
            );
        }
        // Finish (or, with a dead inference thread, abandon to redelivery) what is leased.
        while running.join_next().await.is_some() {}
    }

    /// Handles leased jobs concurrently and settles each; false when the worker can no
    /// longer embed (the caller should stop consuming).
    pub async fn process(&self, deliveries: Vec<Delivery>) -> bool {
        let healthy =
            futures::future::join_all(deliveries.into_iter().map(|d| self.settle(d))).await;
        healthy.into_iter().all(|h| h)
    }

    /// Publishes `troupe.document.failed` for the job's document (id `<document>-failed`,
    /// as every stage uses, so the first failure wins the dedupe window).
    async fn fail_document(
        &self,
        event: &Event,
        reason: &str,
        why: &str,
    ) -> troupe_core::Result<()> {
        // The job may be unreadable as a job: take whatever names its document.
        let document = serde_json::from_slice::<serde_json::Value>(&event.data)
            .ok()
            .and_then(|v| v["document"].as_str().map(str::to_owned))
            .or_else(|| event.subject.clone());
        let Some(document) = document else {
            return Ok(());
        };
        let failed = Failed {
            document: document.clone(),
            code: reason.to_owned(),
            message: format!("the embedding job could not be processed: {why}"),
            stage: "embed".to_owned(),
        };
        let data = serde_json::to_value(&failed)
            .map_err(|e| troupe_core::Error::invalid("document.failed", e.to_string()))?;
        let mut out = Event::new("/gpu-worker", Failed::TYPE, &data).with_subject(&document);
        out.id = id::failed(&document);
        out.tenant = event.tenant.clone();
        out.session = Some(document);
        let publish = publish_span(Failed::TOPIC, &out.id);
        out.traceparent = troupe_telemetry::traceparent_of(&publish);
        self.queue
            .publish(Failed::TOPIC, &[Message::from_event(&out)])
            .instrument(publish)
            .await
            .map(|_| ())
    }

    /// Extends `d`'s lease every third of its visibility, for as long as it is polled.
    async fn keep_leased(&self, d: &Delivery) -> std::convert::Infallible {
        let Some((leases, visibility)) = &self.leases else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(*visibility / 3).await;
            match leases
                .extend(&self.subscription, &d.receipt, *visibility)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(messaging.message.id = %d.id, "the job's lease was lost while it ran; it may be processed twice (idempotently)");
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::warn!(messaging.message.id = %d.id, error = %e, "extending the job's lease failed; trying again")
                }
            }
        }
    }

    /// Settles one job inside its consumer span, whose parent is the span that
    /// published the job (the job's envelope carries it).
    async fn settle(&self, d: Delivery) -> bool {
        if let Some(m) = &self.metrics {
            m.job_received(d.enqueued_at_ms, d.deliveries);
        }
        let event = Event::from_json(&d.body);
        let span = tracing::info_span!(
            "worker.job",
            otel.name = %format!("process {}", self.subscription),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "troupe",
            messaging.operation.type = "process",
            messaging.destination.subscription.name = %self.subscription,
            messaging.message.id = %d.id,
            troupe.delivery_count = d.deliveries,
            troupe.outcome = tracing::field::Empty,
        );
        let parent = event.as_ref().ok().and_then(|e| e.traceparent.as_deref());
        troupe_telemetry::set_parent(&span, parent, None);
        self.settle_in(d, event).instrument(span).await
    }

    async fn settle_in(&self, d: Delivery, event: troupe_core::Result<Event>) -> bool {
        let name = &self.subscription;
        let span = tracing::Span::current();
        span.record(
            "troupe.outcome",
            match &event {
                Ok(_) => "ok",
                Err(_) => "reject",
            },
        );
        let result = match &event {
            Ok(event) => {
                tokio::select! {
                    r = self.handle(event) => r,
                    never = self.keep_leased(&d) => match never {},
                }
            }
            Err(e) => Err(Failure::Reject("malformed_event", e.to_string())),
        };
        // A job that can never be embedded fails its document at once (rather than
        // leaving it for the sweeper's timeout); if that cannot be published, the job
        // is retried, so the failure is not lost.
        let last = d.deliveries >= self.max_deliveries;
        let dead = match &result {
            Err(Failure::Reject(reason, why)) => Some((*reason, why.clone())),
            Err(Failure::Retry(why, _)) if last => Some((REASON_MAX_DELIVERIES, why.clone())),
            _ => None,
        };
        if let (Some((reason, why)), Ok(event)) = (dead, &event)
            && let Err(e) = self.fail_document(event, reason, &why).await
        {
            // Left leased, it comes back after its lease, and the failure is published then.
            tracing::warn!(messaging.message.id = %d.id, error = %e, "publishing the document's failure failed; the job stays leased and comes back");
            return true;
        }
        let outcome = match &result {
            Ok(()) => Some("ok"),
            Err(Failure::Retry(..)) if !last => Some("retry"),
            Err(Failure::Retry(..) | Failure::Reject(..)) => Some("dead_lettered"),
            Err(Failure::Fatal(_)) => None,
        };
        if let (Some(m), Some(outcome)) = (&self.metrics, outcome) {
            m.job_settled(outcome);
        }
        let settled = match result {
            Ok(()) => match self.queue.ack(name, std::slice::from_ref(&d.receipt)).await {
                Ok(0) => {
                    tracing::warn!(messaging.message.id = %d.id, "the job's lease expired before it finished; it will be redelivered (raise the visibility timeout or lease fewer jobs)");
                    Ok(())
                }
                other => other.map(|_| ()),
            },
            Err(Failure::Fatal(why)) => {
                troupe_telemetry::set_error(&span, &why);
                tracing::error!(messaging.message.id = %d.id, error = %why, "embedding job left leased");
                return false;
            }
            Err(Failure::Retry(why, delay)) => {
                span.record("troupe.outcome", "retry");
                troupe_telemetry::set_error(&span, &why);
                tracing::warn!(messaging.message.id = %d.id, error = %why, "embedding job will be retried");
                self.queue
                    .retry(name, &d.receipt, delay, &why)
                    .await
                    .map(|_| ())
            }
            Err(Failure::Reject(reason, why)) => {
                span.record("troupe.outcome", "reject");
                troupe_telemetry::set_error(&span, &format!("{reason}: {why}"));
                tracing::warn!(messaging.message.id = %d.id, reason, error = %why, "embedding job dead-lettered");
                self.queue.reject(name, &d.receipt, reason, &why).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(messaging.message.id = %d.id, error = %e, "settling failed; the job will be redelivered");
        }
        true
    }

    async fn handle(&self, event: &Event) -> Result<(), Failure> {
        if event.ty != Job::TYPE {
            return Err(Failure::Reject(
                "unexpected_type",
                format!("expected {}, got {}", Job::TYPE, event.ty),
            ));
        }
        let job: Job = serde_json::from_slice(&event.data)
            .map_err(|e| Failure::Reject("malformed_job", format!("job data: {e}")))?;
        if job.batch == 0 || job.batch > job.of {
            return Err(Failure::Reject(
                "malformed_job",
                format!("batch {} of {} is out of range", job.batch, job.of),
            ));
        }
        // The envelope's tenant was set by the host from the invocation that
        // published the job; the job's own fields came from a guest, so its chunks
        // must lie in that tenant's keys.
        let tenant = match &event.tenant {
            None => Tenant::default(),
            Some(t) => Tenant::new(t.as_str())
                .map_err(|e| Failure::Reject("invalid_tenant", e.to_string()))?,
        };
        let mut chunks = job.chunks.clone();
        if let Some(r) = &job.chunks_blob {
            if !tenant.owns_key(&r.key) {
                return Err(Failure::Reject(
                    "denied",
                    format!(
                        "the job of tenant `{tenant}` names chunks at {}/{}, outside its keys (chunks/{tenant}/…)",
                        r.bucket, r.key
                    ),
                ));
            }
            let bytes = self
                .blobs
                .get(&r.bucket, &r.key)
                .await
                .map_err(|e| {
                    Failure::Retry(format!("reading chunks {}/{}: {e}", r.bucket, r.key), None)
                })?
                .ok_or_else(|| {
                    Failure::Reject(
                        "chunks_missing",
                        format!("no object {}/{}", r.bucket, r.key),
                    )
                })?;
            let more: Vec<Chunk> = serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Reject(
                    "malformed_job",
                    format!("chunks in {}/{}: {e}", r.bucket, r.key),
                )
            })?;
            chunks.extend(more);
        }
        let tenant = tenant.to_string();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        // Queue work waits for admission rather than burning deliveries on `Overloaded`.
        let embed = tracing::info_span!(
            "worker.embed",
            otel.name = "embed",
            gen_ai.operation.name = "embeddings",
            gen_ai.request.model = %self.embedder.model(),
            troupe.chunks = texts.len(),
            gen_ai.usage.input_tokens = tracing::field::Empty,
        );
        let embedded = self
            .embedder
            .embed_waiting(&texts)
            .instrument(embed.clone())
            .await
            .map_err(Failure::of_embedding)?;
        embed.record("gen_ai.usage.input_tokens", embedded.tokens);
        let model = self.embedder.model().to_owned();
        let records: Vec<VectorRecord> = chunks
            .into_iter()
            .zip(embedded.vectors)
            .map(|(c, vector)| VectorRecord {
                tenant: tenant.clone(),
                document: job.document.clone(),
                chunk: c.id,
                model: model.clone(),
                vector,
                text: c.text,
            })
            .collect();
        let n = records.len() as u64;
        self.vectors
            .upsert(&records)
            .await
            .map_err(|e| Failure::Retry(format!("storing vectors: {e}"), None))?;
        let done = Completed {
            document: job.document.clone(),
            batch: job.batch,
            of: job.of,
            model,
            dims: self.embedder.dims() as u64,
            chunks: n,
        };
        let data = serde_json::to_value(&done).map_err(|e| Failure::Retry(e.to_string(), None))?;
        let mut out = Event::new("/gpu-worker", Completed::TYPE, &data).with_subject(&job.document);
        // Derived from the job: a redelivered job's completion is deduplicated.
        out.id = id::completed(&event.id);
        out.tenant = event.tenant.clone();
        out.session = event.session.clone().or_else(|| Some(job.document.clone()));
        let publish = publish_span(Completed::TOPIC, &out.id);
        out.traceparent = troupe_telemetry::traceparent_of(&publish);
        self.queue
            .publish(Completed::TOPIC, &[Message::from_event(&out)])
            .instrument(publish)
            .await
            .map_err(|e| Failure::Retry(format!("publishing completion: {e}"), None))?;
        Ok(())
    }
}

/// The producer span of one event the worker publishes (a child of the job's span).
fn publish_span(topic: &str, id: &str) -> tracing::Span {
    tracing::info_span!(
        "worker.publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "troupe",
        messaging.operation.type = "publish",
        messaging.destination.name = %topic,
        messaging.message.id = %id,
    )
}

#[cfg(test)]
mod tests {
    use super::Failure;
    use crate::{BatchError, Error};

    #[test]
    fn the_decision_follows_the_errors_kind() {
        let decide = Failure::of_embedding;
        assert!(matches!(
            decide(Error::Invalid("empty input".into())),
            Failure::Reject("invalid_input", why) if why.contains("empty input")
        ));
        assert!(matches!(decide(Error::Stopped), Failure::Fatal(_)));
        for transient in [
            Error::Backend("device busy".into()),
            Error::Tokenizer("bad id".into()),
            Error::Overloaded {
                queued: 8,
                limit: 8,
            },
        ] {
            assert!(matches!(decide(transient), Failure::Retry(_, None)));
        }
        // What crossed the batcher's reply path decides the same way.
        assert!(matches!(
            decide(BatchError::Invalid("x".into()).into()),
            Failure::Reject("invalid_input", _)
        ));
        assert!(matches!(
            decide(BatchError::Stopped.into()),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            decide(BatchError::Backend("x".into()).into()),
            Failure::Retry(_, None)
        ));
    }
}
