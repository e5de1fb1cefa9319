//! Writing messages: fan-out to subscriptions, the dedupe window, and its sweeping.

use std::time::Duration;

use rusqlite::{Connection, params};
use troupe_core::{DeliveryPolicy, Error, Message, Result};

use super::millis;
use crate::db::sql;

/// How often enqueues sweep expired dedupe entries.
const DEDUPE_PURGE_EVERY_MS: i64 = 60_000;

/// Deletes expired dedupe entries if the last sweep is a minute old.
pub(super) fn purge_if_due(
    tx: &Connection,
    now: i64,
    last: &std::sync::atomic::AtomicI64,
) -> Result<()> {
    use std::sync::atomic::Ordering;
    let prev = last.load(Ordering::Relaxed);
    if now - prev >= DEDUPE_PURGE_EVERY_MS
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tx.prepare_cached("DELETE FROM dedupe WHERE expires_at <= ?1")
            .and_then(|mut st| st.execute([now]))
            .map_err(sql)?;
    }
    Ok(())
}

/// Copies `messages` into every matching subscription of `topic`; returns the copies
/// made and the queues that got any.
pub(super) fn fan_out(
    tx: &Connection,
    topic: &str,
    messages: &[Message],
    now: i64,
    copies: usize,
) -> Result<(usize, Vec<String>)> {
    let subs: Vec<(String, Option<String>, String)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT s.name, s.subject_prefix, s.policy FROM subscription_topics t
                 JOIN subscriptions s ON s.name = t.subscription
                 WHERE t.topic = ?1",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([topic], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    let mut count = 0;
    let mut touched = Vec::new();
    for (name, prefix, policy) in subs {
        let policy: DeliveryPolicy = serde_json::from_str(&policy).map_err(|e| Error::Corrupt {
            what: format!("policy of `{name}`"),
            why: e.to_string(),
        })?;
        let mut any = false;
        for m in messages {
            let matches = match (&prefix, &m.subject) {
                (None, _) => true,
                (Some(p), Some(s)) => s.starts_with(p.as_str()),
                (Some(_), None) => false,
            };
            if matches && enqueue(tx, &name, m, policy.dedupe_window, now, copies)? {
                count += 1;
                any = true;
            }
        }
        if any {
            touched.push(name);
        }
    }
    Ok((count, touched))
}

/// Inserts one message into one queue unless its id is inside the dedupe window.
pub(super) fn enqueue(
    tx: &Connection,
    queue: &str,
    msg: &Message,
    dedupe: Duration,
    now: i64,
    copies: usize,
) -> Result<bool> {
    let expires = now.saturating_add(millis(dedupe));
    let fresh = tx
        .prepare_cached(
            "INSERT INTO dedupe (queue, id, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (queue, id) DO UPDATE SET expires_at = excluded.expires_at
             WHERE dedupe.expires_at <= ?4",
        )
        .and_then(|mut st| st.execute(params![queue, msg.id, expires, now]))
        .map_err(sql)?
        == 1;
    if !fresh {
        return Ok(false);
    }
    let visible_at = now.saturating_add(millis(msg.delay));
    for _ in 0..copies {
        tx.prepare_cached(
            "INSERT INTO messages (queue, id, body, visible_at, enqueued_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut st| st.execute(params![queue, msg.id, msg.body, visible_at, now]))
        .map_err(sql)?;
    }
    Ok(true)
}
