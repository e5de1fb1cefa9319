//! Queue names, their URLs and ARNs (looked up once and cached), and creating queues.

use super::*;

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

impl SqsQueue {
    /// The SQS queue name of subscription `name`.
    pub fn queue_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(super) fn dlq_name(&self, name: &str) -> String {
        format!("{}{name}-dlq", self.prefix)
    }

    /// The URL of SQS queue `queue` (a full SQS name), looked up once.
    pub(super) async fn url_of(&self, queue: &str, subscription: &str) -> Result<String> {
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

    pub(super) async fn dlq_url(&self, name: &str) -> Result<String> {
        self.url_of(&self.dlq_name(name), name).await
    }

    /// The ARN of subscription `name`'s queue.
    pub async fn arn(&self, name: &str) -> Result<String> {
        let url = self.url(name).await?;
        self.arn_of(&url).await
    }

    pub(super) async fn arn_of(&self, url: &str) -> Result<String> {
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

    pub(super) async fn create(&self, queue: &str) -> Result<String> {
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
}
