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
//! - [`triggers`]: subscription consumers (`queue`, `blob`) and `cron` schedules.
//! - [`server`]: the HTTP listener: routes, `/health`, `/metrics`.
//! - [`metrics`]: the Prometheus registry.

pub mod bindings;
pub mod imports;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod store;
pub mod triggers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use troupe_core::{Blobs, DeadLetters, Queue, State};

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
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

/// Host options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where compiled components are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
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
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
}

impl Shared {
    /// Reads queue and dead-letter depths into the gauges.
    pub async fn refresh_depths(&self) {
        for t in &self.app.subscriptions {
            let name = &t.subscription.name;
            if let Ok(d) = self.backends.queue.depth(name).await {
                let labels = metrics::QueueLabels {
                    subscription: name.clone(),
                };
                self.metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(i64::try_from(d.ready + d.in_flight).unwrap_or(i64::MAX));
                self.metrics
                    .dlq_depth
                    .get_or_create(&labels)
                    .set(i64::try_from(d.dead).unwrap_or(i64::MAX));
            }
        }
    }
}

/// A loaded app, ready to serve.
#[derive(Debug, Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

impl Host {
    /// Compiles and pre-instantiates every component and declares every subscription.
    pub async fn new(app: App, backends: Backends, options: Options) -> Result<Self> {
        let runtime = {
            let (app, backends) = (app.clone(), backends.clone());
            tokio::task::spawn_blocking(move || {
                Runtime::new(&app, &backends, options.cache_dir.as_deref())
            })
            .await
            .context("compiling components")??
        };
        for t in &app.subscriptions {
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
        }
        Ok(Self {
            shared: Arc::new(Shared {
                app,
                runtime,
                backends,
                metrics: metrics::Metrics::default(),
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
        let mut stop_rx2 = stop_rx.clone();
        let http = tokio::spawn(server::serve(listener, self.shared.clone(), async move {
            let _ = stop_rx2.changed().await;
        }));
        shutdown.await;
        tracing::info!("shutting down: no new work is received; finishing in-flight work");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        http.await.context("HTTP server task")?;
        Ok(())
    }
}
