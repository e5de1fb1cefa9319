//! Sending to one subscription's queue: dedupe claims, batches within SQS's limits.

use super::*;

impl SqsQueue {
    /// Sends `messages` to subscription `name` (dedupe window `window`); returns how
    /// many were new.
    pub(super) async fn send_to(
        &self,
        name: &str,
        window: Duration,
        messages: &[Message],
    ) -> Result<usize> {
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
        e.build().map_err(|e| Error::backend("sqs", e))
    }
}
