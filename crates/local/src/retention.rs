//! Retention of the embedded backends' own records, which nothing else removes: dead
//! letters past their keeping time (14 days by default, as on SQS), expired dedupe
//! entries, the drop-in watcher's memory of files (`blob_seen`) that are gone, and
//! vector tombstones once no late job can arrive any more (a day past the dead
//! letters' retention by default: a redriven job is the latest there can be).
//! The host runs [`Local::purge`] periodically (`troupe up` / `serve`).

use std::time::Duration;

use rusqlite::params;
use troupe_core::Result;

use crate::Local;
use crate::db::sql;

/// How long the embedded backends keep what they would otherwise keep forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Dead letters older than this (since they died) are deleted.
    pub dead_letters: Duration,
    /// Vector tombstones older than this are deleted: vectors written afterwards for
    /// that document are kept again.
    pub vector_tombstones: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            dead_letters: Duration::from_secs(14 * 24 * 3600),
            vector_tombstones: Duration::from_secs(15 * 24 * 3600),
        }
    }
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Dead letters past their retention.
    pub dead_letters: usize,
    /// Dedupe entries whose window had passed.
    pub dedupe: usize,
    /// `blob_seen` rows of files no longer there.
    pub blobs_seen: usize,
    /// Vector tombstones past their retention.
    pub vector_tombstones: usize,
}

/// Rows a purge statement removes at most, so the writer is never held long.
const BATCH: i64 = 5_000;

impl Local {
    /// Removes, as of `now_ms` (ms since the epoch, the queue clock's time), what
    /// `retention` no longer keeps.
    pub async fn purge(&self, now_ms: u64, retention: Retention) -> Result<Purged> {
        let keep = i64::try_from(retention.dead_letters.as_millis()).unwrap_or(i64::MAX);
        let before = i64::try_from(now_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(keep);
        let mut dead_letters = 0;
        loop {
            let n = self
                .state
                .db
                .write(move |tx| {
                    crate::db::exec(
                        tx,
                        "DELETE FROM messages WHERE seq IN (
                            SELECT seq FROM messages WHERE dead = 1 AND dead_at <= ?1 LIMIT ?2)",
                        params![before, BATCH],
                    )
                    .map_err(sql)
                })
                .await?;
            dead_letters += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
                break;
            }
        }
        let dedupe = self.queue.purge_expired_dedupe().await?;
        let blobs_seen = self.purge_blobs_seen().await?;
        let keep = i64::try_from(retention.vector_tombstones.as_millis()).unwrap_or(i64::MAX);
        let before = i64::try_from(now_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(keep);
        let vector_tombstones = self
            .state
            .db
            .write(move |tx| {
                crate::db::exec(
                    tx,
                    "DELETE FROM vector_tombstones WHERE deleted_at <= ?1",
                    [before],
                )
                .map_err(sql)
            })
            .await?;
        Ok(Purged {
            dead_letters,
            dedupe,
            blobs_seen,
            vector_tombstones,
        })
    }

