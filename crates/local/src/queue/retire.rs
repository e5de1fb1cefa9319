//! Retiring a subscription into the one that replaces it.

use rusqlite::params;
use troupe_core::{Error, Result, Retired};

use super::SqliteQueue;
use crate::db::sql;

impl SqliteQueue {
    /// [`Queue::retire`](troupe_core::Queue::retire) in one transaction: nothing is
    /// published to `from` once its messages moved. Rows keep their sequence, lease,
    /// delay and deliveries, so a consumer still holding one settles it as before, and
    /// dead letters stay dead letters.
    pub(super) async fn retire_into(&self, from: &str, into: &str) -> Result<Retired> {
        if from == into {
            return Err(Error::invalid(
                "subscription",
                format!("`{from}` cannot replace itself"),
            ));
        }
        // The successor must exist, or the messages would move nowhere.
        self.policy(into).await?;
        let (from_name, into_name) = (from.to_owned(), into.to_owned());
        let moved = self
            .db
            .write(move |tx| {
                crate::db::exec(
                    tx,
                    "DELETE FROM subscription_topics WHERE subscription = ?1",
                    [&from_name],
                )
                .map_err(sql)?;
                crate::db::exec(
                    tx,
                    "DELETE FROM subscriptions WHERE name = ?1",
                    [&from_name],
                )
                .map_err(sql)?;
                let moved = tx
                    .execute(
                        "UPDATE messages SET queue = ?2 WHERE queue = ?1",
                        params![from_name, into_name],
                    )
                    .map_err(sql)?;
                // Ids it saw stay seen: a repeat publish inside the window is not
                // delivered again through the successor.
                crate::db::exec(
                    tx,
                    "INSERT INTO dedupe (queue, id, expires_at)
                       SELECT ?2, id, expires_at FROM dedupe WHERE queue = ?1
                     ON CONFLICT (queue, id) DO UPDATE
                       SET expires_at = MAX(dedupe.expires_at, excluded.expires_at)",
                    params![from_name, into_name],
                )
                .map_err(sql)?;
                crate::db::exec(tx, "DELETE FROM dedupe WHERE queue = ?1", [&from_name])
                    .map_err(sql)?;
                Ok(moved)
            })
            .await?;
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(from);
        if moved > 0 {
            self.wake(&[into.to_owned()]);
        }
        Ok(Retired {
            moved: u64::try_from(moved).unwrap_or(u64::MAX),
            left: 0,
        })
    }
}
