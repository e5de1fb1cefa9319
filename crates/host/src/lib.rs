//! Troupe's function host on wasmtime: reads `spin.toml`, pre-instantiates each
//! component once, and runs them from triggers — HTTP routes, topic subscriptions,
//! object-created notifications and cron schedules — in sandboxes with a wall-clock
//! timeout, a memory cap, a concurrency limit and an outbound-host allow-list.
//!
//! # Layout
//!
//! - [`manifest`]: `spin.toml` parsing and validation ([`manifest::App`]).
//! - [`bindings`]: the `troupe:pipeline` WIT bindings.
//! - [`store`]: per-invocation store data: WASI contexts, memory cap, outbound policy.
//! - [`imports`]: the host side of `troupe:pipeline` (publish, blobs, state, config, log).
//! - [`runtime`]: engine, compiled-component cache, pre-instances, invocation, faults.
//! - [`tenancy`]: the tenant each invocation acts for, and the tenants seen.
//! - [`triggers`]: subscription consumers (`queue`, `blob`) and `cron` schedules.
//! - [`server`]: the HTTP listener: routes, `/health`, `/metrics`.
//! - [`auth`]: API keys, OIDC tokens, scopes and rate limits of `/v1/…` requests.
//! - [`metrics`]: the Prometheus registry; the queue wrapper that counts documents by
//!   final status; the bounded labels of HTTP requests.

pub mod admission;
pub mod auth;
pub mod bindings;
pub mod feed;
pub mod imports;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tenancy;
pub mod triggers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use troupe_core::{Blobs, DeadLetters, Embeddings, Leases, Queue, State, Vectors};

pub use http;
pub use manifest::App;
pub use runtime::Runtime;

