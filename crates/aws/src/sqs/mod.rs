//! Queues, topics and dead letters on SQS.
//!
//! - **Subscriptions are queues.** Subscription `name` is the queue `<prefix><name>`
//!   with dead letters in `<prefix><name>-dlq` (a redrive policy with `maxReceiveCount`
//!   = `max_deliveries`). The topics, subject filter and backoff settings are queue
//!   tags (`troupe:topic`, space-separated and continued in `troupe:topic-2` … when
//!   long; `troupe:subject-prefix`, `troupe:backoff-base-ms`, `troupe:backoff-max-ms`,
//!   `troupe:dedupe-window-ms`), so any process, and CloudFormation, can declare
//!   subscriptions.
//! - **Topics fan out in the publisher**: a publish sends a copy to every queue whose
//!   tags match, in batches of up to ten.
//! - **Dedupe** of message ids inside the window goes through a [`State`] (Postgres in
//!   the scale-out set): an id is recorded once SQS accepted its message, and a
//!   publish skips ids recorded inside the window. Nothing is recorded before the
//!   send, so a publish that fails or is cut short (a timeout, a crash) is repeated
//!   in full; a cut between the send and the record costs a duplicate, never a loss.
//! - **Leases are SQS visibility.** Retries with backoff set the visibility of the
//!   message to the delay (`ChangeMessageVisibility`), in whole seconds; a long job
//!   extends its lease the same way ([`Leases`]).
//! - **Deferrals are copies.** A deferred delivery (the handler waits, it did not
//!   fail) must not count, but SQS counts every receive: the message is sent again
//!   with the delay and its earlier deliveries in an attribute, and the original
//!   deleted (`defer`).
//! - **Dead letters.** A rejected message, or one whose last delivery is retried, is
//!   moved to the DLQ by the consumer with its reason code, detail and delivery count
//!   as message attributes; one whose leases keep expiring is moved by SQS's redrive
//!   policy (reason `max_deliveries`). Redrive moves messages back itself.
//! - **Retiring** a subscription removes its topic tags (publishers stop sending to
//!   it once their listing is renewed), tags it `troupe:retired-into`, and moves what
//!   its queue and DLQ hold to the successor's. The emptied queues are left in place:
//!   a publisher with an older listing may still send to them for a few seconds, and
//!   the next retire moves that too.
//! - **S3 notifications.** A queue subscribed to a bucket's object-created topic
//!   receives S3's own notification messages; they are decoded into Troupe's
//!   object-created events on receipt ([`crate::notifications`]), and a notification
//!   repeated for the same write is dropped there, inside the dedupe window (S3 sends
//!   past the publisher's dedupe).
//!
//! Differences from the embedded queue, all SQS's own: delays and visibility are whole
//! seconds (rounded up; delays at most 15 minutes at send); a receive returns at most
//! ten messages; an ack with a stale receipt may still delete the message (SQS accepts
//! any receipt handle the message had).
//!
//! # Layout
//!
//! - this module: [`SqsQueue`], the [`Queue`] and [`Leases`] operations;
//! - `names`: queue names, their URLs and ARNs (looked up once), creating queues;
//! - `listing`: subscriptions from queue tags, and their delivery policies;
//! - `send`: sending to one subscription's queue in batches within SQS's limits;
//! - `dedupe`: records of sent message ids (and received S3 notifications) inside
//!   the dedupe window;
//! - `deliver`: received messages (or a Lambda event's records) as deliveries, with S3
//!   notifications decoded;
//! - `dead`: moves to the DLQ, dead-letter listing and redrive;
//! - `defer`: deferring a delivery without counting it;
//! - `topics`: a subscription's topic list as queue tags;
//! - `retire`: retiring a subscription into the one that replaces it.

mod dead;
mod dedupe;
mod defer;
mod deliver;
mod listing;
mod names;
mod retire;
mod send;
mod topics;

pub use deliver::Raw;
pub use names::check_queue_name;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use rand::SeedableRng;
use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{
    DeadLetter, DeadLetters, Delivery, DeliveryPolicy, Depth, Error, Leases, Message, Queue,
    Receipt, Result, Retired, RetryOutcome, State, Subscription,
};

use crate::notifications::{self, Notification};
use crate::sdk_error;

