//! Vectors in SQLite: little-endian f32 blobs keyed by (tenant, document, chunk,
//! model); search is exact (a scan of the tenant's vectors for the model).

use async_trait::async_trait;
use rusqlite::params;
use troupe_core::{Error, Hit, Result, VectorRecord, Vectors};

use crate::db::{Db, sql};

/// SQLite-backed [`Vectors`].
#[derive(Debug, Clone)]
pub struct SqliteVectors {
    db: Db,
}

impl SqliteVectors {
    /// Vectors over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn dot(blob: &[u8], q: &[f32]) -> f32 {
    blob.chunks_exact(4)
        .zip(q)
        .map(|(b, y)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * y)
        .sum()
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
                        "INSERT INTO vectors (tenant, document, chunk, model, vector, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
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
                c.execute(
                    "DELETE FROM vectors WHERE tenant = ?1 AND document = ?2",
                    params![t, d],
                )
                .map_err(sql)
            })
            .await
    }

    async fn count(&self, tenant: &str, document: &str) -> Result<usize> {
        let (t, d) = (tenant.to_owned(), document.to_owned());
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM vectors WHERE tenant = ?1 AND document = ?2",
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
        let (t, m, q) = (tenant.to_owned(), model.to_owned(), query.to_vec());
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT document, chunk, vector, text FROM vectors WHERE tenant = ?1 AND model = ?2")
                    .map_err(sql)?;
                let mut rows = stmt.query(params![t, m]).map_err(sql)?;
                let mut hits: Vec<Hit> = Vec::new();
                while let Some(row) = rows.next().map_err(sql)? {
                    let blob: Vec<u8> = row.get(2).map_err(sql)?;
                    if blob.len() != q.len() * 4 {
                        continue;
                    }
                    let score = dot(&blob, &q);
                    if hits.len() == k && hits.last().is_some_and(|h| h.score >= score) {
                        continue;
                    }
                    hits.push(Hit { document: row.get(0).map_err(sql)?, chunk: row.get(1).map_err(sql)?, score, text: row.get(3).map_err(sql)? });
                    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
                    hits.truncate(k);
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
