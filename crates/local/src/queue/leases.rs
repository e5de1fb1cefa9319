//! Extending leases while long work runs.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use troupe_core::{Leases, Receipt, Result};

use super::{SqliteQueue, millis, now, parse_handle};
use crate::db::sql;

#[async_trait]
impl Leases for SqliteQueue {
    async fn extend(&self, queue: &str, receipt: &Receipt, visibility: Duration) -> Result<bool> {
        let (seq, lease) = parse_handle(queue, receipt)?;
        let until = now(&*self.clock).saturating_add(millis(visibility));
        self.db
            .write(move |tx| {
                crate::db::exec(
                    tx,
                    "UPDATE messages SET visible_at = ?3 WHERE seq = ?1 AND lease = ?2 AND dead = 0",
                    params![seq, lease, until],
                )
                .map(|n| n == 1)
                .map_err(sql)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use troupe_core::{DeliveryPolicy, ManualClock, Message, Queue, Subscription};

    use super::*;
    use crate::{Db, Durability};

    #[tokio::test]
    async fn an_extended_lease_is_not_redelivered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("q.db"), Durability::Normal).unwrap();
        let clock = ManualClock::new(1_000_000);
        let q = SqliteQueue::new(db, Arc::new(clock.clone()));
        let policy = DeliveryPolicy {
            visibility_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        q.subscribe(&Subscription {
            name: "s".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy,
        })
        .await
        .unwrap();
        let msg = Message {
            id: "m".into(),
            subject: None,
            body: b"x".to_vec(),
            delay: Duration::ZERO,
            traceparent: None,
        };
        q.send("s", &[msg]).await.unwrap();
        let got = q.receive("s", 1, Duration::ZERO).await.unwrap();
        let receipt = got[0].receipt.clone();
        clock.advance(Duration::from_secs(8));
        assert!(
            q.extend("s", &receipt, Duration::from_secs(10))
                .await
                .unwrap()
        );
        clock.advance(Duration::from_secs(8));
        // 16 s after the lease began: without the extension it would be visible again.
        assert!(q.receive("s", 1, Duration::ZERO).await.unwrap().is_empty());
        clock.advance(Duration::from_secs(3));
        let again = q.receive("s", 1, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1, "visible once the extension ran out");
        // The first lease is gone: extending it says so.
        assert!(
            !q.extend("s", &receipt, Duration::from_secs(10))
                .await
                .unwrap()
        );
    }
}