const TAG_SUBJECT: &str = "troupe:subject-prefix";
const TAG_BACKOFF_BASE: &str = "troupe:backoff-base-ms";
const TAG_BACKOFF_MAX: &str = "troupe:backoff-max-ms";
const TAG_DEDUPE: &str = "troupe:dedupe-window-ms";
/// On a retired subscription's queue: the subscription its messages went to.
const TAG_RETIRED: &str = "troupe:retired-into";

const ATTR_ID: &str = "troupe-id";
const ATTR_SUBJECT: &str = "troupe-subject";
/// Message attribute: the event's W3C trace context.
const ATTR_TRACEPARENT: &str = "traceparent";
const ATTR_REASON: &str = "troupe-reason";
const ATTR_DETAIL: &str = "troupe-detail";
const ATTR_DELIVERIES: &str = "troupe-deliveries";
const ATTR_DEAD_AT: &str = "troupe-dead-at";
/// On an S3 notification redriven from the DLQ: the SQS message id it was first
/// received as, which owns its dedupe claim.
const ATTR_ORIGIN: &str = "troupe-origin";

/// The last error of a message dead-lettered because its leases kept expiring.
const LEASE_EXPIRED: &str = "visibility timeout expired before the message was settled";

/// SQS's largest batch.
const BATCH: usize = 10;
/// SQS's largest batch payload (and message).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// SQS's longest send delay.
const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// Dead letters are kept this long.
const DLQ_RETENTION_S: u32 = 14 * 24 * 3600;
/// How long a listing of subscriptions is reused before SQS is asked again.
const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(5);
/// Longest dead-letter detail kept (message attributes are small).
const MAX_DETAIL: usize = 4096;

/// What a receive handed out, kept until it is settled, for the moves to the DLQ
/// (which need the body) and the delivery count.
#[derive(Debug, Clone)]
struct Leased {
    id: String,
    subject: Option<String>,
    body: Vec<u8>,
    deliveries: u32,
    until: Instant,
}

/// Subscriptions as last listed.
#[derive(Debug, Default)]
struct Listing {
    at: Option<Instant>,
    subscriptions: Arc<Vec<Subscription>>,
}

/// [`Queue`], [`Leases`] and [`DeadLetters`] on SQS.
#[derive(Clone)]
pub struct SqsQueue {
    sqs: aws_sdk_sqs::Client,
    prefix: String,
    dedupe: Option<Arc<dyn State>>,
    duplicate: bool,
    urls: Arc<Mutex<HashMap<String, String>>>,
    listing: Arc<tokio::sync::Mutex<Listing>>,
    leased: Arc<Mutex<HashMap<String, Leased>>>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn attr(value: impl Into<String>, number: bool) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(if number { "Number" } else { "String" })
        .string_value(value)
        .build()
        .expect("data type is set")
}

fn ceil_secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

fn lease_lost(queue: &str, receipt: &Receipt) -> Error {
    Error::LeaseLost {
        queue: queue.to_owned(),
        message: receipt.message_id.clone(),
    }
}

fn is_missing_queue(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" | "NonExistentQueue")
    )
}

fn is_bad_receipt(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ReceiptHandleIsInvalid"
                | "InvalidParameterValue"
                | "MessageNotInflight"
                | "AWS.SimpleQueueService.MessageNotInflight"
        )
    )
}

