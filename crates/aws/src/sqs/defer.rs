//! Deferring a delivery without counting it.
//!
//! SQS counts every receive (`ApproximateReceiveCount`), and the redrive policy
//! dead-letters by that count, so a wait cannot be a visibility change. A deferred
//! message is instead sent again with the delay, carrying the deliveries made before
//! this one in the `troupe-prior-deliveries` attribute, and the original is deleted.
//! A delivery's count is then that attribute plus the copy's receive count, which the
//! consumer's retries and the check on receipt (`deliver`) hold to `max_deliveries`;
//! the redrive policy stays the backstop for leases that keep expiring.
//!
//! The copy goes straight to the queue, past the dedupe claim its id already holds.
//! SQS delays at most 15 minutes: a longer deferral comes back after 15 minutes and
//! the handler, still waiting, defers again (which costs nothing).

use super::*;

/// The deliveries a message had before it was last deferred.
pub(super) const ATTR_PRIOR: &str = "troupe-prior-deliveries";

impl SqsQueue {
    /// [`Queue::defer`] on SQS: re-send with the delay, then delete the original.
    pub(super) async fn defer_delivery(
        &self,
        name: &str,
        receipt: &Receipt,
        delay: Duration,
    ) -> Result<()> {
        let Some(leased) = self.peek(receipt) else {
            return Err(Error::invalid(
                "receipt",
                format!(
                    "message {} in `{name}` was not received through this queue client (or its lease is long gone): it cannot be deferred here; its lease will expire and it will be delivered again",
                    receipt.message_id
                ),
            ));
        };
        let url = self.url(name).await?;
        // Still ours? A copy of a message someone else now holds would be a duplicate.
        let visibility = self.policy(name).await?.visibility_timeout;
        if !self.set_visibility(name, receipt, visibility).await? {
            self.take(receipt);
            return Err(lease_lost(name, receipt));
        }
        let prior = leased.deliveries.saturating_sub(1);
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&url)
            .message_body(String::from_utf8_lossy(&leased.body).into_owned())
            .message_attributes(ATTR_ID, attr(&leased.id, false))
            .message_attributes(ATTR_PRIOR, attr(prior.to_string(), true))
            .delay_seconds(ceil_secs(delay.min(MAX_DELAY)));
        if let Some(s) = &leased.subject {
            send = send.message_attributes(ATTR_SUBJECT, attr(s, false));
        }
        send.send().await.map_err(|e| sdk_error("sqs", e))?;
        self.take(receipt);
        if !self.delete(&url, &receipt.handle).await? {
            tracing::warn!(queue = name, message = %receipt.message_id, "deferred a message whose lease had just expired: it may be delivered twice");
        }
        Ok(())
    }
}
