//! Driving the scanner: filesystem notifications say when to look, a slow rescan
//! catches what they miss.
//!
//! The watched buckets' folders are watched recursively (inotify on Linux, FSEvents
//! or kqueue elsewhere, through the `notify` crate). A change wakes the loop, which
//! waits [`SETTLE`] for the write to finish and scans; while a scan saw a file still
//! settling, it scans again every [`SETTLE`] until the file is announced. Otherwise
//! it sleeps: an idle folder costs nothing but a rescan every [`RESCAN`], there
//! because notifications can be lost (an overflowing inotify queue, a network
//! filesystem that raises none). Where no watch can be set up (the system's watch
//! limit is reached), the loop rescans every [`RESCAN_UNWATCHED`] instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use troupe_core::{Error, Result};

use super::{DropInScanner, SETTLE};

/// How often watched folders are rescanned when no notification came.
pub const RESCAN: Duration = Duration::from_secs(30);

/// How often they are rescanned when filesystem notifications are unavailable.
pub const RESCAN_UNWATCHED: Duration = Duration::from_secs(1);

impl DropInScanner {
    /// Announces the files dropped into each `(bucket, prefix)` of `watched`: at
    /// once, then whenever the folders change (and every `rescan` regardless), until
    /// `stop` turns true. Failed scans are logged and retried.
    pub async fn run(
        mut self,
        watched: Vec<(String, String)>,
        rescan: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        if watched.is_empty() {
            return;
        }
        let changed = Arc::new(Notify::new());
        // Dropped at the end of the loop, which ends the watch.
        let watcher = self.watch_folders(&watched, changed.clone());
        let rescan = if watcher.is_some() {
            rescan
        } else {
            RESCAN_UNWATCHED
        };
        loop {
            self.settling = false;
            for (bucket, prefix) in &watched {
                match self.scan(bucket, prefix).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        bucket,
                        prefix,
                        files = n,
                        "announced files dropped into the blob folder"
                    ),
                    Err(e) => {
                        // What it was announcing stays unannounced: look again soon.
                        self.settling = true;
                        tracing::warn!(bucket, prefix, error = %e, "scanning for dropped-in files failed; retrying");
                    }
                }
            }
            let next = if self.settling { SETTLE } else { rescan };
            tokio::select! {
                () = tokio::time::sleep(next) => continue,
                () = changed.notified() => {}
                _ = stop.changed() => return,
            }
            // A write under way: let it finish before looking.
            tokio::select! {
                () = tokio::time::sleep(SETTLE) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Watches every watched bucket's folder recursively, notifying `changed` on each
    /// change (reads aside); `None`, logged, when the system will not watch them.
    fn watch_folders(
        &self,
        watched: &[(String, String)],
        changed: Arc<Notify>,
    ) -> Option<notify::RecommendedWatcher> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (bucket, _) in watched {
            match self.blobs.bucket_dir(bucket) {
                Ok(dir) if !dirs.contains(&dir) => dirs.push(dir),
                Ok(_) => {}
                Err(e) => tracing::warn!(bucket, error = %e, "not watching a bucket's folder"),
            }
        }
        match watch_dirs(&dirs, changed) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, every = ?RESCAN_UNWATCHED, "cannot watch the drop-in folders for changes; scanning them on a timer instead");
                None
            }
        }
    }
}

/// A recursive watch on each of `dirs` (created when missing, so that the first file
/// dropped into one is seen), notifying `changed` on every event but reads.
fn watch_dirs(dirs: &[PathBuf], changed: Arc<Notify>) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let fs = |e: String| Error::backend("filesystem", e);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (a lost or overflowing queue) is a reason to look too.
        if !matches!(&event, Ok(e) if e.kind.is_access()) {
            changed.notify_one();
        }
    })
    .map_err(|e| fs(e.to_string()))?;
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| fs(format!("{}: {e}", dir.display())))?;
        watcher
            .watch(dir, notify::RecursiveMode::Recursive)
            .map_err(|e| fs(format!("{}: {e}", dir.display())))?;
    }
    Ok(watcher)
}
