//! Message-id dedupe inside a subscription's window, through records in a [`State`].
//!
//! A dedupe row is `queue-dedupe/<prefix><queue>/<id>`; its value starts with the
//! decimal time (ms since the epoch) its window ends, so expired rows can be purged
//! by a prefix scan. Two kinds share the key space:
//!
//! - `<until_ms>`: a message with this id was **sent**: SQS accepted it. The row is
//!   written only after the send, so an interrupted publish (a component or Lambda
//!   timeout, a crash) leaves no row, and its repeat is sent. An interruption after
//!   the send and before the row costs a duplicate, never a lost message.
//! - `<until_ms> <sqs-message-id>`: an S3 notification for this event was received
//!   as that SQS message, which owns the row: the same message delivered again (or
//!   redriven from the DLQ) is still let through; another notification of the same
//!   write is dropped.

use super::*;

impl SqsQueue {
    fn dedupe_key(&self, name: &str, id: &str) -> String {
        format!("queue-dedupe/{}{name}/{id}", self.prefix)
    }

    /// Whether a message `id` was already sent to (or received on) queue `name` inside
    /// its window.
    pub(super) async fn already_sent(
        &self,
        name: &str,
        id: &str,
        window: Duration,
    ) -> Result<bool> {
        let Some(state) = &self.dedupe else {
            return Ok(false);
        };
        if window.is_zero() {
            return Ok(false);
        }
        let Some(entry) = state.get(&self.dedupe_key(name, id)).await? else {
            return Ok(false);
        };
        Ok(until_of(&entry.value).0 > now_ms())
    }

    /// Records that SQS accepted message `id` for queue `name`: a repeat inside the
    /// window is dropped. A failure here is logged, not returned: the message is sent,
    /// and the worst a missing row causes is a duplicate.
    pub(super) async fn record_sent(&self, name: &str, id: &str, window: Duration) {
        let Some(state) = &self.dedupe else { return };
        if window.is_zero() {
            return;
        }
        let key = self.dedupe_key(name, id);
        let until = now_ms().saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        if let Err(e) = state.put(&key, until.to_string().as_bytes(), None).await {
            tracing::warn!(key, error = %e, "recording a sent message for dedupe failed; a repeat publish inside the window will be sent again");
        }
    }

    /// Claims S3 notification event `id` on queue `name` for SQS message `owner`;
    /// false when another message claimed it inside the window (a repeated
    /// notification). The owner's own claim is its own again on a redelivery.
    pub(super) async fn claim_notification(
        &self,
        name: &str,
        id: &str,
        window: Duration,
        owner: &str,
    ) -> Result<bool> {
        let Some(state) = &self.dedupe else {
            return Ok(true);
        };
        if window.is_zero() {
            return Ok(true);
        }
        let key = self.dedupe_key(name, id);
        let until = now_ms().saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let value = format!("{until} {owner}");
        match state.put(&key, value.as_bytes(), Some(0)).await {
            Ok(_) => return Ok(true),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some(entry) = state.get(&key).await? else {
            // Purged meanwhile: nobody holds it.
            return match state.put(&key, value.as_bytes(), Some(0)).await {
                Ok(_) => Ok(true),
                Err(Error::Conflict { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let (seen_until, seen_by) = until_of(&entry.value);
        if seen_by == owner {
            return Ok(true);
        }
        if seen_until > now_ms() {
            return Ok(false);
        }
        match state.put(&key, value.as_bytes(), Some(entry.version)).await {
            Ok(_) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A dedupe row's window end and owner (empty for a sent message); an unreadable
/// row counts as inside its window.
fn until_of(value: &[u8]) -> (u64, &str) {
    let stored = std::str::from_utf8(value).unwrap_or_default();
    let (until, owner) = stored.split_once(' ').unwrap_or((stored, ""));
    (until.parse().unwrap_or(u64::MAX), owner)
}
