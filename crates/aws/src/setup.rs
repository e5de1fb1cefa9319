//! Idempotent creation of what the queues cannot create themselves: the bucket, and
//! its `ObjectCreated` notifications to the queues of `blob` triggers.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName,
    NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use troupe_core::{Result, Subscription};

use crate::{Clients, SqsQueue, sdk_error};

/// Creates `bucket` unless it exists (and is ours).
pub async fn ensure_bucket(clients: &Clients, bucket: &str) -> Result<()> {
    let mut create = clients.s3.create_bucket().bucket(bucket);
    let region = clients
        .s3
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_default();
    if !region.is_empty() && region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
        Err(e) => Err(sdk_error("s3", e)),
    }
}

/// Points the bucket's `ObjectCreated` notifications at the queue of every
/// subscription to `troupe.blob.created/…` (filtered by its key prefix), and lets S3
/// send to those queues. Replaces the bucket's notification configuration.
pub async fn configure_notifications(
    clients: &Clients,
    queue: &SqsQueue,
    bucket: &str,
    subscriptions: &[Subscription],
) -> Result<usize> {
    let mut configs = Vec::new();
    for s in subscriptions.iter().filter(|s| {
        s.topics
            .iter()
            .any(|t| t.starts_with("troupe.blob.created/"))
    }) {
        let arn = queue.arn(&s.name).await?;
        let url = queue.url(&s.name).await?;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "troupe-s3-notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}},
            }],
        });
        clients
            .sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("sqs", e))?;
        let mut config = QueueConfiguration::builder()
            .id(format!("troupe-{}", s.name))
            .queue_arn(arn)
            .events(Event::from("s3:ObjectCreated:*"));
        if let Some(prefix) = &s.subject_prefix {
            config = config.filter(
                NotificationConfigurationFilter::builder()
                    .key(
                        S3KeyFilter::builder()
                            .filter_rules(
                                FilterRule::builder()
                                    .name(FilterRuleName::Prefix)
                                    .value(prefix)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            );
        }
        configs.push(
            config
                .build()
                .map_err(|e| troupe_core::Error::backend("s3", e))?,
        );
    }
    let n = configs.len();
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .set_queue_configurations(Some(configs))
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk_error("s3", e))?;
    Ok(n)
}
