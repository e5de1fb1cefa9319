//! Deferring a delivery: redelivered later, the delivery not counted.

use std::time::Duration;

use rusqlite::params;
use troupe_core::{Error, Receipt, Result};

use super::{SqliteQueue, millis, now, parse_handle};
use crate::db::sql;

impl SqliteQueue {
    /// [`Queue::defer`](troupe_core::Queue::defer): the lease is given up, the message
    /// becomes visible after `delay`, and the delivery count the receive added is taken
    /// back, in one statement.
    pub(super) async fn defer_delivery(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
    ) -> Result<()> {
        let (seq, lease) = parse_handle(queue, receipt)?;
        let visible_at = now(&*self.clock).saturating_add(millis(delay));
        let (name, id) = (queue.to_owned(), receipt.message_id.clone());
        self.db
            .write(move |tx| {
                let n = tx
                    .execute(
                        "UPDATE messages SET visible_at = ?3, lease = NULL,
                           deliveries = MAX(deliveries - 1, 0)
                         WHERE seq = ?1 AND lease = ?2 AND dead = 0",
                        params![seq, lease, visible_at],
                    )
                    .map_err(sql)?;
                if n == 0 {
                    return Err(Error::LeaseLost {
                        queue: name,
                        message: id,
                    });
                }
                Ok(())
            })
            .await?;
        // Waiting receivers learn the new due time (they sleep until the earliest).
        self.wake(&[queue.to_owned()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use troupe_core::{DeliveryPolicy, ManualClock, Message, Queue, Subscription};

    use super::*;
    use crate::{Db, Durability};

    #[tokio::test]
    async fn deferring_many_times_never_dead_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("q.db"), Durability::Normal).expect("db");
        let clock = ManualClock::new(1_000_000);
        let q = SqliteQueue::new(db, Arc::new(clock.clone()));
        q.subscribe(&Subscription {
            name: "a".into(),
            topics: vec!["t".into()],
            subject_prefix: None,
            policy: DeliveryPolicy {
                max_deliveries: 2,
                ..DeliveryPolicy::default()
            },
        })
        .await
        .expect("subscribe");
        let m = Message {
            id: "m".into(),
            subject: None,
            body: b"x".to_vec(),
            delay: Duration::ZERO,
            traceparent: None,
        };
        q.publish("t", &[m]).await.expect("publish");
        for _ in 0..10 {
            let d = q.receive("a", 1, Duration::ZERO).await.expect("receive");
            assert_eq!(d.len(), 1, "a deferred message must come back");
            assert_eq!(d[0].deliveries, 1, "a deferral must not count");
            q.defer("a", &d[0].receipt, Duration::from_secs(5))
                .await
                .expect("defer");
            assert!(
                q.receive("a", 1, Duration::ZERO)
                    .await
                    .expect("receive")
                    .is_empty()
            );
            clock.advance(Duration::from_secs(5));
        }
        let d = q.receive("a", 1, Duration::ZERO).await.expect("receive");
        // A settled lease cannot be deferred.
        q.ack("a", &[d[0].receipt.clone()]).await.expect("ack");
        assert!(matches!(
            q.defer("a", &d[0].receipt, Duration::ZERO).await,
            Err(Error::LeaseLost { .. })
        ));
    }
}
