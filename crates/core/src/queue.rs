//! Durable queues, topics that fan out to subscriptions, and dead letters.
//!
//! Delivery is at-least-once. A received message is leased for the subscription's
//! visibility timeout; it is then acked, retried (after an explicit delay or the
//! backoff with full jitter), deferred (redelivered after a delay without counting the
//! delivery: the handler was waiting, not failing), rejected (dead-lettered at once with
//! a reason code), or left to expire (and redelivered). A message delivered `max_deliveries` times without
//! an ack is dead-lettered with reason [`REASON_MAX_DELIVERIES`] and its last error.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};
use troupe_events::{DeadLettered, Payload};

use crate::Result;

/// Dead-letter reason for a message that used up its deliveries.
pub const REASON_MAX_DELIVERIES: &str = "max_deliveries";

/// Topic of the notices consumers publish when they dead-letter an event: whoever
/// owns the event's subject (for documents, the sweeper) settles it at once instead
/// of waiting for a timeout.
pub const DEAD_LETTERED_TOPIC: &str = DeadLettered::TOPIC;
/// Type of those notices.
pub const DEAD_LETTERED_TYPE: &str = DeadLettered::TYPE;
/// Longest dead-letter detail a notice carries.
const MAX_NOTICE_DETAIL: usize = 4096;

/// The notice that `event`, consumed by `stage` from `queue`, is being dead-lettered
/// with `reason` after `deliveries` deliveries. It keeps the event's subject, tenant,
/// session and trace; its id derives from the event's and the queue's, so a repeated
/// notice (the dead-lettering retried) is deduplicated. Publish it before the
/// dead-lettering itself: if that is then lost, the event is delivered again and the
/// notice repeated, never missing.
pub fn dead_letter_notice(
    event: &crate::Event,
    queue: &str,
    stage: &str,
    reason: &str,
    detail: &str,
    deliveries: u32,
) -> crate::Event {
    let mut end = detail.len().min(MAX_NOTICE_DETAIL);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let data = DeadLettered {
        event_id: event.id.clone(),
        event_type: event.ty.clone(),
        queue: queue.to_owned(),
        stage: stage.to_owned(),
        reason: reason.to_owned(),
        detail: detail[..end].to_owned(),
        deliveries,
    };
    // Strings and a number: serializing cannot fail.
    let data = serde_json::to_value(&data).unwrap_or_default();
    let mut notice = crate::Event::new(format!("/troupe/{stage}"), DEAD_LETTERED_TYPE, &data);
    notice.id = troupe_events::id::dead_lettered(&event.id, queue);
    notice.subject = event.subject.clone();
    notice.tenant = event.tenant.clone();
    notice.session = event.session.clone();
    notice.traceparent = event.traceparent.clone();
    notice
}

/// How a subscription's queue delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// How long a received message stays invisible to other receivers.
    pub visibility_timeout: Duration,
    /// Deliveries before the message is dead-lettered.
    pub max_deliveries: u32,
    /// First retry's backoff cap; doubles per delivery.
    pub backoff_base: Duration,
    /// Largest backoff cap.
    pub backoff_max: Duration,
    /// A message id seen within this window is not enqueued again.
    pub dedupe_window: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            dedupe_window: Duration::from_secs(300),
        }
    }
}

impl DeliveryPolicy {
    /// The upper bound of the backoff before delivery number `deliveries + 1`:
    /// `min(backoff_max, backoff_base * 2^(deliveries - 1))`.
    pub fn backoff_cap(&self, deliveries: u32) -> Duration {
        let exp = deliveries.saturating_sub(1).min(30);
        self.backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max)
    }

    /// Backoff with full jitter: uniform in `[0, backoff_cap(deliveries)]`.
    pub fn backoff(&self, deliveries: u32, rng: &mut impl Rng) -> Duration {
        let cap = u64::try_from(self.backoff_cap(deliveries).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=cap))
    }
}

/// A topic subscription: messages published to any of its `topics` (whose subject
/// starts with `subject_prefix`, when set) are copied into the queue named `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Queue name, unique in the app.
    pub name: String,
    /// The topics it listens to: one queue (one lease, one dead-letter queue, one
    /// receive loop) for every event a component handles alike, in publish order.
    pub topics: Vec<String>,
    /// Only messages whose subject starts with this.
    pub subject_prefix: Option<String>,
    /// Delivery settings.
    pub policy: DeliveryPolicy,
}

