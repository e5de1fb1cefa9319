//! Queues, topics and dead letters on SQS.
//!
//! - **Subscriptions are queues.** Subscription `name` is the queue `<prefix><name>`
//!   with dead letters in `<prefix><name>-dlq` (a redrive policy with `maxReceiveCount`
//!   = `max_deliveries`). The topic, subject filter and backoff settings are queue tags
//!   (`troupe:topic`, `troupe:subject-prefix`, `troupe:backoff-base-ms`,
//!   `troupe:backoff-max-ms`, `troupe:dedupe-window-ms`), so any process, and
//!   CloudFormation, can declare subscriptions.
//! - **Topics fan out in the publisher**: a publish sends a copy to every queue whose
//!   tags match, in batches of up to ten.
//! - **Dedupe** of message ids inside the window goes through a [`State`] (Postgres in
//!   the scale-out set): the id is claimed before sending and released if the send
//!   fails, so a failed publish can be repeated.
//! - **Leases are SQS visibility.** Retries with backoff set the visibility of the
//!   message to the delay (`ChangeMessageVisibility`), in whole seconds; a long job
//!   extends its lease the same way ([`Leases`]).
//! - **Dead letters.** A rejected message, or one whose last delivery is retried, is
//!   moved to the DLQ by the consumer with its reason code, detail and delivery count
//!   as message attributes; one whose leases keep expiring is moved by SQS's redrive
//!   policy (reason `max_deliveries`). Redrive moves messages back itself.
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
    Receipt, Result, RetryOutcome, State, Subscription,
};

use crate::notifications::{self, Notification};
use crate::sdk_error;

const TAG_TOPIC: &str = "troupe:topic";
const TAG_SUBJECT: &str = "troupe:subject-prefix";
const TAG_BACKOFF_BASE: &str = "troupe:backoff-base-ms";
const TAG_BACKOFF_MAX: &str = "troupe:backoff-max-ms";
const TAG_DEDUPE: &str = "troupe:dedupe-window-ms";

const ATTR_ID: &str = "troupe-id";
const ATTR_SUBJECT: &str = "troupe-subject";
const ATTR_REASON: &str = "troupe-reason";
const ATTR_DETAIL: &str = "troupe-detail";
const ATTR_DELIVERIES: &str = "troupe-deliveries";
const ATTR_DEAD_AT: &str = "troupe-dead-at";

/// Marks the second copy a duplicate-delivery switch sends (it has no claim).
const EXTRA_COPY: &str = "\u{0}extra-copy";

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

/// Checks an SQS queue name (or a prefix of one): letters, digits, `-`, `_`; the dead
/// letters' `-dlq` must still fit in 80 characters.
pub fn check_queue_name(what: &'static str, name: &str, prefix: bool) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !ok_chars || (!prefix && name.is_empty()) || name.len() > 76 {
        return Err(Error::invalid(
            what,
            format!(
                "`{name}`: SQS queue names are 1-80 of A-Z a-z 0-9 - _ (Troupe keeps 4 for `-dlq`)"
            ),
        ));
    }
    Ok(())
}

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

