//! Troupe's function components on AWS Lambda. One binary (`troupe-lambda`, deployed
//! as `bootstrap` beside `spin.toml` and the `.wasm` files) hosts the manifest's
//! components with wasmtime, exactly as `troupe serve` does, and answers the events
//! Lambda hands it:
//!
//! - **SQS** (an event source mapping on a subscription's queue): the records become
//!   deliveries of that subscription and go through the host's subscription logic;
//!   messages left for redelivery (retried with backoff, deferred, or not settled) are
//!   returned as `batchItemFailures` (`ReportBatchItemFailures`); a deferred one was
//!   re-sent with its delay and its original deleted, so the delivery is not counted;
//!   rejected ones are moved to the DLQ with their reason; S3 notifications arriving
//!   this way are decoded.
//! - **S3** (a bucket notification straight to the function): `ObjectCreated` records
//!   run the matching `blob` trigger; a failure (or a handler asking to wait) is
//!   returned as an error, so Lambda's asynchronous retries apply.
//! - **HTTP** (API Gateway HTTP APIs, payload 2.0, and function URLs): routed like the
//!   listener routes requests.
//! - **Schedules** (EventBridge `Scheduled Event`): one tick of each `cron` trigger.
//!
//! `TROUPE_COMPONENT`, when set, limits the function to that component's triggers.
//! The backends come from the same environment as `troupe serve --backend aws`, and so
//! does authentication: `TROUPE_AUTH`, `TROUPE_OIDC_ISSUER`, `TROUPE_OIDC_AUDIENCE`,
//! `TROUPE_OIDC_TENANT_CLAIM`, `TROUPE_RATE_LIMIT`, `TROUPE_RATE_BURST`; API keys
//! live in Postgres, where `troupe keys create --backend aws` puts them.

pub mod events;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde_json::Value;
use troupe_cli::backend::Scale;
use troupe_host::{App, Host, Options, Shared};

/// The hosted app, ready for events.
pub struct Adapter {
    shared: Arc<Shared>,
    scale: Scale,
    component: Option<String>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

/// Where the function finds its files and what it serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// `spin.toml` (`TROUPE_MANIFEST`; default `spin.toml` in the task root).
    pub manifest: PathBuf,
    /// Only this component's triggers (`TROUPE_COMPONENT`).
    pub component: Option<String>,
    /// The embedding model's folder (`TROUPE_MODEL_DIR`), when bundled.
    pub model_dir: Option<PathBuf>,
    /// Compiled-component cache (`TROUPE_DATA_DIR`; default `/tmp/troupe`).
    pub cache_dir: PathBuf,
    /// The most bytes of documents one tenant may store (`TROUPE_TENANT_MAX_BYTES`).
    pub tenant_max_bytes: Option<u64>,
    /// How HTTP requests are authenticated (`TROUPE_AUTH`, `TROUPE_OIDC_…`,
    /// `TROUPE_RATE_…`).
    pub auth: troupe_host::auth::Settings,
}

impl Config {
    /// Reads the environment Lambda gives the function.
    pub fn from_env() -> Result<Self> {
        let root =
            std::env::var_os("LAMBDA_TASK_ROOT").map_or_else(|| PathBuf::from("."), PathBuf::from);
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let auth = troupe_cli::auth::AuthArgs::from_env()
            .and_then(|a| a.settings())
            .context(
                "reading the authentication settings (TROUPE_AUTH, TROUPE_OIDC_…, TROUPE_RATE_…)",
            )?;
        Ok(Self {
            manifest: var("TROUPE_MANIFEST").unwrap_or_else(|| root.join("spin.toml")),
            component: std::env::var("TROUPE_COMPONENT")
                .ok()
                .filter(|c| !c.is_empty()),
            model_dir: var("TROUPE_MODEL_DIR"),
            cache_dir: var("TROUPE_DATA_DIR")
                .unwrap_or_else(|| PathBuf::from("/tmp/troupe"))
                .join("cache"),
            tenant_max_bytes: std::env::var("TROUPE_TENANT_MAX_BYTES")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            auth,
        })
    }
}

impl Adapter {
    /// Loads the manifest and its components, the model when configured, and
    /// connects the scale-out backends (whose queues `troupe init` declared).
    pub async fn start(config: Config, scale: Scale) -> Result<Self> {
        let app = App::load(&config.manifest)?;
        if let Some(c) = &config.component
            && !app.components.contains_key(c)
        {
            anyhow::bail!(
                "TROUPE_COMPONENT={c}: {} has no such component (it has: {})",
                config.manifest.display(),
                app.components
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let embeddings = match &config.model_dir {
            Some(dir) => {
                let args = troupe_cli::model::EmbeddingArgs {
                    model_dir: dir.clone(),
                    max_batch_tokens: 16_384,
                    max_queued_texts: 4096,
                };
                let (embedder, _) = args
                    .start()
                    .context("loading the embedding model (TROUPE_MODEL_DIR)")?;
                Some(Arc::new(embedder) as Arc<dyn troupe_core::Embeddings>)
            }
            None => None,
        };
        let options = Options {
            cache_dir: Some(config.cache_dir),
            assume_declared: true,
            tenant_max_bytes: config.tenant_max_bytes,
            auth: config.auth,
            // A Lambda invocation answers one whole response: no endless streams.
            events: troupe_host::feed::Settings {
                max_streams: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let host = Host::new(
            app,
            troupe_cli::backend::Opened::Aws(Box::new(scale.clone())).backends(embeddings),
            options,
        )
        .await?;
        Ok(Self {
            shared: host.shared().clone(),
            scale,
            component: config.component,
        })
    }

    /// Answers one Lambda event.
    pub async fn handle(&self, event: Value) -> Result<Value> {
        match events::kind(&event) {
            events::Kind::Sqs => events::sqs(self, event).await,
            events::Kind::S3 => events::s3(self, event).await,
            events::Kind::Http => events::http(self, event).await,
            events::Kind::Schedule => events::schedule(self).await,
            events::Kind::Unknown => anyhow::bail!(
                "unrecognised Lambda event (not SQS, S3, API Gateway v2 / function URL or an EventBridge schedule): {}",
                truncate(&event.to_string(), 300)
            ),
        }
    }

    fn serves(&self, component: &str) -> bool {
        self.component.as_deref().is_none_or(|c| c == component)
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
