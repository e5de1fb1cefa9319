//! Vectors in SQLite (`chunk_vectors`: little-endian f32 blobs, unique on tenant,
//! document, chunk and model), searched exactly over an in-memory copy.
//!
//! The copy ([`index`]) holds, per (tenant, model), the row ids and int8 codes of the
//! vectors; the f32 vectors and texts stay in SQLite and are read only for the rows
//! that can be hits. It follows the table without being told: each search first
//! reads rows with ids above the last one it holds, and the ids a delete removed
//! (`vector_delete_log`, written in the delete's transaction), which it marks dead in
//! place. So another process (a separate `troupe worker`) may write the same database,
//! and a delete costs the copy a bitmap update, not a reload. Row ids are never reused
//! (`AUTOINCREMENT`), and the marks, new rows and log are read in one transaction, so
//! the copy never pairs a vector with another row's text.
//!
//! A deleted document is tombstoned: vectors a late job writes for it are dropped.
//!
//! Search is exact: [`scan`] reads the int8 codes of every vector (the high nibbles
//! of all, the low ones of the rows those cannot rule out) with error bounds and
//! keeps the rows that can reach the top k, which are rescored from their f32
//! vectors, best bound first, until no bound left can beat the k-th (BENCHMARKS.md).
//!
//! # Layout
//!
//! - [`index`]: the shards and their catch-up with the table.
//! - [`scan`]: a shard's rows as int8 codes in segments; candidates and rescoring.
//! - [`kernel`]: the dot products of 4-bit row codes with int8 query codes, compiled
//!   for the CPU at hand.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;
use troupe_core::{Error, Hit, Result, VectorRecord, Vectors};

use crate::db::{Db, sql};

mod index;
mod kernel;
mod scan;

/// Delete-log entries kept: a copy that missed more deleted rows than this (it was
/// not searched meanwhile) loads its shard again.
const LOG_KEEP: i64 = 100_000;

/// SQLite-backed [`Vectors`].
#[derive(Debug, Clone)]
pub struct SqliteVectors {
    db: Db,
    index: Arc<index::Index>,
}

impl SqliteVectors {
    /// Vectors over `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            index: Arc::default(),
        }
    }
}

impl SqliteVectors {
    /// One catch-up, scan and rescoring; `None` if a candidate was deleted meanwhile
    /// (unless `last`).
    async fn search_once(
        &self,
        key: &index::Key,
        query: &[f32],
        k: usize,
        last: bool,
    ) -> Result<Option<Vec<Hit>>> {
        // Catch up with the table (on the database's reader), then scan off it.
        let position = self.index.position(key)?;
        let k2 = key.clone();
        let update = self
            .db
            .read(move |c| index::read_update(c, &k2, position))
            .await?;
        if let Some(update) = update {
            self.index.apply(key, update)?;
        }
        let snapshot = self.index.snapshot(key)?;
        let q = query.to_vec();
        let (candidates, q) = tokio::task::spawn_blocking(move || (snapshot.candidates(&q, k), q))
            .await
            .map_err(|e| Error::backend("vectors", e))?;
        if candidates.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.db
            .read(move |c| {
                // The vectors and the texts from one snapshot.
                let tx = c.unchecked_transaction().map_err(sql)?;
                let mut vector = tx
                    .prepare_cached("SELECT vector FROM chunk_vectors WHERE id = ?1")
                    .map_err(sql)?;
                let (mut v, mut gone) = (Vec::with_capacity(q.len()), false);
                let best = scan::rescore(&candidates, k, |id| {
                    let blob: Option<Vec<u8>> = optional(vector.query_row([id], |r| r.get(0)))?;
                    gone |= blob.is_none();
                    Ok::<_, Error>(
                        blob.filter(|b| index::from_le(b, &mut v) && v.len() == q.len())
                            .map(|_| scan::dot(&v, &q)),
                    )
                })?;
                if gone && !last {
                    return Ok(None);
                }
                let mut text = tx
                    .prepare_cached("SELECT document, chunk, text FROM chunk_vectors WHERE id = ?1")
                    .map_err(sql)?;
                let mut hits = Vec::with_capacity(best.len());
                for (score, id) in best {
                    hits.push(
                        text.query_row([id], |r| {
                            Ok(Hit {
                                document: r.get(0)?,
                                chunk: r.get(1)?,
                                score,
                                text: r.get(2)?,
                            })
                        })
                        .map_err(sql)?,
                    );
                }
                Ok(Some(hits))
            })
            .await
    }
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[async_trait]
impl Vectors for SqliteVectors {
    async fn upsert(&self, records: &[VectorRecord]) -> Result<usize> {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.tenant.clone(),
                    r.document.clone(),
                    r.chunk.clone(),
                    r.model.clone(),
                    to_blob(&r.vector),
                    r.text.clone(),
                )
            })
            .collect();
        self.db
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "INSERT INTO chunk_vectors (tenant, document, chunk, model, vector, text)
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6
                         WHERE NOT EXISTS (SELECT 1 FROM vector_tombstones WHERE tenant = ?1 AND document = ?2)
                         ON CONFLICT (tenant, document, chunk, model) DO NOTHING",
                    )
                    .map_err(sql)?;
                let mut new = 0;
                for r in &rows {
                    new += stmt.execute(params![r.0, r.1, r.2, r.3, r.4, r.5]).map_err(sql)?;
                }
                Ok(new)
            })
            .await
    }

    async fn delete_document(&self, tenant: &str, document: &str) -> Result<usize> {
        let (t, d) = (tenant.to_owned(), document.to_owned());
        self.db
            .write(move |c| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                crate::db::exec(
                    c,
                    "INSERT OR IGNORE INTO vector_tombstones (tenant, document, deleted_at)
                     VALUES (?1, ?2, ?3)",
                    params![t, d, now],
                )
                .map_err(sql)?;
                // The row ids go to the log the in-memory copies catch up from.
                crate::db::exec(
                    c,
                    "INSERT INTO vector_delete_log (row_id, tenant, model)
                     SELECT id, tenant, model FROM chunk_vectors WHERE tenant = ?1 AND document = ?2",
                    params![t, d],
                )
                .map_err(sql)?;
                let n = c
                    .execute(
                        "DELETE FROM chunk_vectors WHERE tenant = ?1 AND document = ?2",
                        params![t, d],
                    )
                    .map_err(sql)?;
                if n > 0 {
                    // Versions before the log reload their copies on this.
                    crate::db::exec(
                        c,
                        "UPDATE vector_deletes SET generation = generation + 1 WHERE id = 1",
                        [],
                    )
                    .map_err(sql)?;
                    prune_log(c)?;
                }
                Ok(n)
            })
            .await
    }

    async fn count(&self, tenant: &str, document: &str) -> Result<usize> {
        let (t, d) = (tenant.to_owned(), document.to_owned());
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM chunk_vectors WHERE tenant = ?1 AND document = ?2",
                    params![t, d],
                    |r| r.get(0),
                )
                .map_err(sql)
            })
            .await
    }

    async fn search(&self, tenant: &str, model: &str, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        if query.is_empty() {
            return Err(Error::invalid("query", "empty vector"));
        }
        let key = (tenant.to_owned(), model.to_owned());
        // A candidate deleted between the scan and its rescoring may have set the
        // floor, so the answer could miss a row: search again, after the catch-up has
        // marked it. Only a search racing deletes each time runs out of tries, and
        // then answers with what it found.
        let mut attempt = 1;
        loop {
            if let Some(hits) = self.search_once(&key, query, k, attempt == 3).await? {
                return Ok(hits);
            }
            attempt += 1;
        }
    }

    async fn health(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }
}

