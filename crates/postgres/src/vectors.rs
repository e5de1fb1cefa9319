//! Chunk vectors on pgvector: one table per dimension count (`troupe_vectors_<dims>`,
//! created on first use) with an HNSW cosine index; deletes leave a tombstone so a
//! late, redelivered job cannot bring a document's vectors back.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgvector::Vector;
use troupe_core::{Error, Hit, Result, VectorRecord, Vectors};

use crate::{Pg, db};

/// The longest vector stored (pgvector's HNSW indexes up to 2,000 dimensions).
const MAX_DIMS: usize = 2000;

/// [`Vectors`] on Postgres with pgvector.
#[derive(Debug, Clone)]
pub struct PgVectors {
    pg: Pg,
    tables: Arc<Mutex<HashSet<usize>>>,
}

fn table(dims: usize) -> String {
    format!("troupe_vectors_{dims}")
}

fn check_dims(dims: usize) -> Result<()> {
    if dims == 0 || dims > MAX_DIMS {
        return Err(Error::invalid(
            "vector",
            format!("{dims} dimensions; pgvector's index takes 1..={MAX_DIMS}"),
        ));
    }
    Ok(())
}

impl PgVectors {
    /// Deletes the tombstones laid before `before_ms` (ms since the epoch): no late
    /// job for those documents can arrive any more. Returns how many went.
    pub async fn purge_tombstones(&self, before_ms: u64) -> Result<u64> {
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let c = self.pg.client().await?;
        c.execute(
            "DELETE FROM troupe_vector_tombstones WHERE deleted_at < to_timestamp($1::bigint / 1000.0)",
            &[&before],
        )
        .await
        .map_err(db)
    }

    /// Vectors in `pg`'s database.
    pub fn new(pg: Pg) -> Self {
        Self {
            pg,
            tables: Arc::default(),
        }
    }

    /// The dimension counts that have a table.
    async fn known(&self) -> Result<Vec<usize>> {
        let c = self.pg.client().await?;
        let rows = c
            .query("SELECT dims FROM troupe_vector_tables ORDER BY dims", &[])
            .await
            .map_err(db)?;
        let dims: Vec<usize> = rows
            .iter()
            .filter_map(|r| usize::try_from(r.get::<_, i32>(0)).ok())
            .collect();
        self.tables
            .lock()
            .expect("tables")
            .extend(dims.iter().copied());
        Ok(dims)
    }

    async fn ensure(&self, dims: usize) -> Result<()> {
        check_dims(dims)?;
        if self.tables.lock().expect("tables").contains(&dims) {
            return Ok(());
        }
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock(7273_6576)", &[])
            .await
            .map_err(db)?;
        let t = table(dims);
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                tenant text NOT NULL,
                document text NOT NULL,
                chunk text NOT NULL,
                model text NOT NULL,
                embedding vector({dims}) NOT NULL,
                text text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant, document, chunk, model)
            );
            CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_cosine_ops);
            CREATE INDEX IF NOT EXISTS {t}_tenant_model ON {t} (tenant, model);
            INSERT INTO troupe_vector_tables (dims) VALUES ({dims}) ON CONFLICT DO NOTHING;"
        ))
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.tables.lock().expect("tables").insert(dims);
        Ok(())
    }
}

/// Serialises writers of one document's vectors (upserts against its delete).
const DOC_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('troupe-vectors/' || $1 || '/' || $2, 0))";

