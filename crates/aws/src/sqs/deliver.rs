//! Messages received (or handed over by a Lambda SQS event) becoming [`Delivery`]s,
//! with S3 notifications decoded on the way.

use super::*;

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

impl SqsQueue {
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

    pub(super) async fn deliver(
        &self,
        name: &str,
        url: &str,
        visibility: Duration,
        m: Raw,
    ) -> Result<Option<Delivery>> {
        let (id, body) = match m.attributes.get(ATTR_ID) {
            Some(id) => (id.clone(), m.body.into_bytes()),
            None => match self
                .decode_s3(
                    name,
                    url,
                    m.body.as_bytes(),
                    &m.handle,
                    m.attributes.get(ATTR_ORIGIN).unwrap_or(&m.message_id),
                )
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
        // A deferred message's copy carries the deliveries made before it.
        let prior: u32 = m
            .attributes
            .get(super::defer::ATTR_PRIOR)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let deliveries = m.receive_count.saturating_add(prior);
        self.leased.lock().expect("leased").insert(
            m.handle.clone(),
            Leased {
                id: id.clone(),
                subject: m.attributes.get(ATTR_SUBJECT).cloned(),
                body: body.clone(),
                deliveries,
                until: Instant::now() + visibility,
            },
        );
        let receipt = Receipt {
            handle: m.handle,
            message_id: id.clone(),
        };
        // The redrive policy counts only the copy's receives: a copy whose leases keep
        // expiring is dead-lettered here once its total is past `max_deliveries`.
        if prior > 0 && deliveries > self.policy(name).await?.max_deliveries {
            self.dead_letter(name, &receipt, REASON_MAX_DELIVERIES, LEASE_EXPIRED)
                .await?;
            return Ok(None);
        }
        Ok(Some(Delivery {
            receipt,
            id,
            body,
            deliveries,
            enqueued_at_ms: m.sent_ms,
        }))
    }

    /// Turns S3 notification messages into object-created deliveries: test events are
    /// deleted, one-record messages decoded in place, several records re-sent one event
    /// per message. `message_id` is the SQS message the notification first arrived
    /// as (kept across a redrive), which owns its dedupe claim.
    pub(super) async fn decode_s3(
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
            .and_then(|s| {
                s.topics
                    .iter()
                    .find_map(|t| t.strip_prefix("troupe.blob.created/"))
            })
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
                if !self
                    .claim_notification(name, &event.id, window, message_id)
                    .await?
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
