//! The manifest as written: serde shapes that refuse unknown fields, so a typo is
//! reported with its line and the fields that were expected.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    pub(super) spin_manifest_version: u32,
    pub(super) application: RawApplication,
    #[serde(default)]
    pub(super) variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    pub(super) trigger: RawTriggers,
    #[serde(default)]
    pub(super) component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApplication {
    pub(super) name: String,
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) authors: Vec<String>,
    /// Tool settings (`[application.tool.troupe]`); other tools' tables are ignored.
    #[serde(default)]
    pub(super) tool: BTreeMap<String, toml::Value>,
}

/// `[application.tool.troupe]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAppTool {
    /// Buckets components may be granted besides those a `[[trigger.blob]]` watches.
    #[serde(default)]
    pub(super) buckets: Vec<String>,
    /// Topics consumed outside this manifest (another application, a queue read by
    /// hand) that components may be granted to publish to.
    #[serde(default)]
    pub(super) topics: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVariable {
    #[serde(default)]
    pub(super) default: Option<String>,
    #[serde(default)]
    pub(super) required: bool,
    #[serde(default)]
    pub(super) secret: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTriggers {
    #[serde(default)]
    pub(super) http: Vec<RawHttpTrigger>,
    #[serde(default)]
    pub(super) queue: Vec<RawQueueTrigger>,
    #[serde(default)]
    pub(super) blob: Vec<RawBlobTrigger>,
    #[serde(default)]
    pub(super) cron: Vec<RawCronTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpTrigger {
    pub(super) route: String,
    pub(super) component: String,
    #[serde(default)]
    pub(super) executor: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    #[serde(default)]
    pub(super) batch_size: Option<usize>,
    #[serde(default)]
    pub(super) visibility_timeout_ms: Option<u64>,
    #[serde(default)]
    pub(super) max_deliveries: Option<u32>,
    #[serde(default)]
    pub(super) backoff_base_ms: Option<u64>,
    #[serde(default)]
    pub(super) backoff_max_ms: Option<u64>,
    #[serde(default)]
    pub(super) dedupe_window_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueueTrigger {
    /// One topic; or `topics`, never both.
    #[serde(default)]
    pub(super) topic: Option<String>,
    /// Several topics, one subscription.
    #[serde(default)]
    pub(super) topics: Option<Vec<String>>,
    /// Subscriptions this one took over; what they hold moves here.
    #[serde(default)]
    pub(super) replaces: Vec<String>,
    pub(super) component: String,
    #[serde(default)]
    pub(super) subscription: Option<String>,
    #[serde(flatten)]
    pub(super) delivery: RawDelivery,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlobTrigger {
    pub(super) bucket: String,
    pub(super) component: String,
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) subscription: Option<String>,
    #[serde(flatten)]
    pub(super) delivery: RawDelivery,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCronTrigger {
    pub(super) schedule: String,
    pub(super) component: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) source: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub(super) variables: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) build: Option<toml::Value>,
    #[serde(default)]
    pub(super) tool: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    /// A number, or a string that may name variables (`"{{ extract_timeout_ms }}"`).
    #[serde(default)]
    pub(super) timeout_ms: Option<toml::Value>,
    /// A number, or a string that may name variables.
    #[serde(default)]
    pub(super) memory_limit_mb: Option<toml::Value>,
    #[serde(default)]
    pub(super) max_concurrency: Option<usize>,
    /// A number, or a string that may name variables (`"{{ max_upload_bytes }}"`).
    #[serde(default)]
    pub(super) max_body_bytes: Option<toml::Value>,
    #[serde(default)]
    pub(super) max_streams: Option<usize>,
    /// Variables that need others when set (`{ webhook_urls = ["webhook_secret"] }`).
    #[serde(default)]
    pub(super) variables_require: BTreeMap<String, Vec<String>>,
    /// What the component may reach through the host's imports.
    #[serde(default)]
    pub(super) grants: RawGrants,
}

/// `[component.<id>.tool.troupe.grants]`, as written (see `grants.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    #[serde(default)]
    pub(super) blobs: Vec<String>,
    #[serde(default)]
    pub(super) state: Vec<String>,
    #[serde(default)]
    pub(super) event_logs: Option<String>,
    #[serde(default)]
    pub(super) publish: Vec<String>,
    #[serde(default)]
    pub(super) vectors: Option<String>,
    #[serde(default)]
    pub(super) embeddings: bool,
}