impl Subscription {
    /// Whether messages published to `topic` are copied to it (its subject filter
    /// aside).
    pub fn takes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }

    /// Refuses a subscription a backend cannot declare: an empty name, no topics, or an
    /// empty or repeated topic. The message names the subscription and the topic.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(crate::Error::invalid("subscription", why));
        if self.name.is_empty() {
            return bad("a subscription needs a name".into());
        }
        if self.topics.is_empty() {
            return bad(format!(
                "`{}` takes no topic: give it one or more",
                self.name
            ));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.trim().is_empty() {
                return bad(format!("`{}`: topic {i} is empty", self.name));
            }
            if self.topics[..i].contains(t) {
                return bad(format!("`{}`: topic `{t}` is listed twice", self.name));
            }
        }
        if self.policy.max_deliveries == 0 {
            return bad(format!(
                "`{}`: max_deliveries must be at least 1",
                self.name
            ));
        }
        Ok(())
    }
}

/// What retiring a subscription did ([`Queue::retire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// Messages moved to the successor, dead letters included.
    pub moved: u64,
    /// Messages that could not move yet (on SQS: leased or delayed ones); they stay
    /// in the retired queue until it is retired again.
    pub left: u64,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Dedupe key (the event id).
    pub id: String,
    /// Subscription filters match on it (the event subject).
    pub subject: Option<String>,
    /// Opaque body (a CloudEvent's JSON).
    pub body: Vec<u8>,
    /// Not deliverable before this delay has passed.
    pub delay: Duration,
    /// The event's W3C trace context, for queues that carry it beside the body (an
    /// SQS message attribute).
    pub traceparent: Option<String>,
}

impl Message {
    /// A message carrying a CloudEvent.
    ///
    /// The message id, which queues dedupe on, is the event id within its tenant
    /// (`<tenant>/<event id>`): event ids are deterministic (a handler that runs twice
    /// publishes the same event twice), so one tenant must not be able to publish
    /// another's next event id first and have the real one dropped as a repeat.
    pub fn from_event(event: &crate::Event) -> Self {
        Self {
            id: match &event.tenant {
                Some(tenant) => format!("{tenant}/{}", event.id),
                None => event.id.clone(),
            },
            subject: event.subject.clone(),
            body: event.to_json(),
            delay: Duration::ZERO,
            traceparent: event.traceparent.clone(),
        }
    }
}

/// Proof of a lease, needed to settle a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Backend-specific handle (row and lease token; an SQS receipt handle).
    pub handle: String,
    /// The message id, for errors and logs.
    pub message_id: String,
}

/// A leased message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Settle with this.
    pub receipt: Receipt,
    /// The message id.
    pub id: String,
    /// The body as sent.
    pub body: Vec<u8>,
    /// 1 on first delivery.
    pub deliveries: u32,
    /// Milliseconds since the epoch when it was enqueued.
    pub enqueued_at_ms: u64,
}

/// What a retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Redelivered after this delay.
    Scheduled(Duration),
    /// Deliveries used up: dead-lettered.
    DeadLettered,
}

/// Messages in a queue, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Deliverable now.
    pub ready: u64,
    /// Leased or delayed.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// How long the oldest message ready or in flight has been in the queue
    /// (milliseconds since it was first enqueued; a retry keeps its age): 0 when the
    /// queue is empty. `None` where the backend cannot say: SQS answers this only as
    /// the CloudWatch metric `ApproximateAgeOfOldestMessage`, not through its API.
    pub oldest_age_ms: Option<u64>,
}

/// A dead-lettered message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The message id.
    pub id: String,
    /// Reason code (`max_deliveries` or a handler's rejection code).
    pub reason: String,
    /// Last error or rejection detail.
    pub last_error: Option<String>,
    /// Deliveries made.
    pub deliveries: u32,
    /// When it was dead-lettered (ms since the epoch).
    pub dead_at_ms: u64,
    /// The body, lossily as UTF-8 for display.
    pub body: String,
}

