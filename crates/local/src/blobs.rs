//! Filesystem blobs: `<data-dir>/blobs/<bucket>/<key>`, keys as plain relative paths so
//! an operator can read (or drop in) files directly.
//!
//! Writes go to a temporary file that is fsynced and renamed into place, so readers
//! never see half an object. After each write an object-created notification is
//! published to [`troupe_core::blobs::created_topic`]; blob triggers subscribe to it
//! with their key prefix as the subject filter.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use troupe_core::blobs::{OBJECT_CREATED_TYPE, S3Bucket, S3Entity, S3Object, created_topic};
use troupe_core::{Blobs, Error, Event, Message, ObjectCreated, Result};

use crate::SqliteQueue;

/// Filesystem-backed [`Blobs`].
#[derive(Clone)]
pub struct FsBlobs {
    root: PathBuf,
    /// `root` with every link resolved: an object's directory must lie under it, so a
    /// symlink planted in the tree cannot lead a read outside the data directory.
    real_root: PathBuf,
    /// Where object-created notifications go (and their outbox lives); `None`
    /// disables them.
    notify: Option<SqliteQueue>,
}

impl std::fmt::Debug for FsBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlobs")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::Backend {
        backend: "filesystem",
        cause: format!("{}: {e}", what.display()).into(),
    }
}

pub use troupe_core::blobs::check_bucket;

/// Checks an object key: a relative path of non-empty segments, none `.` or `..`.
pub fn check_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid("key", format!("`{key}`: {why}")));
    if key.is_empty() || key.len() > 1024 {
        return bad("must be 1..=1024 bytes");
    }
    if key.contains('\0') || key.contains('\\') {
        return bad("must not contain NUL or backslash");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("segments between '/' must be non-empty and not '.' or '..'");
    }
    Ok(())
}

impl FsBlobs {
    /// Blobs under `root`; notifications published to `notify` when given.
    pub fn new(root: impl Into<PathBuf>, notify: Option<SqliteQueue>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".tmp")).map_err(|e| io(&root, e))?;
        let real_root = root.canonicalize().map_err(|e| io(&root, e))?;
        Ok(Self {
            root,
            real_root,
            notify,
        })
    }

    /// Where `bucket/key` lives on disk.
    pub fn path(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(self.root.join(bucket).join(key))
    }

    /// The folder holding `bucket`'s objects.
    pub(crate) fn bucket_dir(&self, bucket: &str) -> Result<PathBuf> {
        check_bucket(bucket)?;
        Ok(self.root.join(bucket))
    }

    /// The blob root with every link resolved, for [`open_regular`].
    pub(crate) fn real_root(&self) -> &Path {
        &self.real_root
    }

    /// The queue object-created notifications go to, if they are on.
    pub(crate) fn notifications(&self) -> Option<&SqliteQueue> {
        self.notify.as_ref()
    }

    /// Records a pending notification before the object becomes visible, so a crash
    /// between the write and the publish cannot lose it (see [`Self::recover`]).
    pub(crate) async fn remember(&self, queue: &SqliteQueue, obj: &Pending) -> Result<i64> {
        let o = obj.clone();
        queue
            .db()
            .write(move |c| {
                c.query_row(
                    "INSERT INTO blob_outbox (bucket, key, size, etag, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     RETURNING id",
                    rusqlite::params![o.bucket, o.key, o.size, o.etag, o.time],
                    |r| r.get(0),
                )
                .map_err(crate::db::sql)
            })
            .await
    }

    /// Publishes the object-created notification and clears its outbox row, atomically.
    pub(crate) async fn announce(
        &self,
        queue: &SqliteQueue,
        obj: &Pending,
        outbox: i64,
    ) -> Result<()> {
        self.announce_with(queue, obj, move |c| {
            crate::db::exec(c, "DELETE FROM blob_outbox WHERE id = ?1", [outbox])
                .map(|_| ())
                .map_err(crate::db::sql)
        })
        .await
    }

    /// Publishes the object-created notification and runs `also` in the same
    /// transaction: both happen or neither does.
    pub(crate) async fn announce_with<F>(
        &self,
        queue: &SqliteQueue,
        obj: &Pending,
        also: F,
    ) -> Result<()>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<()> + Send + 'static,
    {
        let record = ObjectCreated {
            event_version: "2.1".into(),
            event_source: "troupe:local".into(),
            event_time: obj.time.clone(),
            event_name: "ObjectCreated:Put".into(),
            s3: S3Entity {
                bucket: S3Bucket {
                    name: obj.bucket.clone(),
                },
                object: S3Object {
                    key: obj.key.clone(),
                    size: obj.size,
                    e_tag: obj.etag.clone(),
                },
            },
        };
        let data =
            serde_json::to_value(&record).map_err(|e| Error::invalid("record", e.to_string()))?;
        let mut event = Event::new(format!("/blobs/{}", obj.bucket), OBJECT_CREATED_TYPE, &data)
            .with_subject(&obj.key);
        event.time = obj.time.clone();
        queue
            .publish_with(
                &created_topic(&obj.bucket),
                &[Message::from_event(&event)],
                also,
            )
            .await?;
        Ok(())
    }

    /// Publishes notifications that a crash left pending: for each write that
    /// completed (the object holds the recorded content) the notification goes out;
    /// writes that never completed are forgotten. Returns how many were published.
    pub async fn recover(&self) -> Result<usize> {
        let Some(queue) = &self.notify else {
            return Ok(0);
        };
        let rows: Vec<(i64, Pending)> = queue
            .db()
            .read(|c| {
                let mut stmt = c
                    .prepare("SELECT id, bucket, key, size, etag, created_at FROM blob_outbox ORDER BY id")
                    .map_err(crate::db::sql)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            Pending { bucket: r.get(1)?, key: r.get(2)?, size: r.get(3)?, etag: r.get(4)?, time: r.get(5)? },
                        ))
                    })
                    .map_err(crate::db::sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(crate::db::sql)
            })
            .await?;
        let mut published = 0;
        for (id, obj) in rows {
            let current = self.get(&obj.bucket, &obj.key).await?;
            if current.is_some_and(|d| hex::encode(Sha256::digest(&d)) == obj.etag) {
                self.announce(queue, &obj, id).await?;
                published += 1;
            } else {
                queue
                    .db()
                    .write(move |c| {
                        crate::db::exec(c, "DELETE FROM blob_outbox WHERE id = ?1", [id])
                            .map(|_| ())
                            .map_err(crate::db::sql)
                    })
                    .await?;
            }
        }
        Ok(published)
    }
}

