//! `indexer`: the per-document join (the session is the document id). It collects
//! each batch's `embedding.completed` and `inspect`'s result in `join/<tenant>/<id>`;
//! when every batch is in and the document is inspected, it publishes
//! `document.indexed` (id `<document>-indexed`, so only once).
//!
//! A completion that arrives after the document failed or was deleted means the
//! worker stored vectors compensation had already removed: they are removed again.

use serde::{Deserialize, Serialize};
use troupe_guest::documents::{self, Change, Status};
use troupe_guest::events::{self, Completed, Indexed, Payload};
use troupe_guest::stages;
use troupe_guest::{Event, Outcome, each, reject, retention, vectors};

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

/// What has arrived for a document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Join {
    /// Batches in all; 0 until the first completion.
    of: u32,
    /// Batches embedded (a set).
    batches: Vec<u32>,
    /// Chunks embedded, over the batches in `batches`.
    chunks: u64,
    /// `inspect` is done.
    inspected: bool,
}

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, join)
}

fn join(event: &Event) -> Result<Outcome> {
    let tenant = stages::tenant(event);
    let id = match stages::subject(event) {
        Ok(id) => id,
        Err(rejected) => return Ok(rejected),
    };
    let Some((doc, _)) = documents::load(&tenant, &id)? else {
        // Deleted and forgotten: nothing to join (its vectors are tombstoned).
        if retention::is_gone(&tenant, &id)? {
            return Ok(Outcome::Ok);
        }
        return Ok(Outcome::Retry(Some(1000)));
    };
    if matches!(doc.status, Status::Failed | Status::Deleted) {
        if event.type_ == Completed::TYPE {
            vectors::delete_document(&id).map_err(host("removing late vectors"))?;
        }
        return Ok(Outcome::Ok);
    }
    let completed: Option<Completed> = if event.type_ == Completed::TYPE {
        match stages::data(event) {
            Ok(c) => Some(c),
            Err(why) => return Ok(reject("malformed_event", why.to_string())),
        }
    } else {
        None
    };
    let mut now = Join::default();
    documents::update(&format!("join/{tenant}/{id}"), |current: Option<Join>| {
        let mut j = current.unwrap_or_default();
        let mut changed = false;
        match &completed {
            Some(c) if !j.batches.contains(&c.batch) => {
                j.batches.push(c.batch);
                j.batches.sort_unstable();
                j.of = j.of.max(c.of);
                j.chunks += c.chunks;
                changed = true;
            }
            Some(_) => {}
            None if !j.inspected => {
                j.inspected = true;
                changed = true;
            }
            None => {}
        }
        now = j.clone();
        if changed {
            Change::Put(j)
        } else {
            Change::Keep
        }
    })?;
    let complete = now.inspected && now.of > 0 && now.batches.len() == now.of as usize;
    if complete && doc.status != Status::Indexed {
        let indexed = Indexed {
            document: id.clone(),
            chunks: now.chunks,
            batches: now.of,
            uploaded_at: Some(doc.created_at.clone()),
        };
        let ev = stages::new(events::id::indexed(&id), &tenant, &id, &indexed);
        stages::publish(ev, Some(event))?;
    }
    Ok(Outcome::Ok)
}
