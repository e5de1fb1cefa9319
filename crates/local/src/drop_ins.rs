//! Files written straight into the blob directory (copied in by hand or by another
//! program, not through [`Blobs::put`](troupe_core::Blobs::put)) raise the same
//! object-created notification a put does, so a watched prefix ingests them.
//!
//! [`DropInScanner::scan`] walks a bucket's prefix and announces each file whose size or
//! modification time differs from what it saw last; `troupe up` owns one scanner and
//! runs it ([`DropInScanner::run`]) at start-up, then whenever a filesystem
//! notification says a watched folder changed, with a slow rescan in case one is lost
//! ([`watch`]). Files still being written are left for a
//! later scan: a file is announced once two scans in a row saw the same size and
//! modification time and it is at least [`SETTLE`] old; names starting with `.`
//! (editors' and copiers' partial files) are skipped. A file that cannot be read is
//! logged and skipped, so it never holds up the others.
//!
//! A file's announcement and the record that it was seen (`blob_seen`) commit in one
//! transaction: a crash leaves both or neither, so a file is never announced twice
//! for one write (each announcement carries its own time, from which intake derives
//! a document id, so a second announcement would be a second document).
//!
//! Only regular files count: symbolic links (to files or directories), FIFOs and
//! devices are neither followed nor read, so nothing outside the data directory is
//! ingested. A file over [`MAX_DROP_IN_BYTES`] is logged and skipped before it is
//! read; the others are hashed as a stream.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use troupe_core::{Error, Result};

use crate::SqliteQueue;
use crate::blobs::{FsBlobs, Pending, open_regular, walk};
use crate::db::sql;

pub mod watch;

pub use watch::{RESCAN, RESCAN_UNWATCHED};

/// Largest file the scan ingests (the API's default `max_upload_bytes`); larger
/// ones are logged and skipped without being read.
pub const MAX_DROP_IN_BYTES: u64 = 50 << 20;

/// How long a file must stay unchanged before it is announced.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Announces files dropped into a bucket's folder, as [`FsBlobs`] announces its puts.
/// One per process that watches the folders (`troupe up`), which drives it with
/// [`DropInScanner::scan`].
pub struct DropInScanner {
    /// The store the files are in, whose notification queue announces them.
    blobs: FsBlobs,
    /// Files seen once and not yet announced, by (bucket, key), with their (size,
    /// modified ns): announced when a later scan sees them unchanged. In memory only:
    /// after a restart a file waits for two scans again.
    candidates: HashMap<(String, String), (u64, i64)>,
    /// A scan since [`Self::run`] last cleared it saw a file too fresh to announce
    /// yet (still being written, or seen only once): look again after [`SETTLE`]
    /// rather than at the next rescan.
    settling: bool,
}

impl std::fmt::Debug for DropInScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropInScanner")
            .field("blobs", &self.blobs)
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

/// A file found by a scan.
struct Found {
    key: String,
    size: u64,
    modified_ns: i64,
}

impl DropInScanner {
    /// A scanner of `blobs`' folders, having seen nothing yet.
    pub fn new(blobs: FsBlobs) -> Self {
        Self {
            blobs,
            candidates: HashMap::new(),
            settling: false,
        }
    }