/// An object write whose notification is not yet published.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) etag: String,
    pub(crate) time: String,
}

/// Opens the object at `path` for reading, if it is a regular file inside `real_root`:
/// a symlink (as the object or anywhere between it and the root) leading elsewhere, a
/// directory, a device or a FIFO is no object (`None`), so nothing outside the data
/// directory is ever read on a client's behalf, and nothing blocks a reader.
pub(crate) fn open_regular(
    real_root: &Path,
    path: &Path,
) -> Result<Option<(std::fs::File, std::fs::Metadata)>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let not_found = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        )
    };
    let Some(parent) = path.parent() else {
        return Ok(None);
    };
    let real_parent = match parent.canonicalize() {
        Ok(p) => p,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(io(parent, e)),
    };
    if !real_parent.starts_with(real_root) {
        tracing::warn!(path = %path.display(), "refusing a blob whose directory links outside the data directory");
        return Ok(None);
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        // The last component must not be a link either; O_NONBLOCK keeps a FIFO from
        // blocking the open (it is refused below).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            tracing::warn!(path = %path.display(), "refusing a blob that is a symbolic link");
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((file, meta)))
}

/// Every regular file under `dir`, as keys relative to `base`. Links are neither
/// followed nor listed: a link to a directory is not walked, a link to a file is no
/// object.
pub(crate) fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, base, out)?;
        } else if !kind.is_file() {
            continue;
        } else if let Ok(rel) = path.strip_prefix(base) {
            let key: Vec<String> = rel
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            out.push(key.join("/"));
        }
    }
    Ok(())
}

#[async_trait]
impl Blobs for FsBlobs {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(bucket, key)?;
        let real_root = self.real_root.clone();
        tokio::task::spawn_blocking(move || {
            let Some((mut file, meta)) = open_regular(&real_root, &path)? else {
                return Ok(None);
            };
            let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            std::io::Read::read_to_end(&mut file, &mut data).map_err(|e| io(&path, e))?;
            Ok(Some(data))
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))?
    }

    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(bucket, key)?;
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let owned = data.to_vec();
        let (p, t) = (path.clone(), tmp.clone());
        let (p2, t2) = (p.clone(), t.clone());
        let key2 = key.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            use std::io::Write;
            if let Some(parent) = p2.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::invalid("key", format!("cannot create the folder of `{key2}`: {e} (does a prefix of the key name an existing object?)"))
                })?;
            }
            let mut f = std::fs::File::create(&t2).map_err(|e| io(&t2, e))?;
            f.write_all(&owned).map_err(|e| io(&t2, e))?;
            f.sync_all().map_err(|e| io(&t2, e))
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))??;
        let pending = Pending {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: data.len() as u64,
            etag: hex::encode(Sha256::digest(data)),
            time: troupe_core::event::now_rfc3339(),
        };
        let outbox = match &self.notify {
            Some(q) => Some(self.remember(q, &pending).await?),
            None => None,
        };
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::rename(&t, &p).map_err(|e| {
                let _ = std::fs::remove_file(&t);
                io(&p, e)
            })?;
            // Make the rename itself durable before announcing the object.
            if let Some(parent) = p.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(parent, e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))??;
        match (&self.notify, outbox) {
            (Some(q), Some(id)) => self.announce(q, &pending, id).await,
            _ => Ok(()),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let path = self.path(bucket, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        check_bucket(bucket)?;
        let base = self.root.join(bucket);
        // Walk only the deepest directory the prefix fully names.
        let start = match prefix.rfind('/') {
            Some(i) if check_key(&prefix[..i]).is_ok() => base.join(&prefix[..i]),
            _ => base.clone(),
        };
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            walk(&start, &base, &mut keys).map_err(|e| io(&start, e))?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(|e| Error::backend("filesystem", e))?
    }

    async fn health(&self) -> Result<()> {
        tokio::fs::metadata(&self.root)
            .await
            .map_err(|e| io(&self.root, e))?;
        Ok(())
    }
}