/// The backends an app runs on, chosen by configuration.
#[derive(Clone)]
pub struct Backends {
    /// Queues and topics.
    pub queue: Arc<dyn Queue>,
    /// Dead-letter inspection and redrive.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Object storage.
    pub blobs: Arc<dyn Blobs>,
    /// State and event log.
    pub state: Arc<dyn State>,
    /// Chunk vectors.
    pub vectors: Arc<dyn Vectors>,
    /// Lease renewal while an invocation runs; without it a subscription's lease must
    /// outlast its component's timeout.
    pub leases: Option<Arc<dyn Leases>>,
    /// The embedding model; `None` in a host that runs without one (its imports then
    /// answer `unavailable`).
    pub embeddings: Option<Arc<dyn Embeddings>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// A native endpoint on the main listener, next to the components' routes (the
/// worker's `POST /v1/embeddings` in `troupe up`): gets the request body, returns a
/// status and a JSON body.
pub type Endpoint = Arc<
    dyn Fn(bytes::Bytes) -> futures::future::BoxFuture<'static, (u16, serde_json::Value)>
        + Send
        + Sync,
>;

/// An extra dependency `/health` reports (the embedding model in `troupe up`).
pub type HealthCheck = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, std::result::Result<(), String>> + Send + Sync,
>;

/// Extra Prometheus text appended to `/metrics` (another registry's encoding).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Host options.
#[derive(Clone, Default)]
pub struct Options {
    /// Where compiled components are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Native endpoints by method and exact path; they take precedence over routes.
    pub endpoints: Vec<(http::Method, String, Endpoint)>,
    /// Appended to `/metrics`.
    pub metrics: Vec<MetricsSource>,
    /// Extra dependencies for `/health`, by name.
    pub health: Vec<(String, HealthCheck)>,
    /// Subscriptions consumed outside the manifest (the embedding worker's), which
    /// are not reported as forgotten.
    pub native_subscriptions: Vec<String>,
    /// The subscriptions exist already (`troupe init` made them, and retired the ones
    /// they replace): do not declare them at start (a Lambda cold start should not
    /// call SQS for every subscription).
    pub assume_declared: bool,
    /// Connection and request-body limits of the HTTP listener.
    pub http: admission::HttpLimits,
    /// Outbound rules with a wildcard host may reach loopback, link-local and private
    /// addresses (by default only rules naming such a host may).
    pub allow_private_outbound: bool,
    /// The most bytes of documents one tenant may store (`--tenant-max-bytes`);
    /// uploads past it answer 413 `quota_exceeded`.
    pub tenant_max_bytes: Option<u64>,
    /// How `/v1/…` requests are authenticated (API keys in the state store, OIDC) and
    /// rate-limited.
    pub auth: auth::Settings,
    /// Limits of `GET /v1/events` streams.
    pub events: feed::Settings,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cache_dir", &self.cache_dir)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|(m, p, _)| format!("{m} {p}"))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Everything request and event handling shares.
#[derive(Debug)]
pub struct Shared {
    /// The validated manifest.
    pub app: App,
    /// Engine and components.
    pub runtime: Runtime,
    /// Backends.
    pub backends: Backends,
    /// Prometheus metrics; shared with the queue wrapper that counts documents.
    pub metrics: Arc<metrics::Metrics>,
    /// The tenants served so far (cron ticks run once per tenant).
    pub tenants: tenancy::Tenants,
    /// Guest tasks that may outlive their HTTP request; shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Native endpoints and extra metrics.
    pub options: Options,
    /// Bytes of request bodies being buffered, all requests together.
    pub(crate) body_budget: admission::BodyBudget,
    /// Credentials, scopes and rate limits of `/v1/…` requests.
    pub auth: auth::Auth,
    /// The tenants' live event streams (`GET /v1/events`).
    pub feeds: feed::Feeds,
}

impl Shared {
    /// Reads queue and dead-letter depths and oldest-message ages into the gauges: the
    /// manifest's subscriptions and the native ones (the embedding worker's jobs).
    pub async fn refresh_depths(&self) {
        let names = self
            .app
            .subscriptions
            .iter()
            .map(|t| &t.subscription.name)
            .chain(&self.options.native_subscriptions);
        for name in names {
            if let Ok(d) = self.backends.queue.depth(name).await {
                self.metrics.depth(name, &d);
            }
        }
    }
}

/// Refuses triggers whose component exports the wrong interface.
fn check_exports(app: &App, runtime: &Runtime) -> Result<()> {
    use runtime::Exports;
    let wrong = |field: String, id: &str, wants: &str| {
        anyhow::anyhow!(
            "{}: field `{field}`: component `{id}` does not export {wants}",
            app.path.display()
        )
    };
    for (i, t) in app.http.iter().enumerate() {
        if let Some(c) = runtime.component(&t.component)
            && !matches!(c.exports, Exports::Http(_))
        {
            return Err(wrong(
                format!("trigger.http[{i}].component"),
                &t.component,
                "wasi:http/incoming-handler",
            ));
        }
    }
    let (mut q, mut b) = (0, 0);
    for t in &app.subscriptions {
        let field = match t.source {
            manifest::Source::Topic => {
                q += 1;
                format!("trigger.queue[{}].component", q - 1)
            }
            manifest::Source::Blob { .. } => {
                b += 1;
                format!("trigger.blob[{}].component", b - 1)
            }
        };
        if let Some(c) = runtime.component(&t.component)
            && !matches!(c.exports, Exports::Events(_))
        {
            return Err(wrong(field, &t.component, "troupe:pipeline/handler"));
        }
    }
    for (i, t) in app.cron.iter().enumerate() {
        if let Some(c) = runtime.component(&t.component)
            && !matches!(c.exports, Exports::Events(_))
        {
            return Err(wrong(
                format!("trigger.cron[{i}].component"),
                &t.component,
                "troupe:pipeline/handler",
            ));
        }
    }
    Ok(())
}

/// Retires the subscriptions trigger `t` replaces into its own: they receive nothing
/// more, and what they hold is handled by `t`'s component (moved on every start, so
/// whatever could not move yet moves next time).
pub async fn retire_replaced(
    app: &App,
    queue: &dyn Queue,
    t: &manifest::SubscriptionTrigger,
) -> Result<()> {
    let into = &t.subscription.name;
    for old in &t.replaces {
        let retired = queue.retire(old, into).await.with_context(|| {
            format!(
                "{}: retiring subscription `{old}` into `{into}` (its `replaces`)",
                app.path.display()
            )
        })?;
        if retired.moved > 0 {
            tracing::info!(
                subscription = %into,
                replaced = %old,
                moved = retired.moved,
                "moved the messages of a replaced subscription"
            );
        }
        if retired.left > 0 {
            tracing::warn!(
                subscription = %into,
                replaced = %old,
                left = retired.left,
                "a replaced subscription still holds leased or delayed messages: they move at the next start"
            );
        }
    }
    Ok(())
}

/// A loaded app, ready to serve.
#[derive(Debug, Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

impl Host {
    /// Compiles and pre-instantiates every component and declares every subscription.
    pub async fn new(app: App, mut backends: Backends, options: Options) -> Result<Self> {
        let metrics = Arc::new(metrics::Metrics::default());
        let appended = Arc::new(feed::Wakers::default());
        backends.state = Arc::new(feed::Appended::new(backends.state, appended.clone()));
        backends.queue = Arc::new(metrics::documents::Counted::new(
            backends.queue,
            metrics.clone(),
        ));
        let runtime = {
            let (app, backends) = (app.clone(), backends.clone());
            let cache_dir = options.cache_dir.clone();
            let policy = runtime::Policy {
                allow_private_outbound: options.allow_private_outbound,
                tenant_max_bytes: options.tenant_max_bytes,
            };
            tokio::task::spawn_blocking(move || {
                Runtime::new(&app, &backends, cache_dir.as_deref(), &policy)
            })
            .await
            .context("compiling components")??
        };
        check_exports(&app, &runtime)?;
        let auth = auth::Auth::new(&options.auth, backends.state.clone())?;
        let declared: std::collections::HashSet<&str> = app
            .subscriptions
            .iter()
            .flat_map(|t| {
                std::iter::once(t.subscription.name.as_str())
                    .chain(t.replaces.iter().map(String::as_str))
            })
            .chain(options.native_subscriptions.iter().map(String::as_str))
            .collect();
        let existing = if options.assume_declared {
            Ok(Vec::new())
        } else {
            backends.queue.subscriptions().await
        };
        match existing {
            Ok(existing) => {
                for s in existing
                    .iter()
                    .filter(|s| !declared.contains(s.name.as_str()))
                {
                    tracing::warn!(
                        subscription = %s.name,
                        topics = %s.topics.join(","),
                        "subscription exists but is not in the manifest: it still receives \
                         copies of its topics' events and nothing consumes them; `troupe dlq list` \
                         shows its depth; name it in the `replaces` of the trigger that took over \
                         its topics to move its messages there"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list existing subscriptions"),
        }
        for t in app
            .subscriptions
            .iter()
            .filter(|_| !options.assume_declared)
        {
            backends
                .queue
                .subscribe(&t.subscription)
                .await
                .with_context(|| {
                    format!(
                        "{}: declaring subscription `{}`",
                        app.path.display(),
                        t.subscription.name
                    )
                })?;
            retire_replaced(&app, &*backends.queue, t).await?;
        }
        let tenants = tenancy::Tenants::new(backends.state.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                app,
                runtime,
                backends,
                metrics,
                tenants,
                tasks: tokio_util::task::TaskTracker::new(),
                body_budget: admission::BodyBudget::new(&options.http),
                auth,
                feeds: feed::Feeds::new(options.events, appended),
                options,
            }),
        })
    }

    /// What handlers share (runtime, backends, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves HTTP on `listener` and runs every trigger until `shutdown` resolves; then
    /// stops receiving, finishes in-flight work and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for t in self.shared.app.subscriptions.clone() {
            tasks.spawn(triggers::subscription::run(
                self.shared.clone(),
                t,
                stop_rx.clone(),
            ));
        }
        for t in self.shared.app.cron.clone() {
            tasks.spawn(triggers::cron::run(self.shared.clone(), t, stop_rx.clone()));
        }
        tracing::info!(
            receive_loops = self.shared.app.subscriptions.len(),
            schedules = self.shared.app.cron.len(),
            "triggers running: one receive loop per subscription"
        );
        let mut stop_rx2 = stop_rx.clone();
        let http = tokio::spawn(server::serve(listener, self.shared.clone(), async move {
            let _ = stop_rx2.changed().await;
        }));
        shutdown.await;
        tracing::info!("shutting down: no new work is received; finishing in-flight work");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        http.await.context("HTTP server task")?;
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        Ok(())
    }
}
