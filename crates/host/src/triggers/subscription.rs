//! Consumes one subscription's queue: lease a batch, hand it to the component (renewing
//! the leases while it runs), settle each event by its outcome. Deterministic faults
//! (trap, memory cap, a second timeout) dead-letter the event at once; transient ones
//! retry with backoff, and the queue dead-letters after the subscription's max
//! deliveries. Each dead-lettering is announced first on [`DEAD_LETTERED_TOPIC`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;
use troupe_core::queue::{DEAD_LETTERED_TOPIC, REASON_MAX_DELIVERIES, dead_letter_notice};
use troupe_core::{Delivery, Event, Message, Receipt, RetryOutcome};
use troupe_events::Tenant;

use crate::Shared;
use crate::bindings::Outcome;
use crate::manifest::{Source, SubscriptionTrigger};
use crate::runtime::Fault;
use crate::tenancy::{self, Binding};

/// Dead-letter reason for a message whose body is not a CloudEvent.
pub const REASON_MALFORMED: &str = "malformed_event";

/// How long one receive waits for messages: SQS's longest long poll. The wait costs
/// nothing (the embedded queue sleeps until a publish or a due time wakes it), and
/// shutdown does not wait for it.
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

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
        // Shutdown abandons a waiting receive. Should it have just leased a batch,
        // the batch is redelivered: `troupe up` hands its embedded leases back as it
        // exits; elsewhere they run out after the visibility timeout.
        let received = tokio::select! {
            r = shared.backends.queue.receive(&name, trigger.batch_size, RECEIVE_WAIT) => r,
            _ = stop.changed() => break,
        };
        let deliveries = match received {
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
///
/// Leases are renewed while the component runs (every third of the visibility
/// timeout), so a subscription's lease can be short: a host that dies leaves its
/// messages to others within one visibility timeout.
///
/// Faults are judged by kind. A trap or a memory cap is deterministic: retrying the
/// same input would fail the same way, so the message is dead-lettered at once with
/// reason `trap` or `memory_cap` (a batch of several is first split, each event run
/// alone, so one bad event does not take its neighbours down). A timeout is retried
/// once, then dead-lettered with reason `timeout`. Running out of slots is transient.
/// Every dead-lettering of an event is preceded by a [notice](troupe_core::queue::dead_letter_notice)
/// on [`DEAD_LETTERED_TOPIC`], so whoever owns its subject settles it at once.
pub async fn process(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    deliveries: Vec<Delivery>,
) -> Vec<Receipt> {
    let mut left = Vec::new();
    let queue = &shared.backends.queue;
    let name = trigger.subscription.name.as_str();
    let mut batch = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let parsed = Event::from_json(&d.body).map_err(|e| (REASON_MALFORMED, e.to_string()));
        match parsed.and_then(|event| {
            let tenant = tenancy::of_event(&event).map_err(|e| (REASON_TENANT, e.to_string()))?;
            Ok((tenant, event))
        }) {
            Ok((tenant, event)) => batch.push((
                tenant,
                Leased {
                    receipt: d.receipt,
                    event,
                    deliveries: d.deliveries,
                },
            )),
            Err((reason, why)) => {
                tracing::warn!(messaging.destination.name = %name, messaging.message.id = %d.id, reason, error = %why, "dead-lettering a message that cannot be handled");
                let r = queue.reject(name, &d.receipt, reason, &why).await;
                if r.is_ok() {
                    shared.metrics.dead_lettered(name, reason);
                }
                settle(r, name, &d.receipt);
                shared.metrics.settled(name, "reject", 1);
            }
        }
    }
    if !batch.is_empty() {
        let receipts: Vec<Receipt> = batch.iter().map(|(_, l)| l.receipt.clone()).collect();
        let run = async {
            // One invocation acts for one tenant: a batch that mixes tenants runs
            // as one invocation per tenant.
            for (tenant, group) in by_tenant(batch) {
                shared.tenants.register(&tenant).await;
                let binding = Binding {
                    tenant,
                    objects: group
                        .iter()
                        .filter_map(|l| tenancy::announced(&l.event))
                        .collect(),
                    origins: origins(&group),
                };
                invoke(shared, trigger, group, &binding, &mut left).await;
            }
        };
        tokio::select! {
            () = run => {}
            never = keep_leased(shared, trigger, &receipts) => match never {},
        }
    }
    left
}

