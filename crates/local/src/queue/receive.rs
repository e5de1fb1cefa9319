//! Receiving: leasing what is ready, and waiting without polling when nothing is.
//!
//! A receive that finds nothing ready sleeps until the first of:
//!
//! - this process writes to the queue: a send, publish, retry, defer, redrive or
//!   retire wakes the queue's [`Notify`](tokio::sync::Notify);
//! - the earliest `visible_at` among the queue's messages comes: a delayed message,
//!   a retry's backoff or a lease running out (read from SQLite, so a message another
//!   process delayed counts too);
//! - the receive's own wait ends.
//!
//! Another process writing to the same database (`troupe dlq redrive`, a second host
//! on the data directory) wakes nobody here. For that, a waiting receiver looks every
//! [`EXTERNAL_POLL`] at SQLite's `data_version` on the writer connection, which moves
//! when any other connection commits (never for the writer's own commits, which the
//! notifiers already announce), and wakes every queue when it has moved: one empty
//! transaction, not a receive, per interval.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::params;
use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{Delivery, DeliveryPolicy, Receipt, Result};

use super::{LEASE_EXPIRED, SqliteQueue, millis, now};
use crate::db::sql;

/// How often a waiting receiver checks whether another process has written to the
/// database (the fallback for writes no local notifier announces).
pub const EXTERNAL_POLL: Duration = Duration::from_secs(3);

impl SqliteQueue {
    /// [`Queue::receive`](troupe_core::Queue::receive): leases up to `max` ready
    /// messages, waiting up to `wait` for the first (see the module docs for what
    /// wakes a wait).
    pub(super) async fn receive_waiting(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let policy = self.policy(queue).await?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let waker = self.waker(queue);
        loop {
            // Registered before looking, so a write between the look and the sleep
            // still wakes it.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, due_ms) = self.receive_now(queue, max, &policy).await?;
            let now_tokio = tokio::time::Instant::now();
            if !got.is_empty() || now_tokio >= deadline {
                return Ok(got);
            }
            let wake_at = match due_ms {
                Some(at) => {
                    let until = u64::try_from(at - now(&*self.clock)).unwrap_or(0);
                    deadline.min(now_tokio + Duration::from_millis(until))
                }
                None => deadline,
            };
            loop {
                let nap_end = wake_at.min(tokio::time::Instant::now() + EXTERNAL_POLL);
                match tokio::time::timeout_at(nap_end, notified.as_mut()).await {
                    // Woken by a local write, or something is due: look again.
                    Ok(()) => break,
                    Err(_) if nap_end >= wake_at => break,
                    Err(_) if self.written_elsewhere().await => break,
                    Err(_) => {}
                }
            }
        }
    }

    /// Whether another connection (another process) wrote to the database since the
    /// last look; when it did, every queue is woken, since such a write says nothing
    /// about which queue it touched.
    async fn written_elsewhere(&self) -> bool {
        {
            // One look per interval serves every waiting receiver (a moved version
            // wakes them all).
            let now = tokio::time::Instant::now();
            let mut last = self
                .external_check
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| now.duration_since(t) < EXTERNAL_POLL) {
                return false;
            }
            *last = Some(now);
        }
        let version = self
            .db
            .write(|c| {
                c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                    .map_err(sql)
            })
            .await;
        let changed = match version {
            Ok(v) => self.data_version.swap(v, Ordering::Relaxed) != v,
            // Cannot tell: look, as a poll would.
            Err(_) => true,
        };
        if changed {
            self.wake_all();
        }
        changed
    }

    /// Leases up to `max` ready messages now; when there are none, also returns the
    /// earliest time (ms) one becomes visible, if any is queued.
    pub(super) async fn receive_now(
        &self,
        queue: &str,
        max: usize,
        policy: &DeliveryPolicy,
    ) -> Result<(Vec<Delivery>, Option<i64>)> {
        let now = now(&*self.clock);
        let lease = format!("{}.{}", self.owner, uuid::Uuid::new_v4().simple());
        let name = queue.to_owned();
        let max_deliveries = policy.max_deliveries;
        let until = now.saturating_add(millis(policy.visibility_timeout));
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .write(move |tx| {
                let mut out = Vec::new();
                {
                    // Oldest visible first; only as many rows as the batch needs, so a
                    // deep backlog costs nothing extra per receive.
                    let mut candidates = tx
                        .prepare_cached(
                            "SELECT seq, deliveries FROM messages
                             WHERE queue = ?1 AND dead = 0 AND visible_at <= ?2
                             ORDER BY visible_at, seq LIMIT ?3",
                        )
                        .map_err(sql)?;
                    // A lease that ran out on the message's last delivery: dead-letter.
                    let mut bury = tx
                        .prepare_cached(
                            "UPDATE messages SET dead = 1, reason = ?2, dead_at = ?3, lease = NULL,
                               last_error = CASE WHEN lease IS NOT NULL THEN ?4 ELSE last_error END
                             WHERE seq = ?1",
                        )
                        .map_err(sql)?;
                    let mut take = tx
                        .prepare_cached(
                            "UPDATE messages SET lease = ?2, visible_at = ?3, deliveries = deliveries + 1,
                               last_error = CASE WHEN lease IS NOT NULL THEN ?4 ELSE last_error END
                             WHERE seq = ?1
                             RETURNING id, body, deliveries, enqueued_at",
                        )
                        .map_err(sql)?;
                    loop {
                        let want = max - i64::try_from(out.len()).unwrap_or(i64::MAX);
                        let rows: Vec<(i64, u32)> = candidates
                            .query_map(params![name, now, want], |r| Ok((r.get(0)?, r.get(1)?)))
                            .map_err(sql)?
                            .collect::<rusqlite::Result<_>>()
                            .map_err(sql)?;
                        let fetched = rows.len();
                        let mut buried = 0;
                        for (seq, deliveries) in rows {
                            if deliveries >= max_deliveries {
                                bury.execute(params![seq, REASON_MAX_DELIVERIES, now, LEASE_EXPIRED])
                                    .map_err(sql)?;
                                buried += 1;
                                continue;
                            }
                            let (id, body, deliveries, enqueued_at): (String, Vec<u8>, u32, i64) = take
                                .query_row(params![seq, lease, until, LEASE_EXPIRED], |r| {
                                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                                })
                                .map_err(sql)?;
                            out.push(Delivery {
                                receipt: Receipt { handle: format!("{seq}:{lease}"), message_id: id.clone() },
                                id,
                                body,
                                deliveries,
                                enqueued_at_ms: u64::try_from(enqueued_at).unwrap_or(0),
                            });
                        }
                        if buried == 0 || fetched == 0 {
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok((out, None));
                }
                // Nothing ready: every live message is delayed or leased, and the
                // first of them to become visible is when to look again.
                let due: Option<i64> = tx
                    .prepare_cached("SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND dead = 0")
                    .and_then(|mut st| st.query_row([&name], |r| r.get(0)))
                    .map_err(sql)?;
                Ok((out, due))
            })
            .await
    }
}
