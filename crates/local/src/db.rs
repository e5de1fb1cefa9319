//! The SQLite database under the data directory: opening, pragmas, schema, and running
//! blocking calls off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use troupe_core::{Error, Result};

/// How hard SQLite works to keep committed data across crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced; survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL` in WAL: survives process crashes, may lose the last
    /// commits on power loss.
    Normal,
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    subject_prefix TEXT,
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_topics (
    topic TEXT NOT NULL,
    subscription TEXT NOT NULL,
    PRIMARY KEY (topic, subscription)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscription_topics_subscription
    ON subscription_topics(subscription);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    body BLOB NOT NULL,
    visible_at INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    enqueued_at INTEGER NOT NULL,
    last_error TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    dead_at INTEGER
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, dead, visible_at, seq);
CREATE TABLE IF NOT EXISTS dedupe (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_seen (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified_ns INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk_vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    document TEXT NOT NULL,
    chunk TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (tenant, document, chunk, model)
);
CREATE TABLE IF NOT EXISTS vector_tombstones (
    tenant TEXT NOT NULL,
    document TEXT NOT NULL,
    deleted_at INTEGER,
    PRIMARY KEY (tenant, document)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vector_deletes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT OR IGNORE INTO vector_deletes (id, generation) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS vector_delete_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    row_id INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_log (
    subject TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (subject, seq),
    UNIQUE (subject, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_feed (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_feed_tenant ON event_feed(tenant, position);
CREATE INDEX IF NOT EXISTS event_feed_subject ON event_feed(subject);
";

/// Adds a column a table gained after its first release, when an older database
/// lacks it.
fn add_column(conn: &Connection, table: &str, column: &str, ty: &str) -> rusqlite::Result<()> {
    let present: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    if present {
        return Ok(());
    }
    match conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")) {
        // Another process added it meanwhile.
        Err(e) if e.to_string().contains("duplicate column name") => Ok(()),
        other => other,
    }
}

/// Databases from before topic lists kept one topic per subscription in
/// `subscriptions.topic`: moves it to `subscription_topics` and drops the column, in
/// one transaction (a second process opening the same old database waits, then finds
/// nothing to do).
fn move_subscription_topics(conn: &Connection) -> rusqlite::Result<()> {
    let has_topic = |conn: &Connection| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('subscriptions') WHERE name = 'topic'",
            [],
            |r| r.get(0),
        )
    };
    if !has_topic(conn)? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let moved = (|| {
        if has_topic(conn)? {
            conn.execute_batch(
                "INSERT OR IGNORE INTO subscription_topics (topic, subscription)
                   SELECT topic, name FROM subscriptions WHERE topic <> '';
                 DROP INDEX IF EXISTS subscriptions_topic;
                 ALTER TABLE subscriptions DROP COLUMN topic;",
            )?;
        }
        Ok(())
    })();
    match moved {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

enum OpenError {
    Busy(rusqlite::Error),
    Other(Error),
}

/// The database: one writer thread that commits concurrent writes together (group
/// commit: one fsync for many callers), and a connection for reads.
#[derive(Clone)]
pub struct Db {
    /// Read-only work runs here on the blocking pool; WAL lets it proceed while the
    /// writer commits.
    reader: Arc<Mutex<Connection>>,
    /// Write jobs for the writer thread.
    writer: std::sync::mpsc::Sender<Job>,
}

/// Called with the group's commit result once the group is committed (or not).
type Finish = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
/// One caller's write: runs inside the group transaction under a savepoint; says
/// whether it succeeded (else its savepoint is rolled back) and how to answer.
/// Given no connection, the write was not run (the transaction could not begin).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// Writes committed together at most.
const MAX_GROUP: usize = 256;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Runs one statement through the connection's statement cache: parsing it again on
/// every write was a fifth of the writer thread's CPU in the pipeline bench.
pub(crate) fn exec<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// Runs a statement that takes no parameters through the statement cache.
fn run(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    exec(c, sql, []).map(|_| ())
}

pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::backend("sqlite", e)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Db {
    /// Opens (creating if needed) `path` in WAL mode and applies the schema.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        // Another process may be creating or recovering the same database: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::try_open(path, durability) {
                Err(OpenError::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(OpenError::Busy(e)) => {
                    return Err(Error::Backend {
                        backend: "sqlite",
                        cause: format!(
                            "opening {}: still locked by another process after 10 s: {e}",
                            path.display()
                        )
                        .into(),
                    });
                }
                Err(OpenError::Other(e)) => return Err(e),
                Ok(writer) => {
                    let reader = Self::try_open(path, durability).map_err(|e| match e {
                        OpenError::Busy(e) => sql(e),
                        OpenError::Other(e) => e,
                    })?;
                    return Self::start(writer, reader);
                }
            }
        }
    }

    fn start(writer: Connection, reader: Connection) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("troupe-sqlite-writer".into())
            .spawn(move || write_loop(&writer, &rx))
            .map_err(|e| Error::backend("sqlite", e))?;
        Ok(Self {
            reader: Arc::new(Mutex::new(reader)),
            writer: tx,
        })
    }

    fn try_open(path: &Path, durability: Durability) -> Result<Connection, OpenError> {
        let busy = |e: rusqlite::Error| {
            if is_busy(&e) {
                OpenError::Busy(e)
            } else {
                OpenError::Other(sql(e))
            }
        };
        let conn = Connection::open(path).map_err(|e| {
            OpenError::Other(Error::Backend {
                backend: "sqlite",
                cause: format!("opening {}: {e}", path.display()).into(),
            })
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(busy)?;
        // Every statement the stores run, parsed once.
        conn.set_prepared_statement_cache_capacity(256);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(busy)?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(busy)?;
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(busy)?;
        conn.execute_batch(SCHEMA).map_err(busy)?;
        // When a tombstone was laid (ms since the epoch; NULL: before this was kept,
        // and then it is kept for good), so that old ones can be purged.
        add_column(&conn, "vector_tombstones", "deleted_at", "INTEGER").map_err(busy)?;
        // The `vector_delete_log` entries up to this seq are gone (vectors.rs).
        add_column(
            &conn,
            "vector_deletes",
            "log_pruned",
            "INTEGER NOT NULL DEFAULT 0",
        )
        .map_err(busy)?;
        move_subscription_topics(&conn).map_err(busy)?;
        Ok(conn)
    }

    /// Runs read-only `f` on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&guard)
        })
        .await
        .map_err(|e| Error::backend("sqlite", e))?
    }

    /// [`Self::read`] for a lookup by key (one indexed row): runs on the calling thread
    /// when the read connection is free, which spares a hop to the blocking pool and
    /// back (its wake-ups were a fifth of the host threads' CPU in the pipeline bench);
    /// when another read holds it (a long one, like a vector shard's reload), it
    /// waits on the blocking pool as [`Self::read`] does, never on an async thread.
    pub async fn lookup<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let f = match self.reader.try_lock() {
            Ok(guard) => return f(&guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return f(&p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => f,
        };
        self.read(f).await
    }

    /// Runs `f` inside a write transaction shared with whatever other writes are
    /// pending; its changes are rolled back alone if it fails, and its result is
    /// returned only once the transaction is durably committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(Error::backend(
                    "sqlite",
                    "could not begin a write transaction",
                )),
            };
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = tx.send(match (result, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(Error::backend("sqlite", format!("commit failed: {e}"))),
                    (Err(e), _) => Err(e),
                });
            });
            (ok, finish)
        });
        self.writer
            .send(job)
            .map_err(|_| Error::backend("sqlite", "the writer thread has stopped"))?;
        let dropped =
            || Error::backend("sqlite", "the writer thread dropped a write (it panicked)");
        if waits_on_pool() {
            // Waited on the blocking pool, not as a bare future: tokio then knows work
            // is in flight, and a paused clock does not skip ahead while it commits.
            tokio::task::spawn_blocking(move || rx.blocking_recv().map_err(|_| dropped())?)
                .await
                .map_err(|e| Error::backend("sqlite", e))?
        } else {
            rx.await.map_err(|_| dropped())?
        }
    }
}