    /// Announces new or changed files under `bucket/prefix`; returns how many. Without
    /// a notification queue (see [`FsBlobs::new`]) nothing is announced.
    pub async fn scan(&mut self, bucket: &str, prefix: &str) -> Result<usize> {
        let Some(queue) = self.blobs.notifications().cloned() else {
            return Ok(0);
        };
        let base = self.blobs.bucket_dir(bucket)?;
        let start = match prefix.rfind('/') {
            Some(i) => base.join(&prefix[..i]),
            None => base.clone(),
        };
        let prefix_owned = prefix.to_owned();
        let (files, fresh) = tokio::task::spawn_blocking(move || -> Result<(Vec<Found>, bool)> {
            let mut keys = Vec::new();
            walk(&start, &base, &mut keys).map_err(|e| Error::backend("filesystem", e))?;
            let now = SystemTime::now();
            let mut found = Vec::new();
            let mut fresh = false;
            for key in keys {
                let hidden = key.rsplit('/').next().is_some_and(|n| n.starts_with('.'));
                if !key.starts_with(&prefix_owned) || hidden {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(base.join(&key)) else {
                    continue; // removed meanwhile
                };
                let Ok(modified) = meta.modified() else {
                    continue;
                };
                if now.duration_since(modified).unwrap_or_default() < SETTLE {
                    fresh = true;
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
            Ok((found, fresh))
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))??;
        self.settling |= fresh;
        let b = bucket.to_owned();
        let seen: HashMap<String, (u64, i64)> = queue
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
            let steady = self
                .candidates
                .insert((bucket.to_owned(), f.key.clone()), now)
                == Some(now);
            if !steady {
                self.settling = true;
                continue;
            }
            let path = self.blobs.path(bucket, &f.key)?;
            let (real_root, max) = (self.blobs.real_root().to_owned(), MAX_DROP_IN_BYTES);
            let digest = tokio::task::spawn_blocking(move || digest(&real_root, &path, max))
                .await
                .map_err(|e| Error::backend("filesystem", e))?;
            let (size, etag) = match digest {
                Ok(Some(Digested::File { size, etag })) => (size, etag),
                Ok(Some(Digested::TooLarge(size))) => {
                    tracing::warn!(
                        bucket,
                        key = %f.key,
                        size,
                        limit = MAX_DROP_IN_BYTES,
                        "a dropped-in file is over the size limit; not ingesting it (upload it in parts, or raise the limit)"
                    );
                    record_seen(&queue, bucket, &f).await?;
                    continue;
                }
                Ok(None) => continue, // removed meanwhile, or no longer a regular file
                Err(e) => {
                    tracing::warn!(bucket, key = %f.key, error = %e, "cannot read a dropped-in file; skipping it");
                    continue;
                }
            };
            let pending = Pending {
                bucket: bucket.to_owned(),
                key: f.key.clone(),
                size,
                etag,
                time: troupe_core::event::now_rfc3339(),
            };
            // The announcement and the record of the file as seen commit together: a
            // crash leaves either both (the file is not announced again) or neither
            // (the next scan announces it). The announcement's time is part of the
            // document id, so announcing twice would make two documents. No outbox
            // row is needed: the file itself is the record of the pending work.
            let seen = Seen::of(bucket, &f);
            self.blobs
                .announce_with(&queue, &pending, move |c| seen.record(c))
                .await?;
            self.candidates.remove(&(bucket.to_owned(), f.key.clone()));
            announced += 1;
        }
        Ok(announced)
    }
}

/// Records a file as seen at its current size and time (when nothing is announced for
/// it): it is not looked at again until either changes.
async fn record_seen(queue: &SqliteQueue, bucket: &str, f: &Found) -> Result<()> {
    let seen = Seen::of(bucket, f);
    queue.db().write(move |c| seen.record(c)).await
}

/// A file as a scan saw it, to be recorded in `blob_seen`.
struct Seen {
    bucket: String,
    key: String,
    size: u64,
    modified_ns: i64,
}

impl Seen {
    fn of(bucket: &str, f: &Found) -> Self {
        Self {
            bucket: bucket.to_owned(),
            key: f.key.clone(),
            size: f.size,
            modified_ns: f.modified_ns,
        }
    }

    /// Records the file as seen, inside the caller's transaction.
    fn record(&self, c: &rusqlite::Connection) -> Result<()> {
        crate::db::exec(
            c,
            "INSERT INTO blob_seen (bucket, key, size, modified_ns) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bucket, key) DO UPDATE SET size = excluded.size, modified_ns = excluded.modified_ns",
            rusqlite::params![self.bucket, self.key, self.size, self.modified_ns],
        )
        .map(|_| ())
        .map_err(sql)
    }
}

/// What reading a dropped-in file found.
enum Digested {
    /// Its size and SHA-256 (hex), the object's ETag.
    File { size: u64, etag: String },
    /// Its size, over the limit: not read.
    TooLarge(u64),
}

/// Size and SHA-256 of a regular file under `real_root`, hashed as a stream (memory
/// stays constant whatever the size); the size is checked before anything is read.
fn digest(
    real_root: &std::path::Path,
    path: &std::path::Path,
    max: u64,
) -> Result<Option<Digested>> {
    use std::io::Read as _;
    let Some((mut file, meta)) = open_regular(real_root, path)? else {
        return Ok(None);
    };
    if meta.len() > max {
        return Ok(Some(Digested::TooLarge(meta.len())));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::backend("filesystem", format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max {
            // It grew while being read.
            return Ok(Some(Digested::TooLarge(size)));
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(Digested::File {
        size,
        etag: hex::encode(hasher.finalize()),
    }))
}
