//! `sweeper` (cron, and `message.dead-lettered`): stuck work, dead work, and the
//! temporary-blob purge.
//!
//! Each tick runs once per tenant (the host's doing) and walks that tenant's active
//! documents; one that made no progress for longer
//! than its stage allows (`uploaded_timeout_ms`, default 15 min; `processing_timeout_ms`,
//! default 30 min) becomes `document.failed` with reason `timeout`. Once per
//! `purge_interval_ms` (default a day) it deletes the chunk blobs of settled documents.
//!
//! A notice that an event about a document was dead-lettered (a stage trapped, hit
//! its memory cap or timed out on it, rejected it, or used up its deliveries) fails
//! the document at once, with reason `<stage>_failed` (`extract_failed`,
//! `inspect_failed`, …) and the dead letter's reason in the message, unless it has
//! already settled (a webhook or compensation that dead-letters changes nothing).
//!
//! The [`retention`] pass removes settled and deleted documents' leftover state.

mod retention;

use troupe_guest::documents::{self, Status};
use troupe_guest::events::{self, DeadLettered, Failed, Payload};
use troupe_guest::stages;
use troupe_guest::{Event, Outcome, blobs, bucket, config_u64, each, log, logging, now_ms, state};

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, |event| {
        if event.type_ == DeadLettered::TYPE {
            return dead(event);
        }
        let tenant = stages::tenant(event);
        sweep(event, &tenant)?;
        purge(&tenant)?;
        retention::retain(&tenant)?;
        Ok(Outcome::Ok)
    })
}

/// Fails the document whose event was dead-lettered, if it has not settled.
fn dead(notice: &Event) -> Result<Outcome> {
    let id = match stages::subject(notice) {
        Ok(id) => id,
        // Not about a document: nothing of ours to settle.
        Err(_) => return Ok(Outcome::Ok),
    };
    let tenant = stages::tenant(notice);
    let dead: DeadLettered = match stages::data(notice) {
        Ok(d) => d,
        Err(why) => return Ok(troupe_guest::reject("malformed_event", why.to_string())),
    };
    match documents::load(&tenant, &id)? {
        Some((doc, _)) if !doc.status.settled() => {}
        // Settled (or never recorded, or gone): nothing to fail.
        _ => return Ok(Outcome::Ok),
    }
    let stage: String = dead
        .stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let failed = Failed {
        document: id.clone(),
        code: format!("{stage}_failed"),
        message: format!(
            "{stage} could not process {} after {} deliveries: {} ({}); the event is kept in dead-letter queue `{}` (`troupe dlq list {}`)",
            dead.event_type, dead.deliveries, dead.reason, dead.detail, dead.queue, dead.queue
        ),
        stage: stage.clone(),
    };
    let ev = stages::new(events::id::failed(&id), &tenant, &id, &failed);
    stages::publish(ev, Some(notice))?;
    Ok(Outcome::Ok)
}

fn sweep(tick: &Event, tenant: &str) -> Result<()> {
    let now = now_ms();
    let keys = state::list_keys(&format!("{}{tenant}/", documents::ACTIVE_PREFIX))
        .map_err(host("listing active documents"))?;
    for key in keys {
        // One bad record must not stop the sweep of the others.
        if let Err(why) = sweep_one(tick, &key, now) {
            log(logging::Level::Warn, &format!("sweeping {key}: {why}"));
        }
    }
    Ok(())
}

fn sweep_one(tick: &Event, key: &str, now: u64) -> Result<()> {
    {
        let Some((tenant, id)) = key
            .strip_prefix(documents::ACTIVE_PREFIX)
            .and_then(|r| r.split_once('/'))
        else {
            return Ok(());
        };
        let doc = match documents::load(tenant, id)? {
            Some((doc, _)) if !doc.status.settled() => doc,
            // Settled or gone: the marker is stale.
            _ => {
                state::delete(key, None).map_err(host(format!("clearing {key}")))?;
                return Ok(());
            }
        };
        let limit = match doc.status {
            Status::Uploaded => config_u64("uploaded_timeout_ms", 15 * 60_000),
            _ => config_u64("processing_timeout_ms", 30 * 60_000),
        };
        // Progress is what the record shows, or a stage's heartbeat (extract writes one
        // when it starts: a long extraction is not a stuck document).
        let heartbeat = documents::heartbeat(tenant, id)?;
        let idle = now.saturating_sub(doc.progressed_ms.max(heartbeat));
        if idle <= limit {
            return Ok(());
        }
        let failed = Failed {
            document: id.to_owned(),
            code: "timeout".into(),
            message: format!(
                "no progress for {} s while {} (limit {} s; {} of {} batches embedded)",
                idle / 1000,
                doc.status.as_str(),
                limit / 1000,
                doc.progress.done,
                doc.progress.total
            ),
            stage: "sweeper".into(),
        };
        let ev = stages::new(events::id::failed(id), tenant, id, &failed);
        stages::publish(ev, Some(tick))?;
    }
    Ok(())
}

fn purge(tenant: &str) -> Result<()> {
    let now = now_ms();
    let last_purge = format!("sweeper/{tenant}/last-purge");
    let Some(last) = state::get(&last_purge)
        .map_err(host("state"))?
        .and_then(|e| String::from_utf8_lossy(&e.value).parse::<u64>().ok())
    else {
        // The first run starts the clock: the first purge is one interval later.
        state::put(&last_purge, now.to_string().as_bytes(), None).map_err(host("state"))?;
        return Ok(());
    };
    if now.saturating_sub(last) < config_u64("purge_interval_ms", 24 * 3_600_000) {
        return Ok(());
    }
    let bucket = bucket();
    let chunks = blobs::list_objects(&bucket, &format!("chunks/{tenant}/"))
        .map_err(host("listing chunk blobs"))?;
    for key in chunks {
        let mut parts = key.split('/').skip(1);
        let (Some(tenant), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        let settled = documents::load(tenant, id)?.is_none_or(|(d, _)| d.status.settled());
        if settled {
            blobs::delete(&bucket, &key).map_err(host(format!("removing {key}")))?;
        }
    }
    state::put(&last_purge, now.to_string().as_bytes(), None).map_err(host("state"))?;
    Ok(())
}