/// Whether a write's caller waits for the commit on the blocking pool: only on a
/// current-thread runtime, the only kind whose clock can be paused (tests). A
/// multi-thread runtime (`troupe up`) awaits the writer's answer directly, sparing two
/// thread wake-ups per write.
fn waits_on_pool() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// The writer thread: takes every pending write, runs each under its own savepoint in
/// one IMMEDIATE transaction, commits once, then answers every caller.
fn write_loop(conn: &Connection, rx: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
            tracing::warn!(error = %e, "could not begin a write transaction");
            for job in jobs {
                let (_, finish) = job(None);
                finish(Err(e.to_string()));
            }
            continue;
        }
        let mut finishers = Vec::with_capacity(jobs.len());
        // Set when SQLite rolled the whole transaction back under us (disk full, I/O
        // error): nothing of this group is kept, so nobody may be told otherwise.
        let mut lost: Option<String> = None;
        for job in jobs {
            if lost.is_some() || run(conn, "SAVEPOINT job").is_err() {
                let (_, finish) = job(None);
                finishers.push(finish);
                continue;
            }
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Some(conn))));
            let ok = matches!(&outcome, Ok((true, _)));
            if conn.is_autocommit() {
                lost = Some("SQLite rolled back the write transaction".into());
            } else {
                let end = if ok {
                    run(conn, "RELEASE job")
                } else {
                    run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"))
                };
                if let Err(e) = end {
                    lost = Some(format!("ending a savepoint failed: {e}"));
                }
            }
            if let Ok((_, finish)) = outcome {
                finishers.push(finish);
            }
        }
        let committed = match lost {
            Some(why) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(why)
            }
            None => run(conn, "COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            }),
        };
        for finish in finishers {
            finish(committed.clone());
        }
    }
}
