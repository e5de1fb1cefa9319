//! Versioned key-value state and the per-subject event log, in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use troupe_core::state::check_key;
use troupe_core::{Entry, Error, Event, Result, State};

use crate::db::{Db, sql};

/// SQLite-backed [`State`].
#[derive(Debug, Clone)]
pub struct SqliteState {
    db: Db,
}

impl SqliteState {
    /// State over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl State for SqliteState {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let key = key.to_owned();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT value, version FROM kv WHERE key = ?1",
                    [&key],
                    |r| {
                        Ok(Entry {
                            value: r.get(0)?,
                            version: version(r.get(1)?),
                        })
                    },
                )
                .optional()
                .map_err(sql)
            })
            .await
    }

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64> {
        check_key(key)?;
        let (key, value) = (key.to_owned(), value.to_vec());
        self.db
            .write(move |tx| {
                let found: u64 = tx
                    .query_row("SELECT version FROM kv WHERE key = ?1", [&key], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(sql)?
                    .map_or(0, version);
                if let Some(expected) = expected
                    && expected != found
                {
                    return Err(Error::Conflict { key, expected, found });
                }
                let next = found + 1;
                tx.execute(
                    "INSERT INTO kv (key, value, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
                    params![key, value, i64::try_from(next).unwrap_or(i64::MAX)],
                )
                .map_err(sql)?;
                Ok(next)
            })
            .await
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<bool> {
        check_key(key)?;
        let key = key.to_owned();
        self.db
            .write(move |tx| {
                let found: u64 = tx
                    .query_row("SELECT version FROM kv WHERE key = ?1", [&key], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()
                    .map_err(sql)?
                    .map_or(0, version);
                if let Some(expected) = expected
                    && expected != found
                {
                    return Err(Error::Conflict {
                        key,
                        expected,
                        found,
                    });
                }
                let n = tx
                    .execute("DELETE FROM kv WHERE key = ?1", [&key])
                    .map_err(sql)?;
                Ok(n == 1)
            })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT key FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
                    )
                    .map_err(sql)?;
                let rows = stmt.query_map([&prefix], |r| r.get(0)).map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)
            })
            .await
    }

    async fn append_event(&self, subject: &str, event: &Event) -> Result<u64> {
        check_key(subject)?;
        let subject = subject.to_owned();
        let (id, json) = (event.id.clone(), event.to_json());
        self.db
            .write(move |tx| {
                let existing: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM event_log WHERE subject = ?1 AND id = ?2",
                        params![subject, id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                if let Some(seq) = existing {
                    return Ok(version(seq));
                }
                let seq: i64 = tx
                    .query_row(
                        "SELECT COALESCE(MAX(seq), 0) + 1 FROM event_log WHERE subject = ?1",
                        [&subject],
                        |r| r.get(0),
                    )
                    .map_err(sql)?;
                tx.execute(
                    "INSERT INTO event_log (subject, seq, id, event) VALUES (?1, ?2, ?3, ?4)",
                    params![subject, seq, id, json],
                )
                .map_err(sql)?;
                Ok(version(seq))
            })
            .await
    }

    async fn read_events(&self, subject: &str) -> Result<Vec<Event>> {
        let subject = subject.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT event FROM event_log WHERE subject = ?1 ORDER BY seq")
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([&subject], |r| r.get::<_, Vec<u8>>(0))
                    .map_err(sql)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(Event::from_json(&row.map_err(sql)?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn health(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }
}