impl SqsQueue {
    /// Queues named `<prefix><subscription>`. Without `dedupe`, repeated ids are not
    /// dropped (handlers are idempotent anyway; the window only saves work).
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        prefix: impl Into<String>,
        dedupe: Option<Arc<dyn State>>,
    ) -> Self {
        Self {
            sqs,
            prefix: prefix.into(),
            dedupe,
            duplicate: false,
            urls: Arc::default(),
            listing: Arc::default(),
            leased: Arc::default(),
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::from_os_rng())),
        }
    }

    /// Sends every message twice (a test switch: handlers must be idempotent).
    #[must_use]
    pub fn with_duplicate_deliveries(mut self, on: bool) -> Self {
        self.duplicate = on;
        self
    }

    /// The queue prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Makes a leased message invisible for `d` from now (whole seconds, at most 12
    /// hours); false when the receipt no longer holds it.
    async fn set_visibility(&self, queue: &str, receipt: &Receipt, d: Duration) -> Result<bool> {
        let url = self.url(queue).await?;
        match self
            .sqs
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(&receipt.handle)
            .visibility_timeout(ceil_secs(d.min(MAX_VISIBILITY)))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_bad_receipt(e.code()) => Ok(false),
            Err(e) => Err(sdk_error("sqs", e)),
        }
    }

    fn take(&self, receipt: &Receipt) -> Option<Leased> {
        self.leased.lock().expect("leased").remove(&receipt.handle)
    }

    fn peek(&self, receipt: &Receipt) -> Option<Leased> {
        let mut leased = self.leased.lock().expect("leased");
        let now = Instant::now();
        // Leases long past their visibility are someone else's by now.
        leased.retain(|_, l| l.until + MAX_VISIBILITY > now);
        leased.get(&receipt.handle).cloned()
    }

    async fn delete(&self, url: &str, handle: &str) -> Result<bool> {
        match self
            .sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_bad_receipt(e.code()) => Ok(false),
            Err(e) => Err(sdk_error("sqs", e)),
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn subscribe(&self, s: &Subscription) -> Result<()> {
        s.check()?;
        check_queue_name("subscription", &self.queue_name(&s.name), false)?;
        let topic_tags = topics::pack(&s.name, &s.topics)?;
        let dlq = self.create(&self.dlq_name(&s.name)).await?;
        self.sqs
            .set_queue_attributes()
            .queue_url(&dlq)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                DLQ_RETENTION_S.to_string(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        let dlq_arn = self.arn_of(&dlq).await?;
        let url = self.create(&self.queue_name(&s.name)).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": s.policy.max_deliveries,
        });
        self.sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                ceil_secs(s.policy.visibility_timeout.min(MAX_VISIBILITY)).to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        let ms = |d: Duration| d.as_millis().to_string();
        let mut tag = self
            .sqs
            .tag_queue()
            .queue_url(&url)
            .tags(TAG_BACKOFF_BASE, ms(s.policy.backoff_base))
            .tags(TAG_BACKOFF_MAX, ms(s.policy.backoff_max))
            .tags(TAG_DEDUPE, ms(s.policy.dedupe_window));
        for (i, value) in topic_tags.iter().enumerate() {
            tag = tag.tags(topics::tag_key(i), value);
        }
        if let Some(p) = &s.subject_prefix {
            tag = tag.tags(TAG_SUBJECT, p);
        }
        tag.send().await.map_err(|e| sdk_error("sqs", e))?;
        // What the new declaration does not set: the rest of a longer topic list
        // declared before (a dropped topic must reach it no more), a subject filter
        // dropped, the mark of an earlier retirement.
        let mut untag = self.sqs.untag_queue().queue_url(&url).tag_keys(TAG_RETIRED);
        for i in topic_tags.len()..topics::MAX_TOPIC_TAGS {
            untag = untag.tag_keys(topics::tag_key(i));
        }
        if s.subject_prefix.is_none() {
            untag = untag.tag_keys(TAG_SUBJECT);
        }
        untag.send().await.map_err(|e| sdk_error("sqs", e))?;
        self.forget_listing().await;
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.forget_listing().await;
        Ok(self.listing().await?.as_ref().clone())
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.SendMessageBatch", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "SendMessageBatch", messaging.destination.name = %topic))]

    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<usize> {
        let subs = self.listing().await?;
        let mut sent = 0;
        for s in subs.iter().filter(|s| s.takes(topic)) {
            let matching: Vec<Message> = messages
                .iter()
                .filter(|m| match &s.subject_prefix {
                    Some(p) => m.subject.as_deref().is_some_and(|subj| subj.starts_with(p)),
                    None => true,
                })
                .cloned()
                .collect();
            if !matching.is_empty() {
                sent += self
                    .send_to(&s.name, s.policy.dedupe_window, &matching)
                    .await?;
            }
        }
        Ok(sent)
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.SendMessageBatch", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "SendMessageBatch", messaging.destination.name = %queue))]

    async fn send(&self, queue: &str, messages: &[Message]) -> Result<usize> {
        let window = self.policy(queue).await?.dedupe_window;
        self.send_to(queue, window, messages).await
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let url = self.url(queue).await?;
        let policy = self.policy(queue).await?;
        let out = match self
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(i32::try_from(max.clamp(1, BATCH)).unwrap_or(1))
            .wait_time_seconds(ceil_secs(wait).min(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_missing_queue(e.code()) => {
                self.urls
                    .lock()
                    .expect("urls")
                    .remove(&self.queue_name(queue));
                return Err(Error::NoSuchQueue(queue.to_owned()));
            }
            Err(e) => return Err(sdk_error("sqs", e)),
        };
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let (Some(handle), Some(body)) = (m.receipt_handle(), m.body()) else {
                continue;
            };
            let system = |a: MessageSystemAttributeName| {
                m.attributes()
                    .and_then(|s| s.get(&a))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let raw = Raw {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                handle: handle.to_owned(),
                body: body.to_owned(),
                attributes: m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
                receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
                sent_ms: system(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
            };
            if let Some(d) = self
                .deliver(queue, &url, policy.visibility_timeout, raw)
                .await?
            {
                deliveries.push(d);
            }
        }
        Ok(deliveries)
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.DeleteMessageBatch", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "DeleteMessageBatch", messaging.destination.name = %queue))]

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<usize> {
        let url = self.url(queue).await?;
        let mut done = 0;
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.handle)
                        .build()
                        .map_err(|e| Error::backend("sqs", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            done += out.successful().len();
            for r in chunk {
                self.take(r);
            }
        }
        Ok(done)
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.ChangeMessageVisibility", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "ChangeMessageVisibility", messaging.destination.name = %queue))]

    async fn retry(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<RetryOutcome> {
        let policy = self.policy(queue).await?;
        let deliveries = self.peek(receipt).map_or(1, |l| l.deliveries);
        if deliveries >= policy.max_deliveries {
            self.dead_letter(queue, receipt, REASON_MAX_DELIVERIES, error)
                .await?;
            return Ok(RetryOutcome::DeadLettered);
        }
        let delay = delay.unwrap_or_else(|| {
            let mut rng = self.rng.lock().expect("rng");
            policy.backoff(deliveries, &mut *rng)
        });
        if !self.set_visibility(queue, receipt, delay).await? {
            return Err(lease_lost(queue, receipt));
        }
        self.take(receipt);
        Ok(RetryOutcome::Scheduled(delay))
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.SendMessage", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "SendMessage", messaging.destination.name = %queue))]

    async fn defer(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.defer_delivery(queue, receipt, delay).await
    }

    #[tracing::instrument(skip_all, name = "aws.sqs", fields(otel.name = "SQS.SendMessage", otel.kind = "client", rpc.system = "aws-api", rpc.service = "SQS", rpc.method = "SendMessage", messaging.destination.name = %queue))]

    async fn reject(
        &self,
        queue: &str,
        receipt: &Receipt,
        reason: &str,
        detail: &str,
    ) -> Result<()> {
        self.dead_letter(queue, receipt, reason, detail).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        let count = |url: String| async move {
            let out = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            let a = out.attributes().cloned().unwrap_or_default();
            let n =
                |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            Ok::<_, Error>((
                n(QueueAttributeName::ApproximateNumberOfMessages),
                n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    + n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            ))
        };
        let (ready, in_flight) = count(self.url(queue).await?).await?;
        let (dead_ready, dead_held) = count(self.dlq_url(queue).await?).await?;
        Ok(Depth {
            ready,
            in_flight,
            dead: dead_ready + dead_held,
            // GetQueueAttributes has no age; CloudWatch's ApproximateAgeOfOldestMessage
            // (what infra/aws's alarms and infra/k8s's scaler read) has.
            oldest_age_ms: None,
        })
    }

    async fn health(&self) -> Result<()> {
        self.sqs
            .list_queues()
            .queue_name_prefix(&self.prefix)
            .max_results(1)
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        Ok(())
    }

    async fn retire(&self, from: &str, into: &str) -> Result<Retired> {
        self.retire_into(from, into).await
    }
}

#[async_trait]
impl Leases for SqsQueue {
    async fn extend(&self, queue: &str, receipt: &Receipt, visibility: Duration) -> Result<bool> {
        if !self.set_visibility(queue, receipt, visibility).await? {
            return Ok(false);
        }
        if let Some(l) = self.leased.lock().expect("leased").get_mut(&receipt.handle) {
            l.until = Instant::now() + visibility;
        }
        Ok(true)
    }
}