/// Durable queues with topics.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Creates or updates a subscription (and its queue).
    async fn subscribe(&self, subscription: &Subscription) -> Result<()>;
    /// Every subscription, by name, its topics sorted.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Copies each message into every matching subscription's queue, atomically;
    /// returns how many copies were enqueued (duplicates inside a dedupe window and
    /// non-matching subscriptions do not count).
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<usize>;
    /// Enqueues directly into one queue; returns how many were new.
    async fn send(&self, queue: &str, messages: &[Message]) -> Result<usize>;
    /// Leases up to `max` deliverable messages, waiting up to `wait` for the first.
    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>>;
    /// Settles deliveries as done; returns how many were still leased by these
    /// receipts (a receipt whose lease expired or was settled settles nothing).
    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<usize>;
    /// Redelivers later: after `delay`, or the policy's backoff when `None`; dead-letters
    /// when deliveries are used up.
    async fn retry(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<RetryOutcome>;
    /// Redelivers after `delay` without counting this delivery: the handler was
    /// waiting for something outside it (an open circuit, a claim held elsewhere), not
    /// failing, so a long wait never uses up the message's deliveries. The next
    /// delivery carries the same count as this one. A lost lease is
    /// [`Error::LeaseLost`](crate::Error::LeaseLost).
    async fn defer(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()>;
    /// Dead-letters at once with a reason code.
    async fn reject(
        &self,
        queue: &str,
        receipt: &Receipt,
        reason: &str,
        detail: &str,
    ) -> Result<()>;
    /// Counts by state.
    async fn depth(&self, queue: &str) -> Result<Depth>;
    /// Whether the backend answers.
    async fn health(&self) -> Result<()>;
    /// Retires subscription `from`, which subscription `into` (declared already)
    /// replaces: `from` receives nothing more from then on, and every message it holds
    /// moves to `into` with its id, body and the deliveries made so far — messages to
    /// `into`'s queue, dead letters to `into`'s dead letters. Nothing is dropped: what
    /// cannot move yet is counted in [`Retired::left`] and moves when `from` is retired
    /// again. A `from` that does not exist (or no longer does) retires to nothing.
    async fn retire(&self, from: &str, into: &str) -> Result<Retired>;
}

/// Keeping a lease while long work runs (SQS's ChangeMessageVisibility): a consumer
/// that may outlast the visibility timeout extends it, so the message is not handed
/// to another consumer meanwhile.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Makes the message of `receipt` invisible for `visibility` from now. False when
    /// the lease is no longer held (it expired and the message was leased again, or it
    /// was settled).
    async fn extend(&self, queue: &str, receipt: &Receipt, visibility: Duration) -> Result<bool>;
}

/// Inspecting and redriving dead letters.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Moves every dead letter of `queue` back to it with fresh deliveries; returns how
    /// many moved.
    async fn redrive(&self, queue: &str) -> Result<usize>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_subscription_takes_its_topics_and_is_checked() {
        let s = |topics: &[&str]| Subscription {
            name: "status".into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            subject_prefix: None,
            policy: DeliveryPolicy::default(),
        };
        let ok = s(&["a", "b"]);
        ok.check().unwrap();
        assert!(ok.takes("a") && ok.takes("b") && !ok.takes("c"));
        for (bad, says) in [
            (s(&[]), "takes no topic"),
            (s(&["a", ""]), "topic 1 is empty"),
            (s(&["a", "b", "a"]), "`a` is listed twice"),
        ] {
            let err = bad.check().unwrap_err().to_string();
            assert!(err.contains("`status`") && err.contains(says), "{err}");
        }
        let unnamed = Subscription {
            name: String::new(),
            ..s(&["a"])
        };
        assert!(unnamed.check().is_err());
    }

    #[test]
    fn backoff_cap_doubles_then_saturates() {
        let p = DeliveryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..DeliveryPolicy::default()
        };
        let caps: Vec<u128> = (1..=6).map(|d| p.backoff_cap(d).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_stays_within_cap_and_spreads() {
        let p = DeliveryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            ..DeliveryPolicy::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for deliveries in 1..=5 {
            let cap = p.backoff_cap(deliveries);
            let samples: Vec<Duration> =
                (0..500).map(|_| p.backoff(deliveries, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap));
            let mean = samples.iter().sum::<Duration>() / 500;
            // Uniform on [0, cap]: the mean sits near cap / 2.
            assert!(
                mean > cap * 2 / 5 && mean < cap * 3 / 5,
                "{deliveries}: {mean:?} vs {cap:?}"
            );
            let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
            assert!(distinct.len() > 20, "jitter must spread delays");
        }
    }
}
