//! The host's periodic purge of what the backends would otherwise keep forever.
//!
//! Embedded set: dead letters older than `--dead-letter-retention-ms` (14 days, as
//! SQS keeps a DLQ's messages), expired dedupe entries, and drop-in records of files
//! that are gone. Scale-out set: the queue's dedupe claims in Postgres
//! (`queue-dedupe/<prefix>…`), once their window has passed by
//! `--dedupe-purge-grace-ms` (SQS keeps its DLQs 14 days itself). Both: vector
//! tombstones a day past the dead letters' retention. The document state
//! the functions keep is the sweeper's job (its `*_retention_ms` variables).

use std::time::Duration;

use crate::backend::Opened;

/// `--maintenance-interval-ms`, `--dead-letter-retention-ms`, `--dedupe-purge-grace-ms`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// How often the host purges dead letters, expired dedupe entries and drop-in
    /// records past their retention (ms; the first purge runs at start-up).
    #[arg(
        long,
        env = "TROUPE_MAINTENANCE_INTERVAL_MS",
        default_value_t = 3_600_000
    )]
    pub maintenance_interval_ms: u64,
    /// How long the embedded queue keeps a dead letter (ms since it died); then it is
    /// deleted. Redrive what you need before. Default 14 days, as on SQS.
    #[arg(long, env = "TROUPE_DEAD_LETTER_RETENTION_MS", default_value_t = 14 * 24 * 3_600_000)]
    pub dead_letter_retention_ms: u64,
    /// How long past the end of its window a dedupe claim in Postgres is kept before
    /// it is purged (ms): a margin for a publisher still deciding on it.
    #[arg(long, env = "TROUPE_DEDUPE_PURGE_GRACE_MS", default_value_t = 60_000)]
    pub dedupe_purge_grace_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One purge of `opened` as of now.
pub async fn purge_once(opened: &Opened, args: &RetentionArgs) -> anyhow::Result<()> {
    let now = now_ms();
    // A deleted document's vector tombstone outlives every job that could still come
    // for it: the latest is a dead letter redriven just before its retention ends.
    let tombstone_ms = args.dead_letter_retention_ms.saturating_add(24 * 3_600_000);
    match opened {
        Opened::Local(local) => {
            let retention = troupe_local::retention::Retention {
                dead_letters: Duration::from_millis(args.dead_letter_retention_ms),
                vector_tombstones: Duration::from_millis(tombstone_ms),
            };
            let purged = local.purge(now, retention).await?;
            if purged != troupe_local::retention::Purged::default() {
                tracing::info!(
                    dead_letters = purged.dead_letters,
                    dedupe = purged.dedupe,
                    blobs_seen = purged.blobs_seen,
                    vector_tombstones = purged.vector_tombstones,
                    "purged records past their retention"
                );
            }
        }
        Opened::Aws(scale) => {
            let prefix = format!("queue-dedupe/{}", scale.queue.prefix());
            let before = now.saturating_sub(args.dedupe_purge_grace_ms);
            let dedupe = scale.state.purge_expired(&prefix, before).await?;
            let vector_tombstones = scale
                .vectors
                .purge_tombstones(now.saturating_sub(tombstone_ms))
                .await?;
            if dedupe > 0 || vector_tombstones > 0 {
                tracing::info!(
                    dedupe,
                    vector_tombstones,
                    "purged expired dedupe claims and vector tombstones"
                );
            }
        }
    }
    Ok(())
}

/// Purges every `--maintenance-interval-ms` until `stop` turns true. A failed purge is
/// logged and tried again next time: nothing is lost by waiting.
pub async fn maintain(
    opened: Opened,
    args: RetentionArgs,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis(args.maintenance_interval_ms.max(1));
    loop {
        if let Err(e) = purge_once(&opened, &args).await {
            tracing::warn!(error = %format!("{e:#}"), "purging records past their retention failed; trying again next interval");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
