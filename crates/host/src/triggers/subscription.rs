//! Consumes one subscription's queue: lease a batch, hand it to the component, settle
//! each event by its outcome. Faults (timeout, memory cap, trap) retry the whole batch
//! with backoff; the queue dead-letters after the subscription's max deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;
use troupe_core::{Delivery, Event, Receipt, RetryOutcome};

use crate::Shared;
use crate::bindings::Outcome;
use crate::manifest::{Source, SubscriptionTrigger};

/// Dead-letter reason for a message whose body is not a CloudEvent.
pub const REASON_MALFORMED: &str = "malformed_event";

/// How long one receive waits for messages before checking for shutdown.
const RECEIVE_WAIT: Duration = Duration::from_millis(500);

/// Runs until `stop` turns true, then waits for in-flight batches.
pub async fn run(
    shared: Arc<Shared>,
    trigger: SubscriptionTrigger,
    mut stop: watch::Receiver<bool>,
) {
    let Some(loaded) = shared.runtime.component(&trigger.component).cloned() else {
        return;
    };
    let name = trigger.subscription.name.clone();
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = loaded.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let deliveries = match shared
            .backends
            .queue
            .receive(&name, trigger.batch_size, RECEIVE_WAIT)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(messaging.destination.name = %name, error = %e, "receive failed; retrying in 1s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        while inflight.try_join_next().is_some() {}
        if deliveries.is_empty() {
            continue;
        }
        let (shared, trigger) = (shared.clone(), trigger.clone());
        inflight.spawn(async move {
            process(&shared, &trigger, deliveries).await;
            drop(permit);
        });
    }
    while inflight.join_next().await.is_some() {}
}

/// Hands one leased batch to the component and settles every message. Returns the
/// receipts of messages left on the queue for redelivery (retried later, or not
/// settled), which a Lambda SQS event reports as batch item failures.
pub async fn process(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    deliveries: Vec<Delivery>,
) -> Vec<Receipt> {
    let mut left = Vec::new();
    let queue = &shared.backends.queue;
    let name = trigger.subscription.name.as_str();
    let kind = match trigger.source {
        Source::Topic => "queue",
        Source::Blob { .. } => "blob",
    };
    let mut events = Vec::with_capacity(deliveries.len());
    let mut receipts: Vec<Receipt> = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        match Event::from_json(&d.body) {
            Ok(e) => {
                events.push(e.into());
                receipts.push(d.receipt);
            }
            Err(e) => {
                tracing::warn!(messaging.destination.name = %name, messaging.message.id = %d.id, error = %e, "dead-lettering a malformed message");
                settle(
                    queue
                        .reject(name, &d.receipt, REASON_MALFORMED, &e.to_string())
                        .await,
                    name,
                    &d.receipt,
                );
                shared.metrics.settled(name, "reject", 1);
            }
        }
    }
    if events.is_empty() {
        return left;
    }
    let span = tracing::info_span!(
        "host.invoke",
        component = %trigger.component,
        trigger = kind,
        messaging.destination.name = %name,
        messaging.message.id = %receipts[0].message_id,
        messaging.batch.message_count = receipts.len(),
    );
    let Some(loaded) = shared.runtime.component(&trigger.component) else {
        return receipts;
    };
    let started = Instant::now();
    let result = shared
        .runtime
        .handle_events_in(loaded, events)
        .instrument(span.clone())
        .await;
    let label = result.as_ref().err().map_or("ok", |f| f.label());
    shared.metrics.invoked(
        &trigger.component,
        kind,
        label,
        started.elapsed().as_secs_f64(),
    );
    let _enter = span.enter();
    match result {
        Ok(outcomes) => {
            let mut acks = Vec::new();
            for (receipt, outcome) in receipts.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Ok => acks.push(receipt),
                    Outcome::Retry(delay) => {
                        let delay = delay.map(|ms| {
                            Duration::from_millis(u64::from(ms))
                                .min(crate::manifest::MAX_RETRY_DELAY)
                        });
                        let r = queue
                            .retry(name, &receipt, delay, "handler asked to retry")
                            .await;
                        record_retry(shared, name, &r);
                        if !matches!(r, Ok(RetryOutcome::DeadLettered)) {
                            left.push(receipt.clone());
                        }
                        settle(r.map(|_| ()), name, &receipt);
                    }
                    // A wait, not a failure: the delivery is not counted.
                    Outcome::Defer(ms) => {
                        let delay = Duration::from_millis(u64::from(ms))
                            .min(crate::manifest::MAX_RETRY_DELAY);
                        let r = queue.defer(name, &receipt, delay).await;
                        if r.is_ok() {
                            shared.metrics.settled(name, "defer", 1);
                        }
                        left.push(receipt.clone());
                        settle(r, name, &receipt);
                    }
                    Outcome::Reject(rej) => {
                        tracing::warn!(messaging.message.id = %receipt.message_id, reason = %rej.reason, detail = %rej.detail, "handler rejected event: dead-lettered");
                        let r = queue.reject(name, &receipt, &rej.reason, &rej.detail).await;
                        if r.is_err() {
                            left.push(receipt.clone());
                        }
                        settle(r, name, &receipt);
                        shared.metrics.settled(name, "reject", 1);
                    }
                }
            }
            if !acks.is_empty() {
                shared.metrics.settled(name, "ok", acks.len() as u64);
                match queue.ack(name, &acks).await {
                    Ok(n) if n < acks.len() => tracing::warn!(
                        lost = acks.len() - n,
                        "some leases expired before the ack; those events will be redelivered"
                    ),
                    Ok(_) => {}
                    // The batch will be redelivered after its lease: at-least-once.
                    Err(e) => {
                        tracing::warn!(error = %e, "ack failed; messages will be redelivered")
                    }
                }
            }
        }
        Err(fault) => {
            tracing::warn!(error = %fault, "invocation failed; retrying its events");
            let error = fault.to_string();
            for receipt in &receipts {
                let r = queue.retry(name, receipt, None, &error).await;
                record_retry(shared, name, &r);
                if !matches!(r, Ok(RetryOutcome::DeadLettered)) {
                    left.push(receipt.clone());
                }
                settle(r.map(|_| ()), name, receipt);
            }
        }
    }
    left
}

fn record_retry(shared: &Shared, name: &str, r: &troupe_core::Result<RetryOutcome>) {
    match r {
        Ok(RetryOutcome::DeadLettered) => shared.metrics.settled(name, "dead_lettered", 1),
        Ok(RetryOutcome::Scheduled(_)) => shared.metrics.settled(name, "retry", 1),
        Err(_) => {}
    }
}

fn settle(r: troupe_core::Result<()>, name: &str, receipt: &Receipt) {
    if let Err(e) = r {
        // A lost lease means another delivery owns the message: nothing is lost.
        tracing::warn!(messaging.destination.name = %name, messaging.message.id = %receipt.message_id, error = %e, "settling failed; the message will be redelivered");
    }
}
