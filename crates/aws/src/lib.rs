//! Troupe's scale-out backends on AWS: [`S3Blobs`] (object storage), [`SqsQueue`]
//! (queues, topics, dead letters and leases on SQS) and the decoding of S3
//! `ObjectCreated` notifications delivered through SQS ([`notifications`]).
//!
//! They implement `troupe-core`'s traits, so the host, the worker and the functions run
//! on them unchanged. Configuration is the AWS SDK's own environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) plus:
//!
//! - `TROUPE_S3_BUCKET`: the one bucket Troupe uses; the manifest's bucket names
//!   (`documents`) are aliases of it.
//! - `TROUPE_QUEUE_PREFIX` (default `troupe-`): every subscription `name` is the queue
//!   `<prefix><name>`, its dead letters `<prefix><name>-dlq`.
//!
//! # Layout
//!
//! - [`s3`] has [`S3Blobs`].
//! - [`sqs`] has [`SqsQueue`]: topic fan-out by queue tags, long polling, batch
//!   receive/delete, backoff through `ChangeMessageVisibility`, DLQs by redrive policy
//!   and by explicit moves with a reason code.
//! - [`notifications`] turns S3 event records into Troupe's object-created CloudEvents.
//! - [`setup`] creates the bucket and its notifications, idempotently.

pub mod notifications;
pub mod s3;
pub mod setup;
pub mod sqs;

use aws_config::BehaviorVersion;
pub use s3::S3Blobs;
pub use sqs::SqsQueue;
use troupe_core::{Error, Result};

/// Queue prefix when `TROUPE_QUEUE_PREFIX` is not set.
pub const DEFAULT_QUEUE_PREFIX: &str = "troupe-";

/// Where Troupe's AWS resources are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bucket (`TROUPE_S3_BUCKET`).
    pub bucket: String,
    /// Queue name prefix (`TROUPE_QUEUE_PREFIX`).
    pub queue_prefix: String,
}

impl Settings {
    /// Reads `TROUPE_S3_BUCKET` and `TROUPE_QUEUE_PREFIX`.
    pub fn from_env() -> Result<Self> {
        let bucket = std::env::var("TROUPE_S3_BUCKET")
            .ok()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    "TROUPE_S3_BUCKET",
                    "not set: name the S3 bucket Troupe stores documents in (`troupe init --backend aws` creates it)",
                )
            })?;
        troupe_core::blobs::check_bucket(&bucket)
            .map_err(|e| Error::invalid("TROUPE_S3_BUCKET", e.to_string()))?;
        let queue_prefix = std::env::var("TROUPE_QUEUE_PREFIX")
            .unwrap_or_else(|_| DEFAULT_QUEUE_PREFIX.to_owned());
        sqs::check_queue_name("TROUPE_QUEUE_PREFIX", &queue_prefix, true)?;
        Ok(Self {
            bucket,
            queue_prefix,
        })
    }
}

/// SDK clients for S3, SQS and Secrets Manager, configured from the environment.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// Secrets Manager: the database password, read at start-up rather than kept in
    /// an environment variable.
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// Loads the SDK configuration from the environment (region, credentials,
    /// `AWS_ENDPOINT_URL`), over one rustls (ring) HTTPS client. With a custom endpoint
    /// (moto, MinIO, LocalStack) S3 uses path-style addressing.
    pub async fn from_env() -> Self {
        let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let config = loader().load().await;
        Self::from_config(&config, custom_endpoint)
    }

    /// Clients for an S3/SQS-compatible server at `endpoint` (moto, MinIO,
    /// LocalStack) with static credentials; S3 uses path-style addressing.
    pub async fn with_endpoint(endpoint: &str, region: &str, key: &str, secret: &str) -> Self {
        let config = loader()
            .endpoint_url(endpoint)
            .region(aws_config::Region::new(region.to_owned()))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key, secret, None, None, "troupe",
            ))
            .load()
            .await;
        Self::from_config(&config, true)
    }

    fn from_config(config: &aws_config::SdkConfig, path_style: bool) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }

    /// The password held by a Secrets Manager secret (ARN or name): its string's
    /// `password` field when it is a JSON object (as RDS and CloudFormation's
    /// `GenerateSecretString` write it), else the whole string.
    pub async fn secret_password(&self, id: &str) -> Result<String> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                Error::backend(
                    "secretsmanager",
                    format!(
                        "reading secret `{id}`: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                    ),
                )
            })?;
        let text = out.secret_string().ok_or_else(|| {
            Error::invalid(
                "secret",
                format!("secret `{id}` holds no string (a binary secret?)"),
            )
        })?;
        Ok(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map
                .get("password")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::invalid(
                        "secret",
                        format!("secret `{id}` is a JSON object without a string `password`"),
                    )
                })?,
            _ => text.to_owned(),
        })
    }
}

/// The SDK's configuration loader over one rustls (ring) HTTPS client.
fn loader() -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http)
}

/// An SDK error as a backend error: the service's code and message, or the chain of
/// causes of a failure to reach it (without the SDK's debug dumps).
pub(crate) fn sdk_error<E, R>(backend: &'static str, e: aws_sdk_sqs::error::SdkError<E, R>) -> Error
where
    E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_sqs::error::SdkError;
    let text = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => causes(&e),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
            "{} (is the endpoint right? AWS_ENDPOINT_URL, AWS_REGION)",
            causes(&e)
        ),
        _ => causes(&e),
    };
    Error::backend(backend, text)
}

/// `error: cause: cause …`, skipping a cause that repeats the text before it.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}
