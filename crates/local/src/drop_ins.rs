//! Files written straight into the blob directory (copied in by hand or by another
//! program, not through [`Blobs::put`](troupe_core::Blobs::put)) raise the same
//! object-created notification a put does, so a watched prefix ingests them.
//!
//! [`FsBlobs::scan`] walks a bucket's prefix and announces each file whose size or
//! modification time differs from what it saw last; `troupe up` runs it at start-up
//! and then every second. Files still being written are left for a later scan: a
//! file is announced once two scans in a row saw the same size and modification time
//! and it is at least [`SETTLE`] old; names starting with `.` (editors' and copiers'
//! partial files) are skipped. A file that cannot be read is logged and skipped, so
//! it never holds up the others.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use troupe_core::{Error, Result};

use crate::blobs::{FsBlobs, Pending, check_bucket, walk};
use crate::db::sql;

/// How long a file must stay unchanged before it is announced.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Files seen once and not yet announced: (bucket, key) → (size, modified ns).
pub(crate) type Candidates =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), (u64, i64)>>>;

/// A file found by a scan.
struct Found {
    key: String,
    size: u64,
    modified_ns: i64,
}

impl FsBlobs {
    /// Announces new or changed files under `bucket/prefix`; returns how many.
    pub async fn scan(&self, bucket: &str, prefix: &str) -> Result<usize> {
        let Some(queue) = self.notify.clone() else {
            return Ok(0);
        };
        check_bucket(bucket)?;
        let base = self.root.join(bucket);
        let start = match prefix.rfind('/') {
            Some(i) => base.join(&prefix[..i]),
            None => base.clone(),
        };
        let prefix_owned = prefix.to_owned();
        let files = tokio::task::spawn_blocking(move || -> Result<Vec<Found>> {
            let mut keys = Vec::new();
            walk(&start, &base, &mut keys).map_err(|e| Error::backend("filesystem", e))?;
            let now = SystemTime::now();
            let mut found = Vec::new();
            for key in keys {
                let hidden = key.rsplit('/').next().is_some_and(|n| n.starts_with('.'));
                if !key.starts_with(&prefix_owned) || hidden {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(base.join(&key)) else {
                    continue; // removed meanwhile
                };
                let Ok(modified) = meta.modified() else {
                    continue;
                };
                if now.duration_since(modified).unwrap_or_default() < SETTLE {
                    continue; // still being written, perhaps
                }
                let ns = modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                found.push(Found {
                    key,
                    size: meta.len(),
                    modified_ns: ns,
                });
            }
            Ok(found)
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))??;
        let b = bucket.to_owned();
        let seen: std::collections::HashMap<String, (u64, i64)> = queue
            .db()
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT key, size, modified_ns FROM blob_seen WHERE bucket = ?1",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([b], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)
            })
            .await?;
        let mut announced = 0;
        for f in files {
            let now = (f.size, f.modified_ns);
            if seen.get(&f.key) == Some(&now) {
                continue;
            }
            // Announce only what the previous scan saw exactly so.
            let steady = {
                let mut c = self.candidates.lock().map_err(|_| {
                    Error::backend("filesystem", "drop-in candidates lock poisoned")
                })?;
                c.insert((bucket.to_owned(), f.key.clone()), now) == Some(now)
            };
            if !steady {
                continue;
            }
            let data = match troupe_core::Blobs::get(self, bucket, &f.key).await {
                Ok(Some(d)) => d,
                Ok(None) => continue, // removed meanwhile
                Err(e) => {
                    tracing::warn!(bucket, key = %f.key, error = %e, "cannot read a dropped-in file; skipping it");
                    continue;
                }
            };
            let pending = Pending {
                bucket: bucket.to_owned(),
                key: f.key.clone(),
                size: data.len() as u64,
                etag: hex::encode(Sha256::digest(&data)),
                time: troupe_core::event::now_rfc3339(),
            };
            let outbox = self.remember(&queue, &pending).await?;
            self.announce(&queue, &pending, outbox).await?;
            let (b, k) = (bucket.to_owned(), f.key.clone());
            queue
                .db()
                .write(move |c| {
                    c.execute(
                        "INSERT INTO blob_seen (bucket, key, size, modified_ns) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (bucket, key) DO UPDATE SET size = excluded.size, modified_ns = excluded.modified_ns",
                        rusqlite::params![b, k, f.size, f.modified_ns],
                    )
                    .map(|_| ())
                    .map_err(sql)
                })
                .await?;
            if let Ok(mut c) = self.candidates.lock() {
                c.remove(&(bucket.to_owned(), f.key.clone()));
            }
            announced += 1;
        }
        Ok(announced)
    }
}
