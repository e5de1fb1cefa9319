//! Dead letters: moving a message to its DLQ with the reason, listing, and redrive.

use super::*;

impl SqsQueue {
    /// Moves a leased message to the DLQ with a reason code.
    pub(super) async fn dead_letter(
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
}

/// A dead letter as received from a DLQ.
struct Held {
    handle: String,
    letter: DeadLetter,
    sent_ms: u64,
    subject: Option<String>,
    /// Absent on a raw S3 notification moved by the redrive policy.
    troupe_id: Option<String>,
    /// The SQS message id a raw S3 notification was first received as: redriven, it
    /// still owns its dedupe claim (a new message id would look like a repeat).
    origin: Option<String>,
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
                    origin: text(ATTR_ORIGIN).or_else(|| m.message_id().map(str::to_owned)),
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
                match (&h.troupe_id, &h.origin) {
                    (Some(id), _) => send = send.message_attributes(ATTR_ID, attr(id, false)),
                    (None, Some(origin)) => {
                        send = send.message_attributes(ATTR_ORIGIN, attr(origin, false));
                    }
                    (None, None) => {}
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
