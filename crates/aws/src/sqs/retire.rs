//! Retiring a subscription into the one that replaces it: its topic tags go (no
//! publisher sends to it once its listing is renewed), and what its queue and DLQ
//! hold is sent to the successor's and deleted here, message by message. A message is
//! deleted only once its copy was accepted, so an interruption costs a duplicate,
//! never a message; what is leased or delayed cannot be received yet and is counted
//! as left, for the next retire. Dedupe records stay with the retired queue: an id
//! published again inside its window may reach the successor once more (handlers are
//! idempotent).

use super::*;

/// Receives that come back empty before the queue's own count is believed.
const EMPTY_RECEIVES: usize = 3;
/// How long a message being moved stays invisible in the retired queue.
const MOVE_HOLD: Duration = Duration::from_secs(30);

impl SqsQueue {
    /// [`Queue::retire`] on SQS.
    pub(super) async fn retire_into(&self, from: &str, into: &str) -> Result<Retired> {
        if from == into {
            return Err(Error::invalid(
                "subscription",
                format!("`{from}` cannot replace itself"),
            ));
        }
        check_queue_name("subscription", &self.queue_name(from), false)?;
        let into_url = self.url(into).await?;
        let into_dlq = self.dlq_url(into).await?;
        let from_url = match self.url(from).await {
            Ok(url) => url,
            Err(Error::NoSuchQueue(_)) => return Ok(Retired::default()),
            Err(e) => return Err(e),
        };
        let tags = self
            .sqs
            .list_queue_tags()
            .queue_url(&from_url)
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        let topic_keys: Vec<String> = tags
            .tags()
            .map(|t| {
                t.keys()
                    .filter(|k| topics::is_topic_tag(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !topic_keys.is_empty() {
            self.sqs
                .untag_queue()
                .queue_url(&from_url)
                .set_tag_keys(Some(topic_keys))
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
        }
        self.sqs
            .tag_queue()
            .queue_url(&from_url)
            .tags(TAG_RETIRED, into)
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        self.forget_listing().await;
        let mut moved = self.move_messages(&from_url, &into_url, false).await?;
        let mut left = count_held(self, &from_url).await?;
        match self.dlq_url(from).await {
            Ok(from_dlq) => {
                moved += self.move_messages(&from_dlq, &into_dlq, true).await?;
                left += count_held(self, &from_dlq).await?;
            }
            Err(Error::NoSuchQueue(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(Retired { moved, left })
    }

    /// Sends every receivable message of queue `from` to queue `to` and deletes it
    /// from `from`; returns how many moved. A live message (`dead` false) carries the
    /// deliveries it had in `troupe-prior-deliveries` (the receive that moves it is
    /// not one); a dead letter keeps its attributes, and when it was dead-lettered.
    async fn move_messages(&self, from: &str, to: &str, dead: bool) -> Result<u64> {
        let mut moved = 0;
        let mut empty = 0;
        while empty < EMPTY_RECEIVES {
            let out = self
                .sqs
                .receive_message()
                .queue_url(from)
                .max_number_of_messages(i32::try_from(BATCH).unwrap_or(10))
                .visibility_timeout(ceil_secs(MOVE_HOLD))
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            if out.messages().is_empty() {
                // A short poll samples some of SQS's servers: believe the emptiness
                // once the queue's count agrees, or after a few tries.
                if visible(self, from).await? == 0 {
                    break;
                }
                empty += 1;
                continue;
            }
            for m in out.messages() {
                let (Some(handle), Some(body)) = (m.receipt_handle(), m.body()) else {
                    continue;
                };
                let system = |a: MessageSystemAttributeName| {
                    m.attributes()
                        .and_then(|s| s.get(&a))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let attributes = m.message_attributes().cloned().unwrap_or_default();
                let mut send = self.sqs.send_message().queue_url(to).message_body(body);
                for (k, v) in &attributes {
                    if k != defer::ATTR_PRIOR || dead {
                        send = send.message_attributes(k, v.clone());
                    }
                }
                if !attributes.contains_key(ATTR_ID) && !attributes.contains_key(ATTR_ORIGIN) {
                    // A raw S3 notification: the message it first arrived as owns its
                    // dedupe claim (as on a redrive).
                    if let Some(id) = m.message_id() {
                        send = send.message_attributes(ATTR_ORIGIN, attr(id, false));
                    }
                }
                if dead {
                    if !attributes.contains_key(ATTR_DEAD_AT)
                        && let Some(sent) = system(MessageSystemAttributeName::SentTimestamp)
                    {
                        send = send.message_attributes(ATTR_DEAD_AT, attr(sent.to_string(), true));
                    }
                } else {
                    let prior: u64 = attributes
                        .get(defer::ATTR_PRIOR)
                        .and_then(|v| v.string_value())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let received =
                        system(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1);
                    let before = prior + received.saturating_sub(1);
                    if before > 0 {
                        send = send
                            .message_attributes(defer::ATTR_PRIOR, attr(before.to_string(), true));
                    }
                }
                send.send().await.map_err(|e| sdk_error("sqs", e))?;
                if !self.delete(from, handle).await? {
                    tracing::warn!(queue = from, message = ?m.message_id(), "moved a message whose hold had run out: it may be moved twice");
                }
                moved += 1;
            }
        }
        Ok(moved)
    }
}

/// Messages of queue `url` by SQS's count: (visible, leased + delayed).
async fn counts(q: &SqsQueue, url: &str) -> Result<(u64, u64)> {
    let out = q
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
    let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            + n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    ))
}

async fn visible(q: &SqsQueue, url: &str) -> Result<u64> {
    Ok(counts(q, url).await?.0)
}

/// Everything still in queue `url`.
async fn count_held(q: &SqsQueue, url: &str) -> Result<u64> {
    let (visible, held) = counts(q, url).await?;
    Ok(visible + held)
}