/// An SQS message as a receive or a Lambda SQS event hands it over.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    /// SQS's message id.
    pub message_id: String,
    /// The receipt handle.
    pub handle: String,
    /// The body.
    pub body: String,
    /// String message attributes, by name.
    pub attributes: HashMap<String, String>,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// `SentTimestamp`, ms since the epoch.
    pub sent_ms: u64,
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

    /// The SQS queue name of subscription `name`.
    pub fn queue_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn dlq_name(&self, name: &str) -> String {
        format!("{}{name}-dlq", self.prefix)
    }

    /// The URL of SQS queue `queue` (a full SQS name), looked up once.
    async fn url_of(&self, queue: &str, subscription: &str) -> Result<String> {
        if let Some(u) = self.urls.lock().expect("urls").get(queue) {
            return Ok(u.clone());
        }
        match self.sqs.get_queue_url().queue_name(queue).send().await {
            Ok(out) => {
                let url = out.queue_url().unwrap_or_default().to_owned();
                self.urls
                    .lock()
                    .expect("urls")
                    .insert(queue.to_owned(), url.clone());
                Ok(url)
            }
            Err(e) if is_missing_queue(e.code()) => {
                Err(Error::NoSuchQueue(subscription.to_owned()))
            }
            Err(e) => Err(sdk_error("sqs", e)),
        }
    }

    /// The URL of subscription `name`'s queue.
    pub async fn url(&self, name: &str) -> Result<String> {
        self.url_of(&self.queue_name(name), name).await
    }

    async fn dlq_url(&self, name: &str) -> Result<String> {
        self.url_of(&self.dlq_name(name), name).await
    }

    /// The ARN of subscription `name`'s queue.
    pub async fn arn(&self, name: &str) -> Result<String> {
        let url = self.url(name).await?;
        self.arn_of(&url).await
    }

    async fn arn_of(&self, url: &str) -> Result<String> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| Error::backend("sqs", format!("queue {url} has no QueueArn")))
    }

    async fn create(&self, queue: &str) -> Result<String> {
        let out = self
            .sqs
            .create_queue()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        let url = out.queue_url().unwrap_or_default().to_owned();
        self.urls
            .lock()
            .expect("urls")
            .insert(queue.to_owned(), url.clone());
        Ok(url)
    }

    /// Every subscription, listed at most every few seconds.
    async fn listing(&self) -> Result<Arc<Vec<Subscription>>> {
        let mut listing = self.listing.lock().await;
        if let Some(at) = listing.at
            && at.elapsed() < SUBSCRIPTIONS_TTL
        {
            return Ok(listing.subscriptions.clone());
        }
        let subs = Arc::new(self.list_subscriptions().await?);
        listing.at = Some(Instant::now());
        listing.subscriptions = subs.clone();
        Ok(subs)
    }

    async fn forget_listing(&self) {
        self.listing.lock().await.at = None;
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        let mut urls = Vec::new();
        let mut pages = self
            .sqs
            .list_queues()
            .queue_name_prefix(&self.prefix)
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("sqs", e))?;
            urls.extend(page.queue_urls().iter().cloned());
        }
        let mut subs = Vec::new();
        for url in urls {
            let Some(queue) = url.rsplit('/').next() else {
                continue;
            };
            let Some(name) = queue.strip_prefix(&self.prefix) else {
                continue;
            };
            if name.ends_with("-dlq") {
                continue;
            }
            let tags = match self.sqs.list_queue_tags().queue_url(&url).send().await {
                Ok(t) => t.tags().cloned().unwrap_or_default(),
                // Deleted between the listing and now.
                Err(e) if is_missing_queue(e.code()) => continue,
                Err(e) => return Err(sdk_error("sqs", e)),
            };
            let Some(topic) = tags.get(TAG_TOPIC) else {
                continue;
            };
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::VisibilityTimeout)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            let attrs = attrs.attributes().cloned().unwrap_or_default();
            let def = DeliveryPolicy::default();
            let ms = |tag: &str, d: Duration| {
                tags.get(tag)
                    .and_then(|v| v.parse().ok())
                    .map_or(d, Duration::from_millis)
            };
            let max_deliveries = attrs
                .get(&QueueAttributeName::RedrivePolicy)
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                .and_then(|p| {
                    let v = &p["maxReceiveCount"];
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(def.max_deliveries);
            let visibility = attrs
                .get(&QueueAttributeName::VisibilityTimeout)
                .and_then(|v| v.parse().ok())
                .map_or(def.visibility_timeout, Duration::from_secs);
            subs.push(Subscription {
                name: name.to_owned(),
                topic: topic.clone(),
                subject_prefix: tags.get(TAG_SUBJECT).cloned().filter(|p| !p.is_empty()),
                policy: DeliveryPolicy {
                    visibility_timeout: visibility,
                    max_deliveries,
                    backoff_base: ms(TAG_BACKOFF_BASE, def.backoff_base),
                    backoff_max: ms(TAG_BACKOFF_MAX, def.backoff_max),
                    dedupe_window: ms(TAG_DEDUPE, def.dedupe_window),
                },
            });
        }
        subs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(subs)
    }

    async fn policy(&self, name: &str) -> Result<DeliveryPolicy> {
        Ok(self
            .listing()
            .await?
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.policy.clone())
            .unwrap_or_default())
    }

    /// Claims `id` for queue `name` for `window`; `None` when it was seen inside it.
    /// A claim made for `owner` (an SQS message id) is its own again when that same
    /// message is delivered again.
    async fn claim(
        &self,
        name: &str,
        id: &str,
        window: Duration,
        owner: Option<&str>,
    ) -> Result<Option<(String, u64)>> {
        let Some(state) = &self.dedupe else {
            return Ok(Some((String::new(), 0)));
        };
        if window.is_zero() {
            return Ok(Some((String::new(), 0)));
        }
        let key = format!("queue-dedupe/{}{name}/{id}", self.prefix);
        let until = now_ms() + u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let until = match owner {
            Some(o) => format!("{until} {o}"),
            None => until.to_string(),
        };
        match state.put(&key, until.as_bytes(), Some(0)).await {
            Ok(v) => return Ok(Some((key, v))),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some(entry) = state.get(&key).await? else {
            return Ok(None);
        };
        let stored = std::str::from_utf8(&entry.value).unwrap_or_default();
        let (seen_until, seen_by) = stored.split_once(' ').unwrap_or((stored, ""));
        if owner.is_some_and(|o| o == seen_by) {
            return Ok(Some((key, entry.version)));
        }
        if seen_until.parse::<u64>().unwrap_or(u64::MAX) > now_ms() {
            return Ok(None);
        }
        match state.put(&key, until.as_bytes(), Some(entry.version)).await {
            Ok(v) => Ok(Some((key, v))),
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, claims: &[(String, u64)]) {
        let Some(state) = &self.dedupe else { return };
        for (key, version) in claims {
            if !key.is_empty()
                && key != EXTRA_COPY
                && let Err(e) = state.delete(key, Some(*version)).await
            {
                tracing::warn!(key, error = %e, "releasing a dedupe claim failed; a repeat publish inside the window will be dropped");
            }
        }
    }

    /// Sends `messages` to subscription `name` (dedupe window `window`); returns how
    /// many were new.
    async fn send_to(&self, name: &str, window: Duration, messages: &[Message]) -> Result<usize> {
        let url = self.url(name).await?;
        let mut fresh = Vec::with_capacity(messages.len());
        let mut claims = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(claim) = self.claim(name, &m.id, window, None).await? {
                fresh.push(m);
                claims.push(claim);
                if self.duplicate {
                    fresh.push(m);
                    claims.push((EXTRA_COPY.to_owned(), 0));
                }
            }
        }
        let mut sent = 0;
        let mut start = 0;
        while start < fresh.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < fresh.len() && end - start < BATCH {
                let size = fresh[end].body.len() + fresh[end].id.len() + 64;
                if end > start && bytes + size > MAX_BATCH_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let entries = fresh[start..end]
                .iter()
                .enumerate()
                .map(|(i, m)| self.entry(i, m))
                .collect::<Result<Vec<_>>>()?;
            let outcome = self
                .sqs
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await;
            match outcome {
                Ok(out) => {
                    let failed: Vec<usize> = out
                        .failed()
                        .iter()
                        .filter_map(|f| f.id().parse().ok())
                        .collect();
                    sent += fresh[start..end]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(i) && claims[start + i].0 != EXTRA_COPY)
                        .count();
                    if !failed.is_empty() {
                        let mut lost: Vec<_> = claims[start..end].to_vec();
                        lost = failed
                            .iter()
                            .filter_map(|i| lost.get(*i).cloned())
                            .collect();
                        self.release(&lost).await;
                        let why = out
                            .failed()
                            .iter()
                            .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join("; ");
                        self.release(&claims[end..]).await;
                        return Err(Error::backend(
                            "sqs",
                            format!(
                                "{} of {} messages to `{name}` were not sent: {why}",
                                failed.len(),
                                end - start
                            ),
                        ));
                    }
                }
                Err(e) => {
                    self.release(&claims[start..]).await;
                    return Err(sdk_error("sqs", e));
                }
            }
            start = end;
        }
        Ok(sent)
    }

    fn entry(&self, i: usize, m: &Message) -> Result<SendMessageBatchRequestEntry> {
        if m.body.len() > MAX_BATCH_BYTES {
            return Err(Error::invalid(
                "message",
                format!(
                    "message {} is {} bytes; SQS takes at most {MAX_BATCH_BYTES}: put the payload in a blob and send its key (claim check)",
                    m.id,
                    m.body.len()
                ),
            ));
        }
        let body = String::from_utf8(m.body.clone()).map_err(|_| {
            Error::invalid(
                "message",
                format!("message {} is not UTF-8; SQS bodies are text", m.id),
            )
        })?;
        let mut e = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(body)
            .message_attributes(ATTR_ID, attr(&m.id, false))
            .delay_seconds(ceil_secs(m.delay.min(MAX_DELAY)));
        if let Some(s) = &m.subject {
            e = e.message_attributes(ATTR_SUBJECT, attr(s, false));
        }
        e.build().map_err(|e| Error::backend("sqs", e))
    }

    /// Deliveries for messages that arrived another way (a Lambda SQS event),
    /// registered so they can be retried and dead-lettered like received ones; S3
    /// notifications among them are decoded as on receipt.
    pub async fn deliveries(&self, name: &str, messages: Vec<Raw>) -> Result<Vec<Delivery>> {
        let url = self.url(name).await?;
        let visibility = self.policy(name).await?.visibility_timeout;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(d) = self.deliver(name, &url, visibility, m).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    async fn deliver(
        &self,
        name: &str,
        url: &str,
        visibility: Duration,
        m: Raw,
    ) -> Result<Option<Delivery>> {
        let (id, body) = match m.attributes.get(ATTR_ID) {
            Some(id) => (id.clone(), m.body.into_bytes()),
            None => match self
                .decode_s3(name, url, m.body.as_bytes(), &m.handle, &m.message_id)
                .await?
            {
                Some(body) => {
                    let id = troupe_core::Event::from_json(&body)
                        .map(|e| e.id)
                        .unwrap_or_else(|_| m.message_id.clone());
                    (id, body)
                }
                None => return Ok(None),
            },
        };
        self.leased.lock().expect("leased").insert(
            m.handle.clone(),
            Leased {
                id: id.clone(),
                subject: m.attributes.get(ATTR_SUBJECT).cloned(),
                body: body.clone(),
                deliveries: m.receive_count,
                until: Instant::now() + visibility,
            },
        );
        Ok(Some(Delivery {
            receipt: Receipt {
                handle: m.handle,
                message_id: id.clone(),
            },
            id,
            body,
            deliveries: m.receive_count,
            enqueued_at_ms: m.sent_ms,
        }))
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

    /// Moves a leased message to the DLQ with a reason code.
    async fn dead_letter(
        &self,
        name: &str,
        receipt: &Receipt,
        reason: &str,
        detail: &str,
    ) -> Result<()> {
        let Some(leased) = self.peek(receipt) else {
            return Err(Error::invalid(
                "receipt",
                format!(
                    "message {} in `{name}` was not received through this queue client (or its lease is long gone): it cannot be dead-lettered here; its lease will expire and SQS's redrive policy will count it",
                    receipt.message_id
                ),
            ));
        };
        let url = self.url(name).await?;
        let dlq = self.dlq_url(name).await?;
        let detail: String = detail.chars().take(MAX_DETAIL).collect();
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&dlq)
            .message_body(String::from_utf8_lossy(&leased.body).into_owned())
            .message_attributes(ATTR_ID, attr(&leased.id, false))
            .message_attributes(ATTR_REASON, attr(reason, false))
            .message_attributes(ATTR_DELIVERIES, attr(leased.deliveries.to_string(), true))
            .message_attributes(ATTR_DEAD_AT, attr(now_ms().to_string(), true));
        if !detail.is_empty() {
            send = send.message_attributes(ATTR_DETAIL, attr(detail, false));
        }
        if let Some(s) = &leased.subject {
            send = send.message_attributes(ATTR_SUBJECT, attr(s, false));
        }
        send.send().await.map_err(|e| sdk_error("sqs", e))?;
        self.take(receipt);
        if !self.delete(&url, &receipt.handle).await? {
            tracing::warn!(queue = name, message = %receipt.message_id, "dead-lettered a message whose lease had expired: it may be delivered again");
        }
        Ok(())
    }

    /// Turns S3 notification messages into object-created deliveries: test events are
    /// deleted, one-record messages decoded in place, several records re-sent one event
    /// per message.
    async fn decode_s3(
        &self,
        name: &str,
        url: &str,
        body: &[u8],
        handle: &str,
        message_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let subs = self.listing().await?;
        let logical = subs
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.topic.strip_prefix("troupe.blob.created/"))
            .map(str::to_owned);
        let Some(logical) = logical else {
            return Ok(Some(body.to_vec()));
        };
        match notifications::decode(body, &logical) {
            Ok(Notification::Other) => Ok(Some(body.to_vec())),
            Ok(Notification::Test) => {
                self.delete(url, handle).await?;
                Ok(None)
            }
            Ok(Notification::Created(mut events)) if events.len() == 1 => {
                let Some(event) = events.pop() else {
                    return Ok(None);
                };
                // S3 sent this straight to the queue, past the publisher's dedupe: a
                // notification repeated for the same write (moto announces a multipart
                // upload twice) is dropped here, inside the subscription's window.
                let window = self.policy(name).await?.dedupe_window;
                if self
                    .claim(name, &event.id, window, Some(message_id))
                    .await?
                    .is_none()
                {
                    tracing::debug!(queue = name, event = %event.id, "dropped a repeated S3 notification");
                    self.delete(url, handle).await?;
                    return Ok(None);
                }
                Ok(Some(event.to_json()))
            }
            Ok(Notification::Created(events)) => {
                let messages: Vec<Message> = events.iter().map(Message::from_event).collect();
                self.send_to(name, Duration::ZERO, &messages).await?;
                self.delete(url, handle).await?;
                Ok(None)
            }
            // Left for the host, which dead-letters what it cannot parse.
            Err(e) => {
                tracing::warn!(queue = name, error = %e, "an S3 notification could not be decoded");
                Ok(Some(body.to_vec()))
            }
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn subscribe(&self, s: &Subscription) -> Result<()> {
        check_queue_name("subscription", &self.queue_name(&s.name), false)?;
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
            .tags(TAG_TOPIC, &s.topic)
            .tags(TAG_BACKOFF_BASE, ms(s.policy.backoff_base))
            .tags(TAG_BACKOFF_MAX, ms(s.policy.backoff_max))
            .tags(TAG_DEDUPE, ms(s.policy.dedupe_window));
        if let Some(p) = &s.subject_prefix {
            tag = tag.tags(TAG_SUBJECT, p);
        }
        tag.send().await.map_err(|e| sdk_error("sqs", e))?;
        if s.subject_prefix.is_none() {
            self.sqs
                .untag_queue()
                .queue_url(&url)
                .tag_keys(TAG_SUBJECT)
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
        }
        self.forget_listing().await;
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.forget_listing().await;
        Ok(self.listing().await?.as_ref().clone())
    }

    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<usize> {
        let subs = self.listing().await?;
        let mut sent = 0;
        for s in subs.iter().filter(|s| s.topic == topic) {
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

/// A dead letter as received from a DLQ.
struct Held {
    handle: String,
    letter: DeadLetter,
    sent_ms: u64,
    subject: Option<String>,
    /// Absent on a raw S3 notification moved by the redrive policy.
    troupe_id: Option<String>,
}

impl SqsQueue {
    /// Receives up to `limit` messages of subscription `name`'s DLQ, holding them for
    /// `hold`.
    async fn receive_dead(&self, name: &str, limit: usize, hold: Duration) -> Result<Vec<Held>> {
        let dlq = self.dlq_url(name).await?;
        let max_deliveries = self.policy(name).await?.max_deliveries;
        let mut held = Vec::new();
        while held.len() < limit {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(i32::try_from((limit - held.len()).min(BATCH)).unwrap_or(1))
                .visibility_timeout(ceil_secs(hold))
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let attrs = m.message_attributes();
                let text = |k: &str| {
                    attrs
                        .and_then(|a| a.get(k))
                        .and_then(|v| v.string_value())
                        .map(str::to_owned)
                };
                let sent_ms = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                held.push(Held {
                    handle: m.receipt_handle().unwrap_or_default().to_owned(),
                    subject: text(ATTR_SUBJECT),
                    troupe_id: text(ATTR_ID),
                    sent_ms,
                    letter: DeadLetter {
                        id: text(ATTR_ID)
                            .unwrap_or_else(|| m.message_id().unwrap_or_default().to_owned()),
                        // Moved by SQS's redrive policy: its leases kept expiring.
                        reason: text(ATTR_REASON).unwrap_or_else(|| REASON_MAX_DELIVERIES.into()),
                        last_error: text(ATTR_DETAIL),
                        deliveries: text(ATTR_DELIVERIES)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(max_deliveries),
                        dead_at_ms: text(ATTR_DEAD_AT)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(sent_ms),
                        body: m.body().unwrap_or_default().to_owned(),
                    },
                });
            }
        }
        Ok(held)
    }
}

#[async_trait]
impl DeadLetters for SqsQueue {
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let held = self
            .receive_dead(queue, limit, Duration::from_secs(5))
            .await?;
        // Visible again at once: listing does not consume them.
        let dlq = self.dlq_url(queue).await?;
        for h in &held {
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&dlq)
                .receipt_handle(&h.handle)
                .visibility_timeout(0)
                .send()
                .await;
        }
        let mut letters: Vec<(u64, DeadLetter)> =
            held.into_iter().map(|h| (h.sent_ms, h.letter)).collect();
        letters.sort_by_key(|(sent, l)| (l.dead_at_ms, *sent));
        Ok(letters.into_iter().map(|(_, l)| l).collect())
    }

    async fn redrive(&self, queue: &str) -> Result<usize> {
        let url = self.url(queue).await?;
        let dlq = self.dlq_url(queue).await?;
        let mut moved = 0;
        loop {
            let held = self
                .receive_dead(queue, BATCH, Duration::from_secs(30))
                .await?;
            if held.is_empty() {
                return Ok(moved);
            }
            for h in held {
                let mut send = self
                    .sqs
                    .send_message()
                    .queue_url(&url)
                    .message_body(h.letter.body);
                if let Some(id) = &h.troupe_id {
                    send = send.message_attributes(ATTR_ID, attr(id, false));
                }
                if let Some(s) = &h.subject {
                    send = send.message_attributes(ATTR_SUBJECT, attr(s, false));
                }
                send.send().await.map_err(|e| sdk_error("sqs", e))?;
                self.delete(&dlq, &h.handle).await?;
                moved += 1;
            }
        }
    }
}