#[async_trait]
impl Vectors for PgVectors {
    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "UPSERT troupe_vectors", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPSERT", db.collection.name = "troupe_vectors"))]
    async fn upsert(&self, records: &[VectorRecord]) -> Result<usize> {
        let mut by_doc: BTreeMap<(&str, &str), Vec<&VectorRecord>> = BTreeMap::new();
        for r in records {
            if r.vector.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(
                    "vector",
                    format!(
                        "chunk {} of {} has a value that is not finite",
                        r.chunk, r.document
                    ),
                ));
            }
            self.ensure(r.vector.len()).await?;
            by_doc.entry((&r.tenant, &r.document)).or_default().push(r);
        }
        let mut c = self.pg.client().await?;
        let mut written = 0;
        for ((tenant, document), records) in by_doc {
            let tx = c.transaction().await.map_err(db)?;
            tx.execute(DOC_LOCK, &[&tenant, &document])
                .await
                .map_err(db)?;
            let gone = tx
                .query_opt(
                    "SELECT 1 FROM troupe_vector_tombstones WHERE tenant = $1 AND document = $2",
                    &[&tenant, &document],
                )
                .await
                .map_err(db)?
                .is_some();
            if gone {
                continue;
            }
            for r in records {
                let sql = format!(
                    "INSERT INTO {} (tenant, document, chunk, model, embedding, text)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    table(r.vector.len())
                );
                let v = Vector::from(r.vector.clone());
                written += tx
                    .execute(
                        &sql,
                        &[&r.tenant, &r.document, &r.chunk, &r.model, &v, &r.text],
                    )
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
        }
        Ok(usize::try_from(written).unwrap_or(usize::MAX))
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "DELETE troupe_vectors", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "troupe_vectors"))]

    async fn delete_document(&self, tenant: &str, document: &str) -> Result<usize> {
        let dims = self.known().await?;
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(DOC_LOCK, &[&tenant, &document])
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO troupe_vector_tombstones (tenant, document) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&tenant, &document],
        )
        .await
        .map_err(db)?;
        let mut deleted = 0;
        for d in dims {
            deleted += tx
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE tenant = $1 AND document = $2",
                        table(d)
                    ),
                    &[&tenant, &document],
                )
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_vectors", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_vectors"))]

    async fn count(&self, tenant: &str, document: &str) -> Result<usize> {
        let dims = self.known().await?;
        let c = self.pg.client().await?;
        let mut n = 0i64;
        for d in dims {
            n += c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {} WHERE tenant = $1 AND document = $2",
                        table(d)
                    ),
                    &[&tenant, &document],
                )
                .await
                .map_err(db)?
                .get::<_, i64>(0);
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, name = "postgres", fields(otel.name = "SELECT troupe_vectors", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "troupe_vectors"))]

    async fn search(&self, tenant: &str, model: &str, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        check_dims(query.len())?;
        if !self.tables.lock().expect("tables").contains(&query.len())
            && !self.known().await?.contains(&query.len())
        {
            return Ok(Vec::new());
        }
        let k = i64::try_from(k.min(1000)).unwrap_or(1000);
        let q = Vector::from(query.to_vec());
        let sql = format!(
            "SELECT document, chunk, (1 - (embedding <=> $3))::real, text FROM {}
             WHERE tenant = $1 AND model = $2 ORDER BY embedding <=> $3 LIMIT $4",
            table(query.len())
        );
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The HNSW scan yields ef_search candidates before the tenant filter. At 40
        // (pgvector's default) recall@10 was 0.57 on a million clustered vectors, at 100
        // 0.75 with p99 still under 25 ms (BENCHMARKS.md, "Search at a million chunks").
        tx.batch_execute(&format!(
            "SET LOCAL hnsw.ef_search = {}",
            (k * 10).clamp(100, 1000)
        ))
        .await
        .map_err(db)?;
        let hits = |rows: Vec<tokio_postgres::Row>| -> Vec<Hit> {
            rows.into_iter()
                .map(|r| Hit {
                    document: r.get(0),
                    chunk: r.get(1),
                    score: r.get(2),
                    text: r.get(3),
                })
                .collect()
        };
        let mut found = hits(
            tx.query(&sql, &[&tenant, &model, &q, &k])
                .await
                .map_err(db)?,
        );
        if i64::try_from(found.len()).unwrap_or(0) < k {
            // Fewer than k: the filter may have starved the index. Answer exactly.
            let total: i64 = tx
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {} WHERE tenant = $1 AND model = $2",
                        table(query.len())
                    ),
                    &[&tenant, &model],
                )
                .await
                .map_err(db)?
                .get(0);
            if total > i64::try_from(found.len()).unwrap_or(0) {
                tx.batch_execute("SET LOCAL enable_indexscan = off")
                    .await
                    .map_err(db)?;
                found = hits(
                    tx.query(&sql, &[&tenant, &model, &q, &k])
                        .await
                        .map_err(db)?,
                );
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(found)
    }

    async fn health(&self) -> Result<()> {
        self.pg.health().await
    }
}
