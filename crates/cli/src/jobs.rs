//! The embedding jobs `troupe up` and `troupe worker` consume: their subscription,
//! lease and consumer.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use troupe_cli::backend::Opened;

/// The embedding-job subscription.
pub(crate) fn job_subscription() -> Result<troupe_core::Subscription> {
    use troupe_gpu_worker::consumer::JOB_TOPIC;
    Ok(troupe_core::Subscription {
        name: WORKER_SUBSCRIPTION.into(),
        topics: vec![JOB_TOPIC.into()],
        subject_prefix: None,
        policy: troupe_core::DeliveryPolicy {
            // Jobs wait for admission behind other work; the consumer renews their
            // leases every third of it while they wait and run, so a worker that
            // dies hands its jobs on within one lease.
            visibility_timeout: job_lease()?,
            // On SQS a worker that dies counts a receive for every job it leased.
            max_deliveries: JOB_MAX_DELIVERIES,
            ..Default::default()
        },
    })
}

/// The embedding-job consumer on `queue`, its subscription declared.
pub(crate) async fn consumer(
    opened: &Opened,
    queue: Arc<dyn troupe_core::Queue>,
    embedder: troupe_gpu_worker::Embedder,
    metrics: Arc<troupe_gpu_worker::metrics::Metrics>,
) -> Result<troupe_gpu_worker::consumer::Consumer> {
    let backends = opened.backends(None);
    queue
        .subscribe(&job_subscription()?)
        .await
        .context("declaring the embedding-job subscription")?;
    Ok(troupe_gpu_worker::consumer::Consumer {
        queue,
        blobs: backends.blobs,
        vectors: backends.vectors,
        embedder,
        subscription: WORKER_SUBSCRIPTION.into(),
        batch_size: 8,
        leases: Some((opened.leases(), job_lease()?)),
        max_deliveries: job_subscription()?.policy.max_deliveries,
        metrics: Some(metrics),
    })
}

/// The embedding jobs' visibility timeout (renewed while they run) unless
/// `TROUPE_JOB_LEASE_MS` says otherwise.
const JOB_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The embedding jobs' visibility timeout: `TROUPE_JOB_LEASE_MS` (milliseconds), else
/// [`JOB_LEASE`]. The consumer renews a running job's lease every third of it, so a
/// shorter one only shortens how long the jobs a killed worker held wait before
/// another worker gets them.
fn job_lease() -> Result<std::time::Duration> {
    match std::env::var("TROUPE_JOB_LEASE_MS") {
        Err(_) => Ok(JOB_LEASE),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms >= 1000 => Ok(std::time::Duration::from_millis(ms)),
            _ => anyhow::bail!(
                "TROUPE_JOB_LEASE_MS={v:?} is not a lease: give milliseconds, at least 1000 (default {})",
                JOB_LEASE.as_millis()
            ),
        },
    }
}

/// Deliveries of an embedding job before it is dead-lettered.
const JOB_MAX_DELIVERIES: u32 = 10;

/// The worker's subscription to embedding jobs.
pub(crate) const WORKER_SUBSCRIPTION: &str = "gpu-worker";
