//! The two backend sets the shared suites run against: the embedded default (SQLite
//! and files under a temporary data directory) and the scale-out set on real protocol
//! servers this test process starts itself on loopback: moto's S3 + SQS server and a
//! Postgres with pgvector (PyPI `pgserver`), both from the virtual environment
//! `scripts/setup-scale-out.sh` installs. Each server is started once per test binary
//! and stops when the binary exits (its standard input closes); each test gets its own
//! queue prefix, bucket and database, so tests run in parallel.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use troupe_cli::backend::{Opened, Scale};

use crate::repo_root;

/// A server started by [`servers`].
struct Server {
    url: String,
    /// Kept so its standard input stays open while the tests run.
    _child: std::process::Child,
}

/// The loopback servers of the scale-out set.
pub struct Servers {
    moto: Server,
    postgres: Server,
}

fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let root = repo_root();
        let status = Command::new(root.join("scripts/setup-scale-out.sh"))
            .status()
            .expect("running scripts/setup-scale-out.sh");
        assert!(status.success(), "installing moto and pgserver failed");
        let venv = std::env::var_os("TROUPE_PY_ENV").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/troupe-tools/py")
            },
            PathBuf::from,
        );
        venv.join("bin/python")
    })
    .clone()
}

/// A command installed by `scripts/setup-scale-out.sh` (e.g. `cargo-lambda`).
pub fn tool(name: &str) -> PathBuf {
    python().with_file_name(name)
}

fn start(kind: &str) -> Server {
    start_with(kind, &[])
}

/// Starts a server of `scripts/test_servers.py` of its own (`postgres --tls DIR`);
/// returns its URL and the process, which stops when dropped (its input closes).
pub fn start_server(kind: &str, args: &[&str]) -> (String, std::process::Child) {
    let s = start_with(kind, args);
    (s.url, s._child)
}

fn start_with(kind: &str, args: &[&str]) -> Server {
    let mut child = Command::new(python())
        .arg(repo_root().join("scripts/test_servers.py"))
        .arg(kind)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the {kind} server: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading the server's first line");
    let url = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("the {kind} server did not start: {line:?}"))
        .to_owned();
    Server { url, _child: child }
}

/// moto and Postgres, started on first use.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| Servers {
        moto: start("moto"),
        postgres: start("postgres"),
    })
}

