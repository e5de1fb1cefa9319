//! Inspecting and redriving dead letters.

use async_trait::async_trait;
use rusqlite::params;
use troupe_core::{DeadLetter, DeadLetters, Result};

use super::{SqliteQueue, now};
use crate::db::sql;

#[async_trait]
impl DeadLetters for SqliteQueue {
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.policy(queue).await?;
        let name = queue.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT id, reason, last_error, deliveries, dead_at, body FROM messages
                         WHERE queue = ?1 AND dead = 1 ORDER BY dead_at, seq LIMIT ?2",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![name, limit], |r| {
                        Ok(DeadLetter {
                            id: r.get(0)?,
                            reason: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            last_error: r.get(2)?,
                            deliveries: r.get(3)?,
                            dead_at_ms: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                            body: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(5)?).into_owned(),
                        })
                    })
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)
            })
            .await
    }

    async fn redrive(&self, queue: &str) -> Result<usize> {
        self.policy(queue).await?;
        let name = queue.to_owned();
        let now = now(&*self.clock);
        let n = self
            .db
            .write(move |c| {
                crate::db::exec(
                    c,
                    "UPDATE messages SET dead = 0, reason = NULL, dead_at = NULL, deliveries = 0,
                       lease = NULL, visible_at = ?2
                     WHERE queue = ?1 AND dead = 1",
                    params![name, now],
                )
                .map_err(sql)
            })
            .await?;
        self.wake(&[queue.to_owned()]);
        Ok(n)
    }
}
