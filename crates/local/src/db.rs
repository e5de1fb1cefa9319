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
    topic TEXT NOT NULL,
    subject_prefix TEXT,
    policy TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS subscriptions_topic ON subscriptions(topic);
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
";

enum OpenError {
    Busy(rusqlite::Error),
    Other(Error),
}

/// A shared SQLite connection; calls run on the blocking pool.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::backend("sqlite", e)
}

/// Begins a write transaction, taking the write lock up front so that another
/// process's writer makes it wait (busy timeout) instead of failing on upgrade.
pub(crate) fn immediate(c: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)
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
                        source: format!(
                            "opening {}: still locked by another process after 10 s: {e}",
                            path.display()
                        )
                        .into(),
                    });
                }
                Err(OpenError::Other(e)) => return Err(e),
                Ok(db) => return Ok(db),
            }
        }
    }

    fn try_open(path: &Path, durability: Durability) -> Result<Self, OpenError> {
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
                source: format!("opening {}: {e}", path.display()).into(),
            })
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(busy)?;
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::backend("sqlite", e))?
    }
}
