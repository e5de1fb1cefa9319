//! Choosing the backend set: the embedded default (SQLite and files under one data
//! directory) or the scale-out engines (S3 + SQS and Postgres with pgvector).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use troupe_core::{Embeddings, Leases};
use troupe_host::Backends;
use troupe_local::Local;

/// Which engines hold the queues, blobs, state and vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// SQLite and files under `--data-dir`; nothing to install.
    Local,
    /// S3 and SQS (the AWS SDK's environment: `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// credentials; plus `TROUPE_S3_BUCKET`, `TROUPE_QUEUE_PREFIX`) and Postgres with
    /// pgvector (`TROUPE_DATABASE_URL`).
    Aws,
}

/// `--backend` and `--data-dir`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The backend set: `local` (embedded) or `aws` (S3 + SQS + Postgres).
    #[arg(
        long,
        env = "TROUPE_BACKEND",
        value_enum,
        default_value = "local",
        global = true
    )]
    pub backend: BackendKind,
    /// Directory for the embedded backends' database and blobs, and for compiled
    /// components (both backend sets).
    #[arg(
        long,
        env = "TROUPE_DATA_DIR",
        default_value = ".troupe",
        global = true
    )]
    pub data_dir: PathBuf,
}

/// The scale-out set.
#[derive(Debug, Clone)]
pub struct Scale {
    /// SDK clients.
    pub clients: troupe_aws::Clients,
    /// Bucket and queue prefix.
    pub settings: troupe_aws::Settings,
    /// SQS queues.
    pub queue: troupe_aws::SqsQueue,
    /// The S3 bucket.
    pub blobs: troupe_aws::S3Blobs,
    /// State and event log.
    pub state: troupe_postgres::PgState,
    /// Vectors.
    pub vectors: troupe_postgres::PgVectors,
}

/// Connections per process to Postgres.
const PG_CONNECTIONS: usize = 16;

impl Scale {
    /// Connects from the environment and applies the database migrations.
    /// `duplicate` sends every message twice (testing idempotency).
    pub async fn from_env(duplicate: bool) -> Result<Self> {
        let settings = troupe_aws::Settings::from_env()?;
        let url = std::env::var("TROUPE_DATABASE_URL").map_err(|_| {
            anyhow::anyhow!(
                "TROUPE_DATABASE_URL is not set: give the Postgres (with pgvector) URL, e.g. postgres://user:password@host:5432/troupe"
            )
        })?;
        let clients = troupe_aws::Clients::from_env().await;
        let password = match (
            std::env::var("TROUPE_DATABASE_PASSWORD").ok(),
            std::env::var("TROUPE_DATABASE_PASSWORD_SECRET").ok(),
        ) {
            (Some(p), _) => Some(p),
            (None, Some(secret)) => Some(
                clients
                    .secret_password(&secret)
                    .await
                    .context("reading the database password (TROUPE_DATABASE_PASSWORD_SECRET)")?,
            ),
            (None, None) => None,
        };
        Self::connect_with(clients, settings, &url, password.as_deref(), duplicate).await
    }

    /// Connects with these clients, settings and database URL.
    pub async fn connect(
        clients: troupe_aws::Clients,
        settings: troupe_aws::Settings,
        database_url: &str,
        duplicate: bool,
    ) -> Result<Self> {
        Self::connect_with(clients, settings, database_url, None, duplicate).await
    }

    /// [`Scale::connect`] with the database password given apart from the URL.
    pub async fn connect_with(
        clients: troupe_aws::Clients,
        settings: troupe_aws::Settings,
        database_url: &str,
        password: Option<&str>,
        duplicate: bool,
    ) -> Result<Self> {
        let pg = troupe_postgres::Pg::connect_with(database_url, password, PG_CONNECTIONS)
            .await
            .context("connecting to Postgres (TROUPE_DATABASE_URL)")?;
        let state = troupe_postgres::PgState::new(pg.clone());
        let queue = troupe_aws::SqsQueue::new(
            clients.sqs.clone(),
            &settings.queue_prefix,
            Some(Arc::new(state.clone())),
        )
        .with_duplicate_deliveries(duplicate);
        Ok(Self {
            blobs: troupe_aws::S3Blobs::new(clients.s3.clone(), &settings.bucket),
            vectors: troupe_postgres::PgVectors::new(pg),
            clients,
            settings,
            queue,
            state,
        })
    }
}

/// An opened backend set.
#[derive(Debug, Clone)]
pub enum Opened {
    /// Embedded.
    Local(Box<Local>),
    /// Scale-out.
    Aws(Box<Scale>),
}

impl Opened {
    /// Opens the set `args` names.
    pub async fn open(args: &BackendArgs, duplicate: bool) -> Result<Self> {
        match args.backend {
            BackendKind::Local => {
                let options = troupe_local::Options {
                    duplicate_deliveries: duplicate,
                    ..Default::default()
                };
                let local = Local::open_with(&args.data_dir, options).with_context(|| {
                    format!("opening data directory {}", args.data_dir.display())
                })?;
                // A process that died with leases held: its work resumes now.
                local.release_departed().await.with_context(|| {
                    format!(
                        "releasing the leases of processes gone from {}",
                        args.data_dir.display()
                    )
                })?;
                Ok(Self::Local(Box::new(local)))
            }
            BackendKind::Aws => Ok(Self::Aws(Box::new(Scale::from_env(duplicate).await?))),
        }
    }

    /// The host's view of the set.
    pub fn backends(&self, embeddings: Option<Arc<dyn Embeddings>>) -> Backends {
        match self {
            Self::Local(l) => Backends {
                queue: Arc::new(l.queue.clone()),
                dead_letters: Arc::new(l.queue.clone()),
                blobs: Arc::new(l.blobs.clone()),
                state: Arc::new(l.state.clone()),
                vectors: Arc::new(l.vectors.clone()),
                leases: Some(Arc::new(l.queue.clone())),
                embeddings,
            },
            Self::Aws(s) => Backends {
                queue: Arc::new(s.queue.clone()),
                dead_letters: Arc::new(s.queue.clone()),
                blobs: Arc::new(s.blobs.clone()),
                state: Arc::new(s.state.clone()),
                vectors: Arc::new(s.vectors.clone()),
                leases: Some(Arc::new(s.queue.clone())),
                embeddings,
            },
        }
    }

    /// Lease extension for long work.
    pub fn leases(&self) -> Arc<dyn Leases> {
        match self {
            Self::Local(l) => Arc::new(l.queue.clone()),
            Self::Aws(s) => Arc::new(s.queue.clone()),
        }
    }
}
