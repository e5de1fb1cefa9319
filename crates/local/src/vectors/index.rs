//! The in-memory copy of `chunk_vectors`, one shard per (tenant, model), kept in step
//! with the table by catching up before each search.
//!
//! A catch-up reads, in one snapshot of the database, the rows added since the
//! shard's last row and the entries of `vector_delete_log` (the row ids each delete
//! removed) since its last entry; the shard appends the rows and marks the deleted
//! ones, without reloading anything. Only a shard that fell so far behind that the log
//! entries it needs were pruned (`vector_deletes.log_pruned`) loads again from the
//! table. Reading happens outside the lock; applying takes it briefly, and an update
//! read from an older snapshot than the shard's is a no-op for the part already seen.

use std::collections::HashMap;
use std::sync::RwLock;

use rusqlite::{Connection, params};
use troupe_core::{Error, Result};

use super::scan::{Rows, Snapshot};
use crate::db::sql;

/// A shard's key: (tenant, model).
pub(crate) type Key = (String, String);

/// Every shard loaded so far.
#[derive(Debug, Default)]
pub(crate) struct Index {
    shards: RwLock<HashMap<Key, Shard>>,
}

/// One tenant's vectors of one model.
#[derive(Debug, Default)]
struct Shard {
    rows: Rows,
    /// Where the shard stands in the table.
    at: Cursor,
}

/// A point in the table's history: every row up to `rows` and every delete up to
/// `deletes` is reflected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The highest `chunk_vectors.id` read.
    rows: i64,
    /// The highest `vector_delete_log.seq` applied.
    deletes: i64,
}

/// A shard's cursor and width (0: no row yet), which a catch-up reads from: new rows
/// of another width are skipped.
pub(crate) type Position = (Cursor, usize);

/// What one catch-up read, from one snapshot.
#[derive(Debug)]
pub(crate) struct Update {
    /// The rows replace the shard's (a first load, or a reload).
    fresh: bool,
    rows: Rows,
    /// (log seq, row id) of rows deleted since the shard's cursor.
    deleted: Vec<(i64, i64)>,
    at: Cursor,
}

fn poisoned() -> Error {
    Error::backend("vectors", "the in-memory index lock is poisoned")
}

impl Index {
    /// Where `key`'s shard stands; `None` before its first load.
    pub(crate) fn position(&self, key: &Key) -> Result<Option<Position>> {
        let shards = self.shards.read().map_err(|_| poisoned())?;
        Ok(shards.get(key).map(|s| (s.at, s.rows.dims)))
    }

    /// Applies what a catch-up read.
    pub(crate) fn apply(&self, key: &Key, update: Update) -> Result<()> {
        let mut shards = self.shards.write().map_err(|_| poisoned())?;
        let shard = shards.entry(key.clone()).or_default();
        let newer = update.at.rows >= shard.at.rows && update.at.deletes >= shard.at.deletes;
        if update.fresh {
            if newer {
                *shard = Shard {
                    rows: update.rows,
                    at: update.at,
                };
            }
            return Ok(());
        }
        shard.rows.append(&update.rows, shard.at.rows);
        for &(seq, id) in &update.deleted {
            if seq > shard.at.deletes {
                shard.rows.delete(id);
            }
        }
        shard.at.rows = shard.at.rows.max(update.at.rows);
        shard.at.deletes = shard.at.deletes.max(update.at.deletes);
        Ok(())
    }

    /// `key`'s rows as they are now, to scan without the lock.
    pub(crate) fn snapshot(&self, key: &Key) -> Result<Snapshot> {
        let shards = self.shards.read().map_err(|_| poisoned())?;
        Ok(shards
            .get(key)
            .map(|s| s.rows.snapshot())
            .unwrap_or_default())
    }
}

/// Reads what `key`'s shard, at `position`, lacks; `None` if nothing changed.
pub(crate) fn read_update(
    c: &Connection,
    key: &Key,
    position: Option<Position>,
) -> Result<Option<Update>> {
    // One snapshot for the marks, the rows and the log.
    let tx = c.unchecked_transaction().map_err(sql)?;
    let last_row: i64 = tx
        .query_row("SELECT COALESCE(MAX(id), 0) FROM chunk_vectors", [], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    let (last_delete, pruned): (i64, i64) = tx
        .query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM vector_delete_log), 0), log_pruned), log_pruned
             FROM vector_deletes WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
    let (fresh, from, dims) = match position {
        Some((at, dims)) if at.deletes >= pruned => {
            if at.rows >= last_row && at.deletes >= last_delete {
                return Ok(None);
            }
            (false, at, dims)
        }
        _ => (true, Cursor::default(), 0),
    };
    let mut rows = Rows::with_dims(dims);
    let mut stmt = tx
        .prepare_cached(
            // `+` keeps SQLite on the row-id range (new rows only) instead of the
            // (tenant, …) index, which would visit every row of the tenant.
            "SELECT id, vector FROM chunk_vectors
             WHERE id > ?1 AND id <= ?2 AND +tenant = ?3 AND +model = ?4 ORDER BY id",
        )
        .map_err(sql)?;
    let mut found = stmt
        .query(params![from.rows, last_row, key.0, key.1])
        .map_err(sql)?;
    let mut v = Vec::new();
    while let Some(row) = found.next().map_err(sql)? {
        let id: i64 = row.get(0).map_err(sql)?;
        let blob = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| Error::backend("sqlite", e))?;
        if from_le(blob, &mut v) {
            // A row of another width than the shard's is not searchable.
            rows.push(id, &v);
        }
    }
    let mut deleted = Vec::new();
    if !fresh {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, row_id FROM vector_delete_log
                 WHERE seq > ?1 AND seq <= ?2 AND +tenant = ?3 AND +model = ?4",
            )
            .map_err(sql)?;
        let mut log = stmt
            .query(params![from.deletes, last_delete, key.0, key.1])
            .map_err(sql)?;
        while let Some(row) = log.next().map_err(sql)? {
            deleted.push((row.get(0).map_err(sql)?, row.get(1).map_err(sql)?));
        }
    }
    Ok(Some(Update {
        fresh,
        rows,
        deleted,
        at: Cursor {
            rows: last_row,
            deletes: last_delete,
        },
    }))
}

/// `blob` (little-endian f32s, as stored) into `v`; false if it is not whole floats.
pub(crate) fn from_le(blob: &[u8], v: &mut Vec<f32>) -> bool {
    v.clear();
    if !blob.len().is_multiple_of(4) {
        return false;
    }
    v.extend(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    true
}
