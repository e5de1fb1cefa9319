//! Versioned key-value state and the per-subject event log.

use async_trait::async_trait;
use troupe_core::state::{check_key, feed_tenant, prefix_end};
use troupe_core::{Entry, Error, Event, FeedEntry, Result, State};

use crate::{Pg, db};

/// [`State`] on Postgres.
#[derive(Debug, Clone)]
pub struct PgState {
    pg: Pg,
}

impl PgState {
    /// State in `pg`'s database.
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }
}

/// The keys in `[$1, $2)`: those under a prefix, as a primary-key range.
pub const LIST_RANGE: &str = "SELECT key FROM troupe_kv WHERE key >= $1 AND key < $2 ORDER BY key";
/// The keys from `$1` on (a prefix without an upper bound).
pub const LIST_FROM: &str = "SELECT key FROM troupe_kv WHERE key >= $1 ORDER BY key";

/// Rows removed per statement by [`PgState::purge_expired`], so one purge never holds
/// a long transaction.
const PURGE_BATCH: i64 = 5_000;

impl PgState {
    /// Deletes the keys under `prefix` whose value starts with a decimal deadline in
    /// ms since the epoch (the queue's dedupe claims: `<until_ms>[ …]`) that is at or
    /// before `before_ms`; a value that does not start with digits is kept. Returns
    /// how many went.
    pub async fn purge_expired(&self, prefix: &str, before_ms: u64) -> Result<u64> {
        let c = self.pg.client().await?;
        let end = prefix_end(prefix).unwrap_or_else(|| "\u{10FFFF}".repeat(2));
        let before = signed(before_ms);
        let mut total = 0;
        loop {
            let n = c
                .execute(
                    "DELETE FROM troupe_kv WHERE key IN (
                        SELECT key FROM troupe_kv
                        WHERE key >= $1 AND key < $2
                          AND substring(encode(value, 'escape') from '^[0-9]{1,18}')::bigint <= $3
                        LIMIT $4)",
                    &[&prefix, &end, &before, &PURGE_BATCH],
                )
                .await
                .map_err(db)?;
            total += n;
            if n < PURGE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl State for PgState {
    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_kv", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_kv"))]
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let c = self.pg.client().await?;
        let row = c
            .query_opt(
                "SELECT value, version FROM troupe_kv WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| Entry {
            value: r.get(0),
            version: version(r.get(1)),
        }))
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "UPSERT troupe_kv", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPSERT", db.collection.name = "troupe_kv"))]

    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64> {
        check_key(key)?;
        let c = self.pg.client().await?;
        let written = match expected {
            None => c
                .query_opt(
                    "INSERT INTO troupe_kv (key, value, version) VALUES ($1, $2, 1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = troupe_kv.version + 1
                     RETURNING version",
                    &[&key, &value],
                )
                .await,
            Some(0) => c
                .query_opt(
                    "INSERT INTO troupe_kv (key, value, version) VALUES ($1, $2, 1)
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                    &[&key, &value],
                )
                .await,
            Some(v) => c
                .query_opt(
                    "UPDATE troupe_kv SET value = $2, version = version + 1
                     WHERE key = $1 AND version = $3 RETURNING version",
                    &[&key, &value, &signed(v)],
                )
                .await,
        }
        .map_err(db)?;
        if let Some(row) = written {
            return Ok(version(row.get(0)));
        }
        let found = c
            .query_opt("SELECT version FROM troupe_kv WHERE key = $1", &[&key])
            .await
            .map_err(db)?
            .map_or(0, |r| version(r.get(0)));
        Err(Error::Conflict {
            key: key.to_owned(),
            expected: expected.unwrap_or(0),
            found,
        })
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "DELETE troupe_kv", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "troupe_kv"))]

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<bool> {
        check_key(key)?;
        let c = self.pg.client().await?;
        let deleted = match expected {
            None => c
                .execute("DELETE FROM troupe_kv WHERE key = $1", &[&key])
                .await
                .map_err(db)?,
            Some(0) => 0,
            Some(v) => c
                .execute(
                    "DELETE FROM troupe_kv WHERE key = $1 AND version = $2",
                    &[&key, &signed(v)],
                )
                .await
                .map_err(db)?,
        };
        if deleted == 1 || expected.is_none() {
            return Ok(deleted == 1);
        }
        let found = c
            .query_opt("SELECT version FROM troupe_kv WHERE key = $1", &[&key])
            .await
            .map_err(db)?
            .map_or(0, |r| version(r.get(0)));
        match expected {
            // Expected absent and it is: nothing to delete.
            Some(0) if found == 0 => Ok(false),
            _ => Err(Error::Conflict {
                key: key.to_owned(),
                expected: expected.unwrap_or(0),
                found,
            }),
        }
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_kv", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_kv"))]

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let c = self.pg.client().await?;
        // A range on the primary key (`COLLATE "C"`: byte order), never a function of
        // it: the cost is the keys under the prefix, not every key ever written.
        let rows = match prefix_end(prefix) {
            Some(end) => c.query(LIST_RANGE, &[&prefix, &end]).await,
            None => c.query(LIST_FROM, &[&prefix]).await,
        }
        .map_err(db)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "INSERT troupe_events", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "troupe_events"))]

    async fn append_event(&self, subject: &str, event: &Event) -> Result<u64> {
        check_key(subject)?;
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // One appender per subject at a time: sequence numbers without gaps.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('troupe-events/' || $1, 0))",
            &[&subject],
        )
        .await
        .map_err(db)?;
        if let Some(row) = tx
            .query_opt(
                "SELECT seq FROM troupe_events WHERE subject = $1 AND id = $2",
                &[&subject, &event.id],
            )
            .await
            .map_err(db)?
        {
            return Ok(version(row.get(0)));
        }
        let row = tx
            .query_one(
                "INSERT INTO troupe_events (subject, seq, id, body)
                 SELECT $1, coalesce(max(seq), 0) + 1, $2, $3 FROM troupe_events WHERE subject = $1
                 RETURNING seq",
                &[&subject, &event.id, &event.to_json()],
            )
            .await
            .map_err(db)?;
        if let Some(tenant) = feed_tenant(subject) {
            // One appender per tenant until commit: a reader that saw position `p`
            // never finds a smaller one committed later.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('troupe-feed/' || $1, 0))",
                &[&tenant],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "INSERT INTO troupe_event_feed (tenant, position, subject, id)
                 SELECT $1, coalesce(max(position), 0) + 1, $2, $3
                 FROM troupe_event_feed WHERE tenant = $1",
                &[&tenant, &subject, &event.id],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(version(row.get(0)))
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_events", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_events"))]

    async fn read_events(&self, subject: &str) -> Result<Vec<Event>> {
        let c = self.pg.client().await?;
        let rows = c
            .query(
                "SELECT body FROM troupe_events WHERE subject = $1 ORDER BY seq",
                &[&subject],
            )
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|r| Event::from_json(&r.get::<_, Vec<u8>>(0)))
            .collect()
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "DELETE troupe_events", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "troupe_events"))]

    async fn delete_events(&self, subject: &str) -> Result<u64> {
        check_key(subject)?;
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let n = tx
            .execute("DELETE FROM troupe_events WHERE subject = $1", &[&subject])
            .await
            .map_err(db)?;
        tx.execute(
            "DELETE FROM troupe_event_feed WHERE subject = $1",
            &[&subject],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_event_feed", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_event_feed"))]
    async fn read_feed(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let c = self.pg.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                "SELECT f.position, f.subject, e.body FROM troupe_event_feed f
                 JOIN troupe_events e ON e.subject = f.subject AND e.id = f.id
                 WHERE f.tenant = $1 AND f.position > $2
                 ORDER BY f.position LIMIT $3",
                &[&tenant, &signed(after), &limit],
            )
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(FeedEntry {
                    position: version(r.get(0)),
                    subject: r.get(1),
                    event: Event::from_json(&r.get::<_, Vec<u8>>(2))?,
                })
            })
            .collect()
    }

    async fn feed_head(&self, tenant: &str) -> Result<u64> {
        let c = self.pg.client().await?;
        let row = c
            .query_one(
                "SELECT coalesce(max(position), 0) FROM troupe_event_feed WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        Ok(version(row.get(0)))
    }

    async fn health(&self) -> Result<()> {
        self.pg.health().await
    }
}
