//! Vectors in SQLite (`chunk_vectors`: little-endian f32 blobs, unique on tenant,
//! document, chunk and model), searched exactly over an in-memory copy.
//!
//! The copy holds, per (tenant, model), the row ids and one contiguous matrix of
//! vectors; texts stay in SQLite and are read only for the hits. It follows the
//! table without being told: each search first loads rows with ids above the last
//! one it holds, and a delete bumps `vector_deletes.generation`, which makes the next
//! search reload. So another process (a separate `troupe worker`) may write the same
//! database. Row ids are never reused (`AUTOINCREMENT`), and the generation and the
//! new rows are read in one transaction, so the copy never pairs a vector with
//! another row's text.
//!
//! A deleted document is tombstoned: vectors a late job writes for it are dropped.
//!
//! Search is exact: [`scan`] reads int8 codes of every vector with an error bound and
//! rescores in f32 only the rows that can reach the top k (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use rusqlite::{Connection, params};
use troupe_core::{Error, Hit, Result, VectorRecord, Vectors};

use crate::db::{Db, sql};

mod scan;

/// SQLite-backed [`Vectors`].
#[derive(Debug, Clone)]
pub struct SqliteVectors {
    db: Db,
    index: Arc<RwLock<Index>>,
}

/// The in-memory copy.
#[derive(Debug, Default)]
struct Index {
    /// `vector_deletes.generation` the shards were loaded at.
    generation: i64,
    shards: HashMap<(String, String), Shard>,
}

/// One tenant's vectors of one model.
#[derive(Debug, Default)]
struct Shard {
    rows: scan::Rows,
    /// The highest row id loaded.
    loaded_upto: i64,
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

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Appends rows newer than the shard holds; rows of another width are skipped.
fn load_new(c: &Connection, tenant: &str, model: &str, shard: &mut Shard) -> Result<()> {
    let mut stmt = c
        .prepare_cached(
            // `+` keeps SQLite on the row-id range (new rows only) instead of the
            // (tenant, …) index, which would visit every row of the tenant.
            "SELECT id, vector FROM chunk_vectors WHERE id > ?1 AND +tenant = ?2 AND +model = ?3 ORDER BY id",
        )
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![shard.loaded_upto, tenant, model])
        .map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let id: i64 = row.get(0).map_err(sql)?;
        let blob = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| Error::backend("sqlite", e))?;
        shard.loaded_upto = id;
        if blob.len() % 4 != 0 {
            continue;
        }
        let v: Vec<f32> = blob
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // A row of another width than the shard's first is not searchable.
        shard.rows.push(id, &v);
    }
    Ok(())
}

fn generation(c: &Connection) -> Result<i64> {
    c.query_row(
        "SELECT generation FROM vector_deletes WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .map_err(sql)
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
                c.execute(
                    "INSERT OR IGNORE INTO vector_tombstones (tenant, document, deleted_at)
                     VALUES (?1, ?2, ?3)",
                    params![t, d, now],
                )
                .map_err(sql)?;
                let n = c
                    .execute(
                        "DELETE FROM chunk_vectors WHERE tenant = ?1 AND document = ?2",
                        params![t, d],
                    )
                    .map_err(sql)?;
                if n > 0 {
                    c.execute(
                        "UPDATE vector_deletes SET generation = generation + 1 WHERE id = 1",
                        [],
                    )
                    .map_err(sql)?;
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
        let (index, q) = (self.index.clone(), query.to_vec());
        // Catch up with the table (on the database's reader), then scan off it.
        let (idx, k2) = (index.clone(), key.clone());
        self.db
            .read(move |c| {
                // One snapshot for the generation and the rows.
                let tx = c.unchecked_transaction().map_err(sql)?;
                let generation = generation(&tx)?;
                let mut guard = idx.write().map_err(|_| poisoned())?;
                if guard.generation != generation {
                    guard.shards.clear();
                    guard.generation = generation;
                }
                let shard = guard.shards.entry(k2.clone()).or_default();
                load_new(&tx, &k2.0, &k2.1, shard)
            })
            .await?;
        let best = tokio::task::spawn_blocking(move || {
            let guard = index.read().map_err(|_| poisoned())?;
            Ok::<_, Error>(
                guard
                    .shards
                    .get(&key)
                    .map(|s| s.rows.top_k(&q, k))
                    .unwrap_or_default(),
            )
        })
        .await
        .map_err(|e| Error::backend("vectors", e))??;
        if best.is_empty() {
            return Ok(Vec::new());
        }
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT document, chunk, text FROM chunk_vectors WHERE id = ?1")
                    .map_err(sql)?;
                let mut hits = Vec::with_capacity(best.len());
                for (score, id) in best {
                    // A row deleted since the scan is simply not a hit any more.
                    if let Some(hit) = stmt
                        .query_row([id], |r| {
                            Ok(Hit {
                                document: r.get(0)?,
                                chunk: r.get(1)?,
                                score,
                                text: r.get(2)?,
                            })
                        })
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(sql(e)),
                        })?
                    {
                        hits.push(hit);
                    }
                }
                Ok(hits)
            })
            .await
    }

    async fn health(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }
}

fn poisoned() -> Error {
    Error::backend("vectors", "the in-memory index lock is poisoned")
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
