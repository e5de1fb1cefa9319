//! Subscriptions as SQS queues and their tags: the listing the publisher fans out by,
//! and each subscription's delivery policy.

use super::*;

impl SqsQueue {
    /// Every subscription, listed at most every few seconds.
    pub(super) async fn listing(&self) -> Result<Arc<Vec<Subscription>>> {
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

    pub(super) async fn forget_listing(&self) {
        self.listing.lock().await.at = None;
    }

    pub(super) async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
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
            let Some(topics) = topics::unpack(&tags) else {
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
                topics,
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

    pub(super) async fn policy(&self, name: &str) -> Result<DeliveryPolicy> {
        Ok(self
            .listing()
            .await?
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.policy.clone())
            .unwrap_or_default())
    }
}
