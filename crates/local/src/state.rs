//! Versioned key-value state and the per-subject event log, in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use troupe_core::state::{check_key, feed_tenant, prefix_end};
use troupe_core::{Entry, Error, Event, FeedEntry, Result, State};

use crate::db::{Db, sql};

/// SQLite-backed [`State`].
#[derive(Debug, Clone)]
pub struct SqliteState {
    pub(crate) db: Db,
}

impl SqliteState {
    /// State over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// The keys in `[?1, ?2)`: those under a prefix, as a primary-key range.
const LIST_RANGE: &str = "SELECT key FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key";
/// The keys from `?1` on (a prefix without an upper bound).
const LIST_FROM: &str = "SELECT key FROM kv WHERE key >= ?1 ORDER BY key";

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl State for SqliteState {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let key = key.to_owned();
        self.db
            .lookup(move |c| {
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
                crate::db::exec(
                    tx,
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
        let (start, end) = (prefix.to_owned(), prefix_end(prefix));
        self.db
            .read(move |c| {
                // A range on the primary key, never a function of it: the cost is the
                // keys under the prefix, not every key ever written.
                let mut stmt = c
                    .prepare_cached(if end.is_some() { LIST_RANGE } else { LIST_FROM })
                    .map_err(sql)?;
                let key = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
                match &end {
                    Some(end) => stmt
                        .query_map(params![start, end], key)
                        .and_then(Iterator::collect),
                    None => stmt
                        .query_map(params![start], key)
                        .and_then(Iterator::collect),
                }
                .map_err(sql)
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
                crate::db::exec(
                    tx,
                    "INSERT INTO event_log (subject, seq, id, event) VALUES (?1, ?2, ?3, ?4)",
                    params![subject, seq, id, json],
                )
                .map_err(sql)?;
                // One writer at a time: positions are handed out in commit order.
                if let Some(tenant) = feed_tenant(&subject) {
                    crate::db::exec(
                        tx,
                        "INSERT INTO event_feed (tenant, subject, id) VALUES (?1, ?2, ?3)",
                        params![tenant, subject, id],
                    )
                    .map_err(sql)?;
                }
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

    async fn delete_events(&self, subject: &str) -> Result<u64> {
        check_key(subject)?;
        let subject = subject.to_owned();
        self.db
            .write(move |tx| {
                let n = tx
                    .execute("DELETE FROM event_log WHERE subject = ?1", [&subject])
                    .map_err(sql)?;
                crate::db::exec(tx, "DELETE FROM event_feed WHERE subject = ?1", [&subject])
                    .map_err(sql)?;
                Ok(n as u64)
            })
            .await
    }

    async fn read_feed(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let tenant = tenant.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT f.position, f.subject, l.event FROM event_feed f
                         JOIN event_log l ON l.subject = f.subject AND l.id = f.id
                         WHERE f.tenant = ?1 AND f.position > ?2
                         ORDER BY f.position LIMIT ?3",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![tenant, after, limit], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                        ))
                    })
                    .map_err(sql)?;
                let mut out = Vec::new();
                for row in rows {
                    let (position, subject, event) = row.map_err(sql)?;
                    out.push(FeedEntry {
                        position: version(position),
                        subject,
                        event: Event::from_json(&event)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn feed_head(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_owned();
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT COALESCE(MAX(position), 0) FROM event_feed WHERE tenant = ?1",
                    [&tenant],
                    |r| r.get::<_, i64>(0),
                )
                .map(version)
                .map_err(sql)
            })
            .await
    }

    async fn health(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SqliteState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), crate::Durability::Normal).expect("open");
        (dir, SqliteState::new(db))
    }

    #[tokio::test]
    async fn listing_a_prefix_searches_the_primary_key() {
        let (_dir, st) = open();
        let plan = |sql: &'static str, args: &'static [&'static str]| {
            st.db.read(move |c| {
                let mut stmt = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                    .map_err(sql_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_err)
            })
        };
        let steps = plan(LIST_RANGE, &["doc/", "doc0"])
            .await
            .expect("plan")
            .join("; ");
        assert!(
            steps.contains("SEARCH kv USING PRIMARY KEY (key>? AND key<?)"),
            "{steps}"
        );
        let steps = plan(LIST_FROM, &["doc/"]).await.expect("plan").join("; ");
        assert!(
            steps.contains("SEARCH kv USING PRIMARY KEY (key>?)"),
            "{steps}"
        );
    }

    fn sql_err(e: rusqlite::Error) -> Error {
        sql(e)
    }

    #[tokio::test]
    async fn listing_returns_exactly_the_keys_under_the_prefix() {
        let (_dir, st) = open();
        for key in [
            "doc",
            "doc/",
            "doc/a",
            "doc/\u{10FFFF}",
            "doc0",
            "doc.",
            "docx",
            "active/a",
        ] {
            st.put(key, b"1", None).await.expect("put");
        }
        assert_eq!(
            st.list("doc/").await.expect("list"),
            ["doc/", "doc/a", "doc/\u{10FFFF}"]
        );
        assert_eq!(st.list("").await.expect("list").len(), 8);
        assert_eq!(st.list("zz").await.expect("list"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn deleting_a_log_removes_that_subject_only() {
        let (_dir, st) = open();
        let event = |id: &str| {
            let mut e = Event::new("test", "t.v1", &serde_json::json!({}));
            e.id = id.into();
            e
        };
        st.append_event("t/a", &event("1")).await.expect("append");
        st.append_event("t/a", &event("2")).await.expect("append");
        st.append_event("t/ab", &event("1")).await.expect("append");
        assert_eq!(st.delete_events("t/a").await.expect("delete"), 2);
        assert!(st.read_events("t/a").await.expect("read").is_empty());
        assert_eq!(st.read_events("t/ab").await.expect("read").len(), 1);
        assert_eq!(st.delete_events("t/a").await.expect("delete"), 0);
    }
}
