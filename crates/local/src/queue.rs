//! Durable queues and topics in SQLite.
//!
//! One `messages` table holds every queue: a row is ready when `visible_at <= now`,
//! leased while `lease` is set and `visible_at` is in the future, and dead-lettered when
//! `dead = 1`. A subscription's topics are rows of `subscription_topics`; a publish
//! copies each message to every subscription listed for its topic. Receiving,
//! settling, fan-out and retiring a subscription are single transactions, so a crash
//! at any point leaves each message either enqueued or not, never half-moved.
//!
//! A receive with nothing ready does not poll: it sleeps until this process writes
//! to the queue, the queue's next delayed or leased message falls due, or (checked
//! every [`EXTERNAL_POLL`]) another process has written to the database
//! ([`receive`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;
use troupe_core::queue::REASON_MAX_DELIVERIES;
use troupe_core::{
    Clock, Delivery, DeliveryPolicy, Depth, Error, Message, Queue, Receipt, Result, Retired,
    RetryOutcome, Subscription,
};

use crate::db::{Db, sql};

mod dead_letters;
mod defer;
mod enqueue;
mod leases;
mod receive;
mod retire;

pub use receive::EXTERNAL_POLL;

use enqueue::{enqueue, fan_out, purge_if_due};

/// Lease-expired deliveries carry this as their last error.
const LEASE_EXPIRED: &str = "visibility timeout expired before the message was settled";

/// SQLite-backed [`Queue`] and [`DeadLetters`](troupe_core::DeadLetters).
#[derive(Clone)]
pub struct SqliteQueue {
    db: Db,
    clock: Arc<dyn Clock>,
    /// Jitter source; seeded in tests for repeatable delays.
    rng: Arc<Mutex<StdRng>>,
    /// Policies by queue name, so receive does not read them on every call.
    policies: Arc<Mutex<HashMap<String, DeliveryPolicy>>>,
    /// Wakes receivers waiting on a queue when this process enqueues into it.
    wakers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// The writer connection's `data_version` when a waiting receiver last looked:
    /// when it moves, another process has written (see [`EXTERNAL_POLL`]).
    data_version: Arc<std::sync::atomic::AtomicI64>,
    /// When a receiver last looked at `data_version`, so that one look per
    /// [`EXTERNAL_POLL`] serves them all.
    external_check: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// When expired dedupe entries were last removed (ms); enqueues purge once a minute.
    last_purge: Arc<std::sync::atomic::AtomicI64>,
    /// Test switch: every message is enqueued twice (bypassing dedupe), so tests can
    /// prove handlers idempotent under at-least-once delivery.
    duplicate_deliveries: bool,
    /// Who this process is: every lease token it takes starts with `<owner>.`, so the
    /// leases of a process that died can be found and released
    /// ([`SqliteQueue::release_owner`]).
    owner: Arc<str>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue").finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)
}

fn parse_handle(queue: &str, receipt: &Receipt) -> Result<(i64, String)> {
    let bad = || {
        Error::invalid(
            "receipt",
            format!("`{}` is not a receipt of `{queue}`", receipt.handle),
        )
    };
    let (seq, lease) = receipt.handle.split_once(':').ok_or_else(bad)?;
    Ok((seq.parse().map_err(|_| bad())?, lease.to_owned()))
}