/// Dead-letter reason of an event whose envelope names an invalid tenant.
const REASON_TENANT: &str = "invalid_tenant";

/// `batch` split by tenant, each group in delivery order.
fn by_tenant(batch: Vec<(Tenant, Leased)>) -> Vec<(Tenant, Vec<Leased>)> {
    let mut groups: Vec<(Tenant, Vec<Leased>)> = Vec::new();
    for (tenant, leased) in batch {
        match groups.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, g)) => g.push(leased),
            None => groups.push((tenant, vec![leased])),
        }
    }
    groups
}

/// `(subject, traceparent)` of the events of `group` that carry both.
fn origins(group: &[Leased]) -> Vec<(String, String)> {
    if !troupe_telemetry::context::enabled() {
        return Vec::new();
    }
    group
        .iter()
        .filter_map(|l| Some((l.event.subject.clone()?, l.event.traceparent.clone()?)))
        .collect()
}

/// The consumer span of one invocation (OpenTelemetry messaging conventions). A
/// single event's producer span is its parent; a batch whose events all belong to one
/// trace continues it from the first; a batch of several traces starts its own and
/// links every producer span.
fn process_span(
    trigger: &SubscriptionTrigger,
    kind: &str,
    batch: &[Leased],
    binding: &Binding,
) -> tracing::Span {
    let name = trigger.subscription.name.as_str();
    let span = tracing::info_span!(
        "host.invoke",
        otel.name = %format!("process {name}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "troupe",
        messaging.operation.type = "process",
        messaging.destination.subscription.name = %name,
        messaging.message.id = %batch[0].receipt.message_id,
        messaging.batch.message_count = batch.len(),
        troupe.delivery_count = batch.iter().map(|l| l.deliveries).max().unwrap_or(1),
        troupe.outcome = tracing::field::Empty,
        component = %trigger.component,
        trigger = kind,
        tenant = %binding.tenant,
    );
    if !troupe_telemetry::context::enabled() {
        return span;
    }
    let parents: Vec<&str> = batch
        .iter()
        .filter_map(|l| l.event.traceparent.as_deref())
        .collect();
    let traces: std::collections::BTreeSet<Option<String>> = parents
        .iter()
        .map(|tp| troupe_telemetry::trace_id(tp))
        .collect();
    match parents.as_slice() {
        [] => {}
        [one] => troupe_telemetry::set_parent(&span, Some(one), None),
        [first, rest @ ..] if traces.len() == 1 => {
            troupe_telemetry::set_parent(&span, Some(first), None);
            for tp in rest {
                troupe_telemetry::add_link(&span, tp);
            }
        }
        all => {
            for tp in all {
                troupe_telemetry::add_link(&span, tp);
            }
        }
    }
    span
}

/// Records how an invocation's events were settled on its span: the worst outcome.
fn record_outcome(span: &tracing::Span, outcome: &str, error: Option<&str>) {
    span.record("troupe.outcome", outcome);
    if let Some(e) = error {
        troupe_telemetry::set_error(span, e);
    }
}

/// A leased event with what settling it needs.
struct Leased {
    receipt: Receipt,
    event: Event,
    deliveries: u32,
}

/// What a fault means for the events of the invocation it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// Transient: retry with backoff.
    Retry,
    /// The same input fails the same way: dead-letter with this reason.
    DeadLetter(&'static str),
}

/// How a fault on an event delivered `deliveries` times is judged.
fn judge(fault: &Fault, deliveries: u32) -> Judgement {
    match fault {
        Fault::Trap(_) => Judgement::DeadLetter("trap"),
        Fault::MemoryCap(_) => Judgement::DeadLetter("memory_cap"),
        // One retry: a timeout may be a slow moment rather than the input.
        Fault::Timeout(_) if deliveries >= 2 => Judgement::DeadLetter("timeout"),
        Fault::Timeout(_) | Fault::Overloaded(_) => Judgement::Retry,
    }
}

/// Runs `batch` through the component and settles each event by its outcome.
async fn invoke(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    batch: Vec<Leased>,
    binding: &Binding,
    left: &mut Vec<Receipt>,
) {
    let queue = &shared.backends.queue;
    let name = trigger.subscription.name.as_str();
    let kind = match trigger.source {
        Source::Topic => "queue",
        Source::Blob { .. } => "blob",
    };
    let span = process_span(trigger, kind, &batch, binding);
    let Some(loaded) = shared.runtime.component(&trigger.component) else {
        left.extend(batch.into_iter().map(|l| l.receipt));
        return;
    };
    let started = Instant::now();
    // The handler sees the tenant it acts for in each envelope, whether the publisher
    // named it or the host derived it (a dropped-in file's folder).
    let events = batch
        .iter()
        .map(|l| {
            let mut event = l.event.clone();
            event.tenant = Some(binding.tenant.to_string());
            event.into()
        })
        .collect();
    let (result, cpu) = crate::metrics::cpu_timed(
        shared
            .runtime
            .handle_events_in(loaded, events, binding.clone())
            .instrument(span.clone()),
    )
    .await;
    let label = result.as_ref().err().map_or("ok", |f| f.label());
    shared.metrics.invoked(
        &trigger.component,
        kind,
        label,
        started.elapsed().as_secs_f64(),
        cpu,
    );
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(fault) => {
            let deterministic = matches!(fault, Fault::Trap(_) | Fault::MemoryCap(_));
            if batch.len() > 1 && !matches!(fault, Fault::Overloaded(_)) {
                // Which event caused it? Run each alone, settling each by its own result.
                tracing::warn!(parent: &span, error = %fault, deterministic, "invocation of a batch failed; running its events one by one");
                for one in batch {
                    Box::pin(invoke(shared, trigger, vec![one], binding, left)).await;
                }
                return;
            }
            let error = fault.to_string();
            let worst = match judge(&fault, batch[0].deliveries) {
                Judgement::Retry => "retry",
                Judgement::DeadLetter(_) => "reject",
            };
            record_outcome(&span, worst, Some(&error));
            for l in batch {
                match judge(&fault, l.deliveries) {
                    Judgement::DeadLetter(reason) => {
                        tracing::warn!(parent: &span, messaging.message.id = %l.receipt.message_id, reason, error = %error, "invocation failed on this event; dead-lettering it");
                        dead_letter(shared, trigger, &l, reason, &error, left).await;
                    }
                    Judgement::Retry => {
                        tracing::warn!(parent: &span, error = %error, "invocation failed; retrying its events");
                        retry(shared, trigger, &l, None, &error, left).await;
                    }
                }
            }
            return;
        }
    };
    let worst = outcomes.iter().fold("ok", |w, o| match (w, o) {
        (_, Outcome::Reject(_)) | ("reject", _) => "reject",
        (_, Outcome::Retry(_)) | ("retry", _) => "retry",
        (_, Outcome::Defer(_)) | ("defer", _) => "defer",
        _ => "ok",
    });
    let rejected = outcomes.iter().find_map(|o| match o {
        Outcome::Reject(r) => Some(format!("{}: {}", r.reason, r.detail)),
        _ => None,
    });
    record_outcome(&span, worst, rejected.as_deref());
    let mut acks = Vec::new();
    for (l, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            Outcome::Ok => acks.push(l.receipt),
            Outcome::Retry(delay) => {
                let delay = delay.map(|ms| {
                    Duration::from_millis(u64::from(ms)).min(crate::manifest::MAX_RETRY_DELAY)
                });
                retry(shared, trigger, &l, delay, "handler asked to retry", left).await;
            }
            // A wait, not a failure: the delivery is not counted.
            Outcome::Defer(ms) => {
                let delay =
                    Duration::from_millis(u64::from(ms)).min(crate::manifest::MAX_RETRY_DELAY);
                let r = queue.defer(name, &l.receipt, delay).await;
                if r.is_ok() {
                    shared.metrics.settled(name, "defer", 1);
                }
                left.push(l.receipt.clone());
                settle(r, name, &l.receipt);
            }
            Outcome::Reject(rej) => {
                tracing::warn!(parent: &span, messaging.message.id = %l.receipt.message_id, reason = %rej.reason, detail = %rej.detail, "handler rejected event: dead-lettered");
                dead_letter(shared, trigger, &l, &rej.reason, &rej.detail, left).await;
            }
        }
    }
    if !acks.is_empty() {
        shared.metrics.settled(name, "ok", acks.len() as u64);
        match queue.ack(name, &acks).await {
            Ok(n) if n < acks.len() => tracing::warn!(
                parent: &span,
                lost = acks.len() - n,
                "some leases expired before the ack; those events will be redelivered"
            ),
            Ok(_) => {}
            // The batch will be redelivered after its lease: at-least-once.
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "ack failed; messages will be redelivered")
            }
        }
    }
}

