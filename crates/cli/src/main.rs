//! `troupe`: run the pipeline on the embedded backends, talk to a running one
//! (ingest, search, status), and look after dead letters.

mod client;
mod dlq;
mod ingest;
mod jobs;

use troupe_cli::backend::{BackendArgs, Opened};
use troupe_cli::model::EmbeddingArgs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use troupe_host::{App, Host, Options};

use crate::jobs::{WORKER_SUBSCRIPTION, consumer, job_subscription};

/// Troupe: a choreographed document-AI pipeline of WebAssembly functions.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: `text`, or `json` (one object per line). Lines
    /// written inside a traced request or event carry its `trace_id` and `span_id`.
    #[arg(long, global = true, env = "TROUPE_LOG_FORMAT", default_value = "text")]
    log_format: troupe_telemetry::LogFormat,
}

/// What `up` and `serve` share.
#[derive(Debug, clap::Args)]
struct HostArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Address of the HTTP listener (API, /health, /metrics).
    #[arg(long, env = "TROUPE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The application manifest.
    #[arg(long, env = "TROUPE_MANIFEST", default_value = "spin.toml")]
    manifest: PathBuf,
    #[command(flatten)]
    embedding: EmbeddingArgs,
    /// Run without the embedding model (no /v1/embeddings; search and chunking answer
    /// `unavailable`).
    #[arg(long, env = "TROUPE_NO_EMBEDDINGS")]
    no_embeddings: bool,
    /// Connections the HTTP listener keeps open at once; past it a new one is
    /// answered 503 and closed.
    #[arg(long, env = "TROUPE_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Connections one client address may keep open at once.
    #[arg(long, env = "TROUPE_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    max_connections_per_client: usize,
    /// `GET /v1/events` streams open at once (each also holds a connection); past it
    /// a new one is answered 503.
    #[arg(long, env = "TROUPE_MAX_EVENT_STREAMS", default_value_t = 1024)]
    max_event_streams: usize,
    /// Let components whose `allowed_outbound_hosts` has a wildcard host (`notify`'s
    /// `https://*:*`) reach loopback, link-local and private addresses too. Off, only
    /// a rule naming such a host (`http://10.0.0.5:8080`) reaches it. This is also
    /// what lets a tenant register a webhook on such an address
    /// (`--allow-private-webhooks`).
    #[arg(
        long,
        visible_alias = "allow-private-webhooks",
        env = "TROUPE_ALLOW_PRIVATE_OUTBOUND"
    )]
    allow_private_outbound: bool,
    /// The most bytes of documents one tenant may store; an upload past it answers
    /// 413 `quota_exceeded`, a dropped-in file past it fails. No quota when unset.
    #[arg(long, env = "TROUPE_TENANT_MAX_BYTES", value_name = "BYTES")]
    tenant_max_bytes: Option<u64>,
    #[command(flatten)]
    retention: troupe_cli::retention::RetentionArgs,
    #[command(flatten)]
    auth: troupe_cli::auth::AuthArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: HTTP routes, queue, blob and cron triggers, and
    /// the embedding-job consumer.
    Up {
        #[command(flatten)]
        host: HostArgs,
        /// Enqueue every message twice, to prove handlers idempotent (testing only).
        #[arg(long, env = "TROUPE_DUPLICATE_DELIVERIES", hide = true)]
        duplicate_deliveries: bool,
    },
    /// Run the functions alone (HTTP routes, queue, blob and cron triggers), without
    /// consuming embedding jobs: the scale-out shape, beside `troupe worker`. The model
    /// is still loaded, for search queries and chunking.
    Serve {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Create what the backend set needs, idempotently: with `--backend aws`, the
    /// bucket, every subscription's queue and DLQ with its redrive policy, the bucket's
    /// notifications to the blob triggers' queues, and the Postgres schema. Then
    /// retires the subscriptions the manifest's triggers replace, moving what they
    /// hold to their successors.
    Init {
        #[command(flatten)]
        backend: BackendArgs,
        /// The application manifest whose subscriptions to create.
        #[arg(long, env = "TROUPE_MANIFEST", default_value = "spin.toml")]
        manifest: PathBuf,
    },
    /// Run the embedding worker alone: POST /v1/embeddings (OpenAI-compatible),
    /// GET /health, GET /metrics.
    Worker {
        #[command(flatten)]
        backend: BackendArgs,
        /// Address of the worker's HTTP listener.
        #[arg(long, env = "TROUPE_WORKER_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        #[command(flatten)]
        embedding: EmbeddingArgs,
        #[command(flatten)]
        auth: troupe_cli::auth::AuthArgs,
    },
    /// Create, list and revoke API keys (stored hashed in the backend; every host
    /// of the deployment sees them). Once a key exists, `/v1/…` requests need one.
    Keys {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(subcommand)]
        action: troupe_cli::keys::KeysAction,
    },
    /// Inspect and redrive dead-letter queues.
    Dlq {
        #[command(flatten)]
        backend: BackendArgs,
        #[command(subcommand)]
        action: dlq::DlqAction,
    },
    /// Upload files or folders (recursively) to a running Troupe, with a progress bar,
    /// and wait until every document is indexed or failed.
    Ingest {
        #[command(flatten)]
        api: client::Api,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Return once uploaded, without waiting for indexing.
        #[arg(long, env = "TROUPE_NO_WAIT")]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, env = "TROUPE_INGEST_TIMEOUT", default_value_t = 1800)]
        timeout_s: u64,
        /// Uploads in flight at once.
        #[arg(long, env = "TROUPE_INGEST_CONCURRENCY", default_value_t = 4)]
        concurrency: usize,
    },
    /// Search the indexed documents of a running Troupe.
    Search {
        #[command(flatten)]
        api: client::Api,
        /// The query (several words are joined with spaces).
        #[arg(required = true)]
        query: Vec<String>,
        /// Hits to return.
        #[arg(short, long, env = "TROUPE_SEARCH_K", default_value_t = 5)]
        k: u32,
        /// Print the API's JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Show a document's status.
    Status {
        #[command(flatten)]
        api: client::Api,
        /// The document id `troupe ingest` printed.
        id: String,
    },
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn worker(
    listen: SocketAddr,
    backend: BackendArgs,
    embedding: EmbeddingArgs,
    auth: troupe_cli::auth::AuthArgs,
) -> Result<()> {
    let (embedder, metrics) = embedding.start()?;
    let opened = Opened::open(&backend, false).await?;
    // `/v1/embeddings` here takes the same credentials as the hosts' API.
    let settings = auth.settings()?;
    let state = opened.backends(None).state;
    let keys_exist = troupe_host::auth::KeyStore::new(state.clone())
        .any()
        .await
        .context("looking for API keys")?;
    auth.check_listen(listen, &settings, keys_exist)?;
    let gate = troupe_cli::auth::worker_gate(troupe_host::auth::Auth::new(&settings, state)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}: is another worker running? pass --listen"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let queue = opened.backends(None).queue;
    let jobs = tokio::spawn(
        consumer(&opened, queue, embedder.clone(), metrics.clone())
            .await?
            .run(stop_rx),
    );
    let addr = listener.local_addr()?;
    println!("troupe worker listening on http://{addr}");
    troupe_gpu_worker::server::serve(listener, embedder, metrics, Some(gate), async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await;
    jobs.await.context("embedding consumer task")?;
    Ok(())
}

fn embeddings_endpoint(
    embedder: troupe_gpu_worker::Embedder,
    metrics: Arc<troupe_gpu_worker::metrics::Metrics>,
) -> (troupe_host::Endpoint, troupe_host::MetricsSource) {
    let endpoint: troupe_host::Endpoint = Arc::new(move |body| {
        let embedder = embedder.clone();
        Box::pin(async move { troupe_gpu_worker::openai::handle(&embedder, &body).await })
    });
    (endpoint, Arc::new(move || metrics.encode()))
}

/// `up` (`consume_jobs`) and `serve`.
async fn up(args: HostArgs, consume_jobs: bool, duplicate: bool) -> Result<()> {
    let HostArgs {
        backend,
        listen,
        manifest,
        embedding,
        no_embeddings,
        max_connections,
        max_connections_per_client,
        max_event_streams,
        allow_private_outbound,
        tenant_max_bytes,
        retention,
        auth,
    } = args;
    let auth_settings = auth.settings()?;
    let embedding = (!no_embeddings).then_some(embedding);
    let app = App::load(&manifest)?;
    let watched: Vec<(String, String)> = app
        .subscriptions
        .iter()
        .filter_map(|t| match &t.source {
            troupe_host::manifest::Source::Blob { bucket } => Some((
                bucket.clone(),
                t.subscription.subject_prefix.clone().unwrap_or_default(),
            )),
            troupe_host::manifest::Source::Topic => None,
        })
        .collect();
    let data_dir = backend.data_dir.clone();
    let mut host_options = Options {
        cache_dir: Some(data_dir.join("cache")),
        native_subscriptions: vec![WORKER_SUBSCRIPTION.to_owned()],
        http: troupe_host::admission::HttpLimits {
            max_connections,
            max_connections_per_client,
            ..Default::default()
        },
        allow_private_outbound,
        tenant_max_bytes,
        auth: auth_settings.clone(),
        events: troupe_host::feed::Settings {
            max_streams: max_event_streams,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut embedder = None;
    if let Some(embedding) = embedding {
        let (e, metrics) = embedding.start()?;
        embedder = Some((e.clone(), metrics.clone()));
        let e_health = e.clone();
        let (endpoint, source) = embeddings_endpoint(e, metrics);
        host_options.endpoints.push((
            troupe_host::http::Method::POST,
            "/v1/embeddings".into(),
            endpoint,
        ));
        host_options.metrics.push(source);
        let probe = e_health;
        host_options.health.push((
            "model".into(),
            Arc::new(move || {
                let e = probe.clone();
                // Liveness of the inference thread: a busy queue is not an outage.
                Box::pin(async move {
                    if e.is_running() {
                        Ok(())
                    } else {
                        Err("the inference thread has stopped".to_owned())
                    }
                })
            }),
        ));
    }
    let opened = Opened::open(&backend, duplicate).await?;
    let keys_exist = troupe_host::auth::KeyStore::new(opened.backends(None).state)
        .any()
        .await
        .context("looking for API keys")?;
    auth.check_listen(listen, &auth_settings, keys_exist)?;
    if let Opened::Local(local) = &opened {
        let recovered = local
            .blobs
            .recover()
            .await
            .context("publishing notifications a crash left pending")?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "published object-created notifications left pending by a crash"
            );
        }
    }
    // The worker's subscription, declared by every host: jobs published before a
    // worker first starts (`serve` beside a `worker` started later) wait for it
    // rather than finding no subscriber.
    opened
        .backends(None)
        .queue
        .subscribe(&job_subscription()?)
        .await
        .context("declaring the embedding-job subscription")?;
    let model = embedder
        .clone()
        .map(|(e, _)| Arc::new(e) as Arc<dyn troupe_core::Embeddings>);
    let host = Host::new(app, opened.backends(model), host_options).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}: is another troupe running? pass --listen"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The host's queue: the documents the worker fails are counted with the rest.
    let queue = host.shared().backends.queue.clone();
    let consumer = match embedder {
        Some((e, metrics)) if consume_jobs => Some(tokio::spawn(
            consumer(&opened, queue, e, metrics)
                .await?
                .run(stop_rx.clone()),
        )),
        _ => None,
    };
    // On S3 the bucket's own notifications announce every write.
    let drop_ins = match &opened {
        Opened::Local(local) => Some(tokio::spawn(
            troupe_local::DropInScanner::new(local.blobs.clone()).run(
                watched,
                troupe_local::drop_ins::RESCAN,
                stop_rx.clone(),
            ),
        )),
        Opened::Aws(_) => None,
    };
    let maintenance = tokio::spawn(troupe_cli::retention::maintain(
        opened.clone(),
        retention,
        stop_rx.clone(),
    ));
    tracing::info!(%addr, backend = ?backend.backend, data_dir = %data_dir.display(), "troupe is up");
    println!("troupe listening on http://{addr}");
    let stop = stop_tx.clone();
    let served = host
        .run(listener, async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await;
    // On every exit path: stop the consumer and let it finish what it leased.
    let _ = stop_tx.send(true);
    if let Some(c) = consumer {
        c.await.context("embedding consumer task")?;
    }
    if let Some(d) = drop_ins {
        d.await.context("drop-in watcher task")?;
    }
    maintenance.await.context("maintenance task")?;
    // A waiting receive that shutdown abandoned may have just leased a batch: hand it
    // back now rather than after its visibility timeout.
    if let Opened::Local(local) = &opened {
        match local.queue.release_owner(&local.owner.id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(leases = n, "released the leases left at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the leases left at shutdown failed; they expire by themselves");
            }
        }
    }
    served
}

/// `troupe init`: declares every subscription of the manifest and the worker's, and
/// retires the ones they replace; on AWS also the bucket and its notifications (the
/// schema is migrated on connect).
async fn init(backend: BackendArgs, manifest: PathBuf) -> Result<()> {
    let app = App::load(&manifest)?;
    let opened = Opened::open(&backend, false).await?;
    let queue = opened.backends(None).queue;
    if let Opened::Aws(scale) = &opened {
        troupe_aws::setup::ensure_bucket(&scale.clients, &scale.settings.bucket)
            .await
            .with_context(|| format!("creating bucket {}", scale.settings.bucket))?;
        println!("bucket {}: ready", scale.settings.bucket);
    }
    let mut subscriptions: Vec<troupe_core::Subscription> = app
        .subscriptions
        .iter()
        .map(|t| t.subscription.clone())
        .collect();
    subscriptions.push(job_subscription()?);
    for s in &subscriptions {
        queue
            .subscribe(s)
            .await
            .with_context(|| format!("creating subscription `{}`", s.name))?;
        println!("subscription {} ({}): ready", s.name, s.topics.join(", "));
    }
    for t in &app.subscriptions {
        troupe_host::retire_replaced(&app, &*queue, t).await?;
    }
    if let Opened::Aws(scale) = &opened {
        let n = troupe_aws::setup::configure_notifications(
            &scale.clients,
            &scale.queue,
            &scale.settings.bucket,
            &subscriptions,
        )
        .await
        .context("configuring the bucket's notifications")?;
        println!("bucket notifications: {n} blob trigger(s)");
        println!("database schema: migrated");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Processes that serve export traces (when an OTLP endpoint is configured);
    // client commands only log.
    let service = match &cli.command {
        Command::Up { .. } | Command::Serve { .. } => Some("troupe"),
        Command::Worker { .. } => Some("troupe-worker"),
        _ => None,
    };
    let telemetry = match troupe_telemetry::init(service, cli.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up {
            host,
            duplicate_deliveries,
        } => up(host, true, duplicate_deliveries).await,
        Command::Serve { host } => up(host, false, false).await,
        Command::Init { backend, manifest } => init(backend, manifest).await,
        Command::Worker {
            backend,
            listen,
            embedding,
            auth,
        } => worker(listen, backend, embedding, auth).await,
        Command::Dlq { backend, action } => dlq::run(backend, action).await,
        Command::Keys { backend, action } => troupe_cli::keys::run(&backend, action).await,
        Command::Ingest {
            api,
            paths,
            no_wait,
            timeout_s,
            concurrency,
        } => tokio::task::spawn_blocking(move || {
            let how = ingest::Ingest {
                no_wait,
                timeout: std::time::Duration::from_secs(timeout_s),
                concurrency,
            };
            ingest::ingest(&api, &paths, &how)
        })
        .await
        .unwrap_or_else(|e| Err(e.into())),
        Command::Search {
            api,
            query,
            k,
            json,
        } => {
            let query = query.join(" ");
            tokio::task::spawn_blocking(move || client::search(&api, &query, k, json))
                .await
                .unwrap_or_else(|e| Err(e.into()))
        }
        Command::Status { api, id } => {
            tokio::task::spawn_blocking(move || client::status(&api, &id))
                .await
                .unwrap_or_else(|e| Err(e.into()))
        }
    };
    // The spans still buffered are exported before the process ends.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