fn unique() -> String {
    static N: Mutex<u32> = Mutex::new(0);
    let mut n = N.lock().expect("counter");
    *n += 1;
    format!("t{}x{}x{}", std::process::id(), *n, &uuid_like()[..6])
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// One test's resources on the scale-out servers.
#[derive(Debug, Clone)]
pub struct AwsStack {
    /// Queue name prefix.
    pub prefix: String,
    /// Bucket.
    pub bucket: String,
    /// A database of its own.
    pub database_url: String,
    /// moto's URL.
    pub endpoint: String,
}

impl AwsStack {
    /// Fresh names and a fresh database on the shared servers.
    pub fn new() -> Self {
        let s = servers();
        let id = unique();
        let db = id.to_lowercase();
        let admin = s.postgres.url.clone();
        runtime().block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .expect("connecting to the test Postgres");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .expect("creating a test database");
        });
        let database_url = format!("{}{db}", admin.trim_end_matches("postgres"));
        Self {
            prefix: format!("{id}-"),
            bucket: format!("troupe-{}", id.to_lowercase()),
            database_url,
            endpoint: s.moto.url.clone(),
        }
    }

    /// The environment a `troupe` process needs for this stack.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TROUPE_BACKEND", "aws".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("TROUPE_S3_BUCKET", self.bucket.clone()),
            ("TROUPE_QUEUE_PREFIX", self.prefix.clone()),
            ("TROUPE_DATABASE_URL", self.database_url.clone()),
        ]
    }

    /// The backends, connected in this process.
    pub async fn scale(&self) -> Scale {
        let clients =
            troupe_aws::Clients::with_endpoint(&self.endpoint, "us-east-1", "test", "test").await;
        let settings = troupe_aws::Settings {
            bucket: self.bucket.clone(),
            queue_prefix: self.prefix.clone(),
        };
        let scale = Scale::connect(clients, settings, &self.database_url, false)
            .await
            .expect("connecting to the scale-out test servers");
        troupe_aws::setup::ensure_bucket(&scale.clients, &self.bucket)
            .await
            .expect("creating the test bucket");
        scale
    }

    /// Runs `troupe init --backend aws` for `manifest`.
    pub fn init(&self, manifest: &Path) {
        let out = Command::new(crate::troupe_bin())
            .args(["init", "--manifest"])
            .arg(manifest)
            .env("TROUPE_LOG", "warn")
            .envs(self.env())
            .output()
            .expect("running troupe init");
        assert!(
            out.status.success(),
            "troupe init --backend aws failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for AwsStack {
    fn default() -> Self {
        Self::new()
    }
}

/// A runtime for the synchronous tests' backend calls.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// A backend set for a whole-system test: where `troupe` keeps its data and how the
/// test looks behind the API.
#[derive(Debug, Clone)]
pub enum Stack {
    /// SQLite and files in `data`.
    Local {
        /// The data directory.
        data: PathBuf,
    },
    /// S3, SQS, Postgres.
    Aws {
        /// Its resources.
        aws: AwsStack,
        /// The data directory (compiled components only).
        data: PathBuf,
    },
}

impl Stack {
    /// The embedded set in `dir`.
    pub fn local(dir: &Path) -> Self {
        Self::Local {
            data: dir.join("data"),
        }
    }

    /// The scale-out set, with `dir` for compiled components.
    pub fn aws(dir: &Path) -> Self {
        Self::Aws {
            aws: AwsStack::new(),
            data: dir.join("data"),
        }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        match self {
            Self::Local { data } | Self::Aws { data, .. } => data,
        }
    }

    /// Environment for `troupe` (the backend's settings).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Local { .. } => Vec::new(),
            Self::Aws { aws, .. } => aws.env(),
        }
    }

    /// Prepares the backends for `manifest` (`troupe init` on AWS).
    pub fn init(&self, manifest: &Path) {
        if let Self::Aws { aws, .. } = self {
            aws.init(manifest);
        }
    }

    async fn opened(&self) -> Opened {
        match self {
            Self::Local { data } => Opened::Local(Box::new(
                troupe_local::Local::open(data).expect("open data dir"),
            )),
            Self::Aws { aws, .. } => Opened::Aws(Box::new(aws.scale().await)),
        }
    }

    /// Writes an object straight into the bucket (not through the API): a file in the
    /// bucket's folder, or an S3 put.
    pub fn put_object(&self, key: &str, data: &[u8]) {
        match self {
            Self::Local { data: dir } => {
                let path = dir.join("blobs/documents").join(key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, data).expect("drop in");
            }
            Self::Aws { .. } => runtime().block_on(async {
                let backends = self.opened().await.backends(None);
                backends
                    .blobs
                    .put("documents", key, data)
                    .await
                    .expect("S3 put");
            }),
        }
    }

    /// Keys in the bucket under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            backends
                .blobs
                .list("documents", prefix)
                .await
                .expect("listing blobs")
        })
    }

    /// Every subscription's queue depth.
    pub fn queue_depths(&self) -> Vec<(String, troupe_core::Depth)> {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            let mut out = Vec::new();
            for s in backends
                .queue
                .subscriptions()
                .await
                .expect("listing subscriptions")
            {
                let depth = backends.queue.depth(&s.name).await.expect("queue depth");
                out.push((s.name, depth));
            }
            out
        })
    }

    /// The dead letters of subscription `queue`.
    pub fn dead_letters(&self, queue: &str) -> Vec<troupe_core::DeadLetter> {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            backends
                .dead_letters
                .dead_letters(queue, 100)
                .await
                .expect("listing dead letters")
        })
    }

    /// Subscription `queue`'s depth.
    pub fn depth(&self, queue: &str) -> troupe_core::Depth {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            backends.queue.depth(queue).await.expect("queue depth")
        })
    }

    /// Deletes an object from the bucket (not through the API).
    pub fn delete_object(&self, key: &str) {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            backends
                .blobs
                .delete("documents", key)
                .await
                .expect("deleting an object");
        })
    }

    /// Vectors stored for a document of the default tenant.
    pub fn vector_count(&self, document: &str) -> usize {
        self.tenant_vector_count("default", document)
    }

    /// Vectors stored for a document of `tenant`.
    pub fn tenant_vector_count(&self, tenant: &str, document: &str) -> usize {
        runtime().block_on(async {
            let backends = self.opened().await.backends(None);
            backends
                .vectors
                .count(tenant, document)
                .await
                .expect("counting vectors")
        })
    }
}