/// Retries `l`; on its last delivery the queue dead-letters it, so the notice goes
/// first.
async fn retry(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    l: &Leased,
    delay: Option<Duration>,
    error: &str,
    left: &mut Vec<Receipt>,
) {
    let name = trigger.subscription.name.as_str();
    if l.deliveries >= trigger.subscription.policy.max_deliveries
        && !notify_dead(shared, trigger, l, REASON_MAX_DELIVERIES, error).await
    {
        // Without the notice, leave it leased: it comes back after its lease.
        left.push(l.receipt.clone());
        return;
    }
    let r = shared
        .backends
        .queue
        .retry(name, &l.receipt, delay, error)
        .await;
    record_retry(shared, name, &r);
    if !matches!(r, Ok(RetryOutcome::DeadLettered)) {
        left.push(l.receipt.clone());
    }
    settle(r.map(|_| ()), name, &l.receipt);
}

/// Publishes the notice, then dead-letters `l` with `reason`.
async fn dead_letter(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    l: &Leased,
    reason: &str,
    detail: &str,
    left: &mut Vec<Receipt>,
) {
    let name = trigger.subscription.name.as_str();
    if !notify_dead(shared, trigger, l, reason, detail).await {
        left.push(l.receipt.clone());
        return;
    }
    let r = shared
        .backends
        .queue
        .reject(name, &l.receipt, reason, detail)
        .await;
    match &r {
        Ok(()) => shared.metrics.dead_lettered(name, reason),
        Err(_) => left.push(l.receipt.clone()),
    }
    settle(r, name, &l.receipt);
    shared.metrics.settled(name, "reject", 1);
}