impl SqliteQueue {
    /// A queue over `db`, reading time from `clock`.
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            clock,
            rng: Arc::new(Mutex::new(StdRng::from_os_rng())),
            policies: Arc::default(),
            wakers: Arc::default(),
            data_version: Arc::default(),
            external_check: Arc::default(),
            last_purge: Arc::default(),
            duplicate_deliveries: false,
            owner: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }

    /// Takes leases as `owner` (a process's id in the data directory's registry).
    #[must_use]
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = owner.into();
        self
    }

    /// Releases every lease `owner` (a process that has died) still holds: its
    /// messages are deliverable at once, and the delivery it never finished is not
    /// counted (the process died, not the message). Returns how many were released.
    pub async fn release_owner(&self, owner: &str) -> Result<usize> {
        let now = now(&*self.clock);
        // Lease tokens are `<owner>.<random>`: a range on the prefix.
        let (from, to) = (format!("{owner}."), format!("{owner}/"));
        let released = self
            .db
            .write(move |tx| {
                crate::db::exec(
                    tx,
                    "UPDATE messages SET lease = NULL, visible_at = MIN(visible_at, ?3),
                       deliveries = MAX(deliveries - 1, 0)
                     WHERE lease >= ?1 AND lease < ?2 AND dead = 0",
                    params![from, to, now],
                )
                .map_err(sql)
            })
            .await?;
        if released > 0 {
            self.wake_all();
        }
        Ok(released)
    }

    /// Seeds the jitter source (tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }

    /// Enqueues every message twice (the at-least-once test switch).
    #[must_use]
    pub fn with_duplicate_deliveries(mut self, on: bool) -> Self {
        self.duplicate_deliveries = on;
        self
    }

    fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakers = self
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wakers.entry(queue.to_owned()).or_default().clone()
    }

    fn wake(&self, queues: &[String]) {
        for q in queues {
            self.waker(q).notify_waiters();
        }
    }

    /// Wakes every receiver waiting on any queue.
    fn wake_all(&self) {
        let wakers: Vec<Arc<Notify>> = self
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for w in wakers {
            w.notify_waiters();
        }
    }

    async fn policy(&self, queue: &str) -> Result<DeliveryPolicy> {
        if let Some(p) = self
            .policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(queue)
        {
            return Ok(p.clone());
        }
        let name = queue.to_owned();
        let policy = self
            .db
            .read(move |c| {
                let json: Option<String> = c
                    .query_row(
                        "SELECT policy FROM subscriptions WHERE name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                let json = json.ok_or_else(|| Error::NoSuchQueue(name.clone()))?;
                serde_json::from_str::<DeliveryPolicy>(&json).map_err(|e| Error::Corrupt {
                    what: format!("policy of `{name}`"),
                    why: e.to_string(),
                })
            })
            .await?;
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(queue.to_owned(), policy.clone());
        Ok(policy)
    }

    /// Publishes like [`Queue::publish`] and runs `also` in the same transaction: both
    /// take effect or neither (the blob store clears its outbox this way).
    pub async fn publish_with<F>(&self, topic: &str, messages: &[Message], also: F) -> Result<usize>
    where
        F: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        let topic = topic.to_owned();
        let messages = messages.to_vec();
        let now = now(&*self.clock);
        let copies = if self.duplicate_deliveries { 2 } else { 1 };
        let last_purge = self.last_purge.clone();
        let (count, touched) = self
            .db
            .write(move |tx| {
                purge_if_due(tx, now, &last_purge)?;
                let out = fan_out(tx, &topic, &messages, now, copies)?;
                also(tx)?;
                Ok(out)
            })
            .await?;
        self.wake(&touched);
        Ok(count)
    }

    /// The database, for backends that share its transactions.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Removes dedupe entries whose window has passed; returns how many.
    pub async fn purge_expired_dedupe(&self) -> Result<usize> {
        let now = now(&*self.clock);
        self.db
            .write(move |c| {
                crate::db::exec(c, "DELETE FROM dedupe WHERE expires_at <= ?1", [now]).map_err(sql)
            })
            .await
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn subscribe(&self, s: &Subscription) -> Result<()> {
        s.check()?;
        let policy = serde_json::to_string(&s.policy)
            .map_err(|e| Error::invalid("policy", e.to_string()))?;
        let s2 = s.clone();
        self.db
            .write(move |c| {
                crate::db::exec(
                    c,
                    "INSERT INTO subscriptions (name, subject_prefix, policy) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET
                       subject_prefix = excluded.subject_prefix, policy = excluded.policy",
                    params![s2.name, s2.subject_prefix, policy],
                )
                .map_err(sql)?;
                // A redeclared subscription takes exactly its new list: a topic it
                // dropped reaches it no more.
                crate::db::exec(
                    c,
                    "DELETE FROM subscription_topics WHERE subscription = ?1",
                    [&s2.name],
                )
                .map_err(sql)?;
                for topic in &s2.topics {
                    crate::db::exec(
                        c,
                        "INSERT INTO subscription_topics (topic, subscription) VALUES (?1, ?2)",
                        params![topic, s2.name],
                    )
                    .map_err(sql)?;
                }
                Ok(())
            })
            .await?;
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(s.name.clone(), s.policy.clone());
        Ok(())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.db
            .read(|c| {
                let mut stmt = c
                    .prepare(
                        "SELECT s.name, s.subject_prefix, s.policy, t.topic FROM subscriptions s
                         LEFT JOIN subscription_topics t ON t.subscription = s.name
                         ORDER BY s.name, t.topic",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    })
                    .map_err(sql)?;
                let mut out: Vec<Subscription> = Vec::new();
                for row in rows {
                    let (name, subject_prefix, policy, topic) = row.map_err(sql)?;
                    if out.last().is_none_or(|s| s.name != name) {
                        let policy = serde_json::from_str(&policy).map_err(|e| Error::Corrupt {
                            what: format!("policy of `{name}`"),
                            why: e.to_string(),
                        })?;
                        out.push(Subscription {
                            name,
                            topics: Vec::new(),
                            subject_prefix,
                            policy,
                        });
                    }
                    if let (Some(topic), Some(s)) = (topic, out.last_mut()) {
                        s.topics.push(topic);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<usize> {
        self.publish_with(topic, messages, |_| Ok(())).await
    }

    async fn send(&self, queue: &str, messages: &[Message]) -> Result<usize> {
        let policy = self.policy(queue).await?;
        let name = queue.to_owned();
        let messages = messages.to_vec();
        let now = now(&*self.clock);
        let copies = if self.duplicate_deliveries { 2 } else { 1 };
        let last_purge = self.last_purge.clone();
        let count = self
            .db
            .write(move |tx| {
                purge_if_due(tx, now, &last_purge)?;
                let mut count = 0;
                for m in &messages {
                    if enqueue(tx, &name, m, policy.dedupe_window, now, copies)? {
                        count += 1;
                    }
                }
                Ok(count)
            })
            .await?;
        self.wake(&[queue.to_owned()]);
        Ok(count)
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.receive_waiting(queue, max, wait).await
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<usize> {
        let parsed = receipts
            .iter()
            .map(|r| parse_handle(queue, r))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |tx| {
                let mut settled = 0;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "DELETE FROM messages WHERE seq = ?1 AND lease = ?2 AND dead = 0",
                        )
                        .map_err(sql)?;
                    for (seq, lease) in &parsed {
                        settled += stmt.execute(params![seq, lease]).map_err(sql)?;
                    }
                }
                Ok(settled)
            })
            .await
    }

    async fn retry(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<RetryOutcome> {
        let policy = self.policy(queue).await?;
        let (seq, lease) = parse_handle(queue, receipt)?;
        let now = now(&*self.clock);
        let name = queue.to_owned();
        let id = receipt.message_id.clone();
        let error = error.to_owned();
        let rng = self.rng.clone();
        let outcome = self
            .db
            .write(move |tx| {
                let deliveries: Option<u32> = tx
                    .query_row(
                        "SELECT deliveries FROM messages WHERE seq = ?1 AND lease = ?2 AND dead = 0",
                        params![seq, lease],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                let deliveries = deliveries.ok_or_else(|| Error::LeaseLost { queue: name, message: id })?;
                let outcome = if deliveries >= policy.max_deliveries {
                    crate::db::exec(
                        tx,
                        "UPDATE messages SET dead = 1, reason = ?2, last_error = ?3, dead_at = ?4, lease = NULL
                         WHERE seq = ?1",
                        params![seq, REASON_MAX_DELIVERIES, error, now],
                    )
                    .map_err(sql)?;
                    RetryOutcome::DeadLettered
                } else {
                    let delay = delay.unwrap_or_else(|| {
                        let mut rng = rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        policy.backoff(deliveries, &mut *rng)
                    });
                    crate::db::exec(
                        tx,
                        "UPDATE messages SET visible_at = ?2, last_error = ?3, lease = NULL WHERE seq = ?1",
                        params![seq, now.saturating_add(millis(delay)), error],
                    )
                    .map_err(sql)?;
                    RetryOutcome::Scheduled(delay)
                };
                Ok(outcome)
            })
            .await?;
        // Waiting receivers learn the new due time (they sleep until the earliest).
        self.wake(&[queue.to_owned()]);
        Ok(outcome)
    }

    async fn defer(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.defer_delivery(queue, receipt, delay).await
    }

    async fn reject(
        &self,
        queue: &str,
        receipt: &Receipt,
        reason: &str,
        detail: &str,
    ) -> Result<()> {
        let (seq, lease) = parse_handle(queue, receipt)?;
        let now = now(&*self.clock);
        let (name, id) = (queue.to_owned(), receipt.message_id.clone());
        let (reason, detail) = (reason.to_owned(), detail.to_owned());
        self.db
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE messages SET dead = 1, reason = ?3, last_error = ?4, dead_at = ?5, lease = NULL
                         WHERE seq = ?1 AND lease = ?2 AND dead = 0",
                        params![seq, lease, reason, detail, now],
                    )
                    .map_err(sql)?;
                if n == 0 {
                    return Err(Error::LeaseLost { queue: name, message: id });
                }
                Ok(())
            })
            .await
    }

    async fn depth(&self, queue: &str) -> Result<Depth> {
        let name = queue.to_owned();
        let now = now(&*self.clock);
        self.db
            .read(move |c| {
                c.query_row(
                    "SELECT
                       COALESCE(SUM(dead = 0 AND visible_at <= ?2), 0),
                       COALESCE(SUM(dead = 0 AND visible_at > ?2), 0),
                       COALESCE(SUM(dead = 1), 0),
                       MIN(CASE WHEN dead = 0 THEN enqueued_at END)
                     FROM messages WHERE queue = ?1",
                    params![name, now],
                    |r| {
                        let oldest: Option<i64> = r.get(3)?;
                        Ok(Depth {
                            ready: r.get(0)?,
                            in_flight: r.get(1)?,
                            dead: r.get(2)?,
                            oldest_age_ms: Some(
                                oldest.map_or(0, |t| u64::try_from(now - t).unwrap_or(0)),
                            ),
                        })
                    },
                )
                .map_err(sql)
            })
            .await
    }

    async fn health(&self) -> Result<()> {
        self.db
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await
    }

    async fn retire(&self, from: &str, into: &str) -> Result<Retired> {
        self.retire_into(from, into).await
    }
}
