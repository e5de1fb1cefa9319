//! Sending to one subscription's queue: dedupe of ids already sent, batches within
//! SQS's limits.

use super::*;

impl SqsQueue {
    /// Sends `messages` to subscription `name` (dedupe window `window`); returns how
    /// many were new.
    ///
    /// An id is dropped only when a message with it was already *sent* inside the
    /// window; each one is recorded as sent after SQS accepted it (see `dedupe`), so a
    /// publish interrupted anywhere is repeated in full, never deduplicated to nothing.
    pub(super) async fn send_to(
        &self,
        name: &str,
        window: Duration,
        messages: &[Message],
    ) -> Result<usize> {
        let url = self.url(name).await?;
        // (message, whether it is the duplicate-delivery switch's extra copy)
        let mut fresh: Vec<(&Message, bool)> = Vec::with_capacity(messages.len());
        for m in messages {
            if self.already_sent(name, &m.id, window).await? {
                continue;
            }
            fresh.push((m, false));
            if self.duplicate {
                fresh.push((m, true));
            }
        }
        let mut sent = 0;
        let mut start = 0;
        while start < fresh.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < fresh.len() && end - start < BATCH {
                let m = fresh[end].0;
                let size = m.body.len() + m.id.len() + 64;
                if end > start && bytes + size > MAX_BATCH_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let batch = &fresh[start..end];
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, (m, _))| self.entry(i, m))
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("sqs", e))?;
            let failed: Vec<usize> = out
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .collect();
            for (i, (m, extra)) in batch.iter().enumerate() {
                if !extra && !failed.contains(&i) {
                    self.record_sent(name, &m.id, window).await;
                    sent += 1;
                }
            }
            if !failed.is_empty() {
                let why = out
                    .failed()
                    .iter()
                    .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::backend(
                    "sqs",
                    format!(
                        "{} of {} messages to `{name}` were not sent (publish again: the ones sent are deduplicated): {why}",
                        failed.len(),
                        end - start
                    ),
                ));
            }
            start = end;
        }
        Ok(sent)
    }

    pub(super) fn entry(&self, i: usize, m: &Message) -> Result<SendMessageBatchRequestEntry> {
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
        // The trace context also rides as an attribute, where SQS tooling and other
        // consumers look for it; Troupe's own consumers read it from the envelope.
        if let Some(tp) = &m.traceparent {
            e = e.message_attributes(ATTR_TRACEPARENT, attr(tp, false));
        }
        e.build().map_err(|e| Error::backend("sqs", e))
    }
}