/// Publishes the dead-letter notice of `l`; false if that failed (the caller then
/// leaves the message to be delivered again, so the notice is never skipped).
async fn notify_dead(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    l: &Leased,
    reason: &str,
    detail: &str,
) -> bool {
    let notice = dead_letter_notice(
        &l.event,
        &trigger.subscription.name,
        &trigger.component,
        reason,
        detail,
        l.deliveries,
    );
    match shared
        .backends
        .queue
        .publish(DEAD_LETTERED_TOPIC, &[Message::from_event(&notice)])
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(messaging.message.id = %l.receipt.message_id, error = %e, "publishing the dead-letter notice failed; the event stays leased and comes back");
            false
        }
    }
}

/// Extends the leases of `receipts` every third of the subscription's visibility
/// timeout, for as long as it is polled.
async fn keep_leased(
    shared: &Shared,
    trigger: &SubscriptionTrigger,
    receipts: &[Receipt],
) -> std::convert::Infallible {
    let Some(leases) = &shared.backends.leases else {
        return std::future::pending().await;
    };
    let name = trigger.subscription.name.as_str();
    let visibility = trigger.subscription.policy.visibility_timeout;
    let mut held: Vec<&Receipt> = receipts.iter().collect();
    loop {
        tokio::time::sleep(visibility / 3).await;
        let mut still = Vec::with_capacity(held.len());
        for receipt in held {
            match leases.extend(name, receipt, visibility).await {
                Ok(true) => still.push(receipt),
                // Settled meanwhile (a batch run one by one), or lost: nothing to keep.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(messaging.destination.name = %name, messaging.message.id = %receipt.message_id, error = %e, "renewing a lease failed; trying again");
                    still.push(receipt);
                }
            }
        }
        held = still;
    }
}

fn record_retry(shared: &Shared, name: &str, r: &troupe_core::Result<RetryOutcome>) {
    match r {
        Ok(RetryOutcome::DeadLettered) => {
            shared.metrics.settled(name, "dead_lettered", 1);
            shared.metrics.dead_lettered(name, REASON_MAX_DELIVERIES);
        }
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