/// A row that may be missing.
fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(sql(e)),
    }
}

/// Keeps the delete log at most 2 × [`LOG_KEEP`] entries long, recording how far it
/// was cut so that a copy behind that point reloads.
fn prune_log(c: &rusqlite::Connection) -> Result<()> {
    let (last, pruned): (i64, i64) = c
        .query_row(
            "SELECT COALESCE((SELECT MAX(seq) FROM vector_delete_log), 0), log_pruned
             FROM vector_deletes WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
    if last - pruned > 2 * LOG_KEEP {
        let upto = last - LOG_KEEP;
        crate::db::exec(c, "DELETE FROM vector_delete_log WHERE seq <= ?1", [upto]).map_err(sql)?;
        crate::db::exec(
            c,
            "UPDATE vector_deletes SET log_pruned = ?1 WHERE id = 1",
            [upto],
        )
        .map_err(sql)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(doc: &str, chunk: &str, v: Vec<f32>) -> VectorRecord {
        VectorRecord {
            tenant: "t".into(),
            document: doc.into(),
            chunk: chunk.into(),
            model: "m".into(),
            vector: v,
            text: format!("{doc}/{chunk}"),
        }
    }

    #[tokio::test]
    async fn search_follows_inserts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::Local::open(dir.path()).unwrap();
        let v = local.vectors.clone();
        v.upsert(&[
            record("a", "1", vec![1.0, 0.0]),
            record("b", "1", vec![0.0, 1.0]),
        ])
        .await
        .unwrap();
        let hits = v.search("t", "m", &[1.0, 0.0], 1).await.unwrap();
        assert_eq!(hits[0].document, "a");
        // A new, closer vector is seen by the next search.
        v.upsert(&[record("c", "1", vec![0.6, 0.8])]).await.unwrap();
        let hits = v.search("t", "m", &[0.6, 0.8], 2).await.unwrap();
        assert_eq!(
            hits.iter().map(|h| h.document.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
        // A second handle (another process's view) sees a delete made through this one.
        let other = SqliteVectors::new(local.queue.db().clone());
        other.search("t", "m", &[1.0, 0.0], 3).await.unwrap();
        assert_eq!(v.delete_document("t", "a").await.unwrap(), 1);
        let hits = other.search("t", "m", &[1.0, 0.0], 3).await.unwrap();
        assert!(hits.iter().all(|h| h.document != "a"), "{hits:?}");
        // Deleting is final: a late upsert of the document is dropped.
        assert_eq!(
            v.upsert(&[record("a", "2", vec![1.0, 0.0])]).await.unwrap(),
            0
        );
        assert_eq!(v.count("t", "a").await.unwrap(), 0);
        // Other tenants and models see nothing.
        assert!(v.search("u", "m", &[1.0, 0.0], 3).await.unwrap().is_empty());
        assert!(v.search("t", "n", &[1.0, 0.0], 3).await.unwrap().is_empty());
    }
}