    /// Forgets files the drop-in watcher saw that are no longer in the store (deleted
    /// with their document, or removed by hand): a file put there again is new.
    async fn purge_blobs_seen(&self) -> Result<usize> {
        let seen: Vec<(String, String)> = self
            .state
            .db
            .read(|c| {
                let mut stmt = c
                    .prepare("SELECT bucket, key FROM blob_seen")
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)
            })
            .await?;
        let mut gone = Vec::new();
        for (bucket, key) in seen {
            let Ok(path) = self.blobs.path(&bucket, &key) else {
                continue;
            };
            if let Err(e) = std::fs::symlink_metadata(&path)
                && e.kind() == std::io::ErrorKind::NotFound
            {
                gone.push((bucket, key));
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        self.state
            .db
            .write(move |tx| {
                let mut n = 0;
                for (bucket, key) in &gone {
                    n += tx
                        .execute(
                            "DELETE FROM blob_seen WHERE bucket = ?1 AND key = ?2",
                            params![bucket, key],
                        )
                        .map_err(sql)?;
                }
                Ok(n)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use troupe_core::{DeadLetters, DeliveryPolicy, ManualClock, Message, Queue, Subscription};

    use super::*;
    use crate::Options;

    const DAY_MS: u64 = 24 * 3_600_000;

    async fn open() -> (tempfile::TempDir, ManualClock, Local) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_700_000_000_000);
        let local = Local::open_with(
            dir.path(),
            Options {
                clock: Arc::new(clock.clone()),
                ..Options::default()
            },
        )
        .expect("open");
        (dir, clock, local)
    }

    #[tokio::test]
    async fn dead_letters_go_after_their_retention_and_not_before() {
        let (_dir, clock, local) = open().await;
        let q = &local.queue;
        q.subscribe(&Subscription {
            name: "s".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy: DeliveryPolicy::default(),
        })
        .await
        .expect("subscribe");
        for id in ["a", "b"] {
            let m = Message {
                id: id.into(),
                subject: None,
                body: b"x".to_vec(),
                delay: Duration::ZERO,
                traceparent: None,
            };
            q.publish("t", &[m]).await.expect("publish");
            let got = q.receive("s", 1, Duration::ZERO).await.expect("receive");
            q.reject("s", &got[0].receipt, "bad", "detail")
                .await
                .expect("reject");
            clock.advance(Duration::from_millis(DAY_MS));
        }
        // "a" died two days ago, "b" one day ago.
        let keep_36h = Retention {
            dead_letters: Duration::from_millis(DAY_MS * 3 / 2),
            ..Retention::default()
        };
        let now = 1_700_000_000_000 + 2 * DAY_MS;
        let purged = local.purge(now, keep_36h).await.expect("purge");
        assert_eq!(purged.dead_letters, 1);
        let left = q.dead_letters("s", 10).await.expect("list");
        assert_eq!(
            left.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // The default keeps 14 days.
        let purged = local.purge(now, Retention::default()).await.expect("purge");
        assert_eq!(purged.dead_letters, 0);
        let later = now + 14 * DAY_MS;
        let purged = local
            .purge(later, Retention::default())
            .await
            .expect("purge");
        assert_eq!(purged.dead_letters, 1);
        assert!(q.dead_letters("s", 10).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn vector_tombstones_go_after_their_retention() {
        use troupe_core::Vectors;
        let (_dir, _clock, local) = open().await;
        local
            .vectors
            .delete_document("t", "d")
            .await
            .expect("delete");
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_millis(),
        )
        .expect("ms");
        let purged = local.purge(now, Retention::default()).await.expect("purge");
        assert_eq!(purged.vector_tombstones, 0);
        let purged = local
            .purge(now + 16 * DAY_MS, Retention::default())
            .await
            .expect("purge");
        assert_eq!(purged.vector_tombstones, 1);
    }

    #[tokio::test]
    async fn an_older_database_gains_tombstone_times_and_keeps_its_old_tombstones() {
        use troupe_core::Vectors;
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let c = rusqlite::Connection::open(dir.path().join("troupe.db")).expect("open");
            c.execute_batch(
                "CREATE TABLE vector_tombstones (
                    tenant TEXT NOT NULL, document TEXT NOT NULL, PRIMARY KEY (tenant, document)
                 ) WITHOUT ROWID;
                 INSERT INTO vector_tombstones VALUES ('t', 'old');",
            )
            .expect("an old schema");
        }
        let local = Local::open(dir.path()).expect("open");
        local
            .vectors
            .delete_document("t", "new")
            .await
            .expect("delete");
        let far = u64::MAX / 4;
        let purged = local.purge(far, Retention::default()).await.expect("purge");
        // Only the tombstone with a time; the old one stays (its time is unknown).
        assert_eq!(purged.vector_tombstones, 1);
        let purged = local.purge(far, Retention::default()).await.expect("purge");
        assert_eq!(purged.vector_tombstones, 0);
    }

    #[tokio::test]
    async fn drop_in_records_go_with_their_files() {
        let (dir, _clock, local) = open().await;
        let folder = dir.path().join("blobs/documents/uploads");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("kept.txt"), b"kept").expect("write");
        // What a scan records for each file it announced; one of them is gone since.
        local
            .state
            .db
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO blob_seen (bucket, key, size, modified_ns) VALUES
                     ('documents', 'uploads/kept.txt', 4, 1), ('documents', 'uploads/gone.txt', 4, 1)",
                )
                .map_err(sql)
            })
            .await
            .expect("recording");
        let purged = local.purge(0, Retention::default()).await.expect("purge");
        assert_eq!(purged.blobs_seen, 1);
        let left: Vec<String> = local
            .state
            .db
            .read(|c| {
                let mut stmt = c.prepare("SELECT key FROM blob_seen").map_err(sql)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(sql)?;
                rows.collect::<rusqlite::Result<_>>().map_err(sql)
            })
            .await
            .expect("read");
        assert_eq!(left, ["uploads/kept.txt"]);
    }
}
