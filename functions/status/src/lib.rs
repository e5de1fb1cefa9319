//! `status`: subscribes to every document event. Each event is folded into the
//! document's record and then appended to its audit trail (stored once per event id):
//! progress is a set of batches, and the status only moves forward
//! (`uploaded → processing → indexed | failed`, then `deleted`), so late and repeated
//! events change nothing.
//!
//! A settled document goes on the retention work list (`settled/`). Once compensation
//! of a deletion is recorded (`document.compensated` caused by `document.deleted`), the
//! document is forgotten: record, trail and working state go, a tombstone stays, and
//! any later event for it is acknowledged and dropped.

use troupe_guest::documents::{self, Change, Document, Failure, Status};
use troupe_guest::events::{
    self, Compensated, Completed, Deleted, Extracted, Failed, Inspected, Payload, Uploaded,
};
use troupe_guest::stages::{self, data};
use troupe_guest::{Event, Outcome, each, now_ms, now_rfc3339, retention, state};

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, fold)
}

fn fold(event: &Event) -> Result<Outcome> {
    let tenant = stages::tenant(event);
    let id = match stages::subject(event) {
        Ok(id) => id,
        Err(rejected) => return Ok(rejected),
    };
    // Deleted and forgotten: a late event must not bring any of it back.
    if retention::is_gone(&tenant, &id)? {
        return Ok(Outcome::Ok);
    }
    let topic = stages::topic_of(event);
    if topic == events::COMPENSATED && data::<Compensated>(event)?.cause == Deleted::TYPE {
        retention::forget(&tenant, &id)?;
        return Ok(Outcome::Ok);
    }
    // Logged once the record shows the event: whoever sees it in the trail or the
    // tenant's feed (`GET /v1/events`) and then reads the record finds it there. A
    // crash in between logs it on redelivery (the record's change is then a no-op).
    let log = || {
        state::append_event(&documents::log_subject(&tenant, &id), event)
            .map_err(host(format!("appending to the audit trail of {id}")))
    };
    if topic == events::UPLOADED {
        let trace = documents::trace_id(event.traceparent.as_deref());
        documents::register(&tenant, &data::<Uploaded>(event)?, trace)?;
        log()?;
        return Ok(Outcome::Ok);
    }
    let change: Box<dyn Fn(&mut Document) -> bool> = match topic {
        events::EXTRACTED => {
            let x: Extracted = data(event)?;
            Box::new(move |d| {
                let changed = d.chunks != Some(x.chunks) || d.progress.total != x.batches;
                d.chunks = Some(x.chunks);
                d.progress.total = x.batches;
                advance(d, Status::Processing) || changed
            })
        }
        events::EMBEDDING_COMPLETED => {
            let c: Completed = data(event)?;
            Box::new(move |d| {
                if d.batches_done.contains(&c.batch) {
                    return false;
                }
                d.batches_done.push(c.batch);
                d.batches_done.sort_unstable();
                d.progress.done = u32::try_from(d.batches_done.len()).unwrap_or(u32::MAX);
                d.progress.total = d.progress.total.max(c.of);
                d.progressed_ms = now_ms();
                advance(d, Status::Processing);
                true
            })
        }
        events::INSPECTED => {
            let i: Inspected = data(event)?;
            Box::new(move |d| {
                if d.sha256.as_deref() == Some(i.sha256.as_str()) {
                    return false;
                }
                d.sha256 = Some(i.sha256.clone());
                d.title = i.title.clone();
                d.pages = i.pages;
                d.sniffed_type = i.sniffed_type.clone();
                true
            })
        }
        events::INDEXED => Box::new(|d| advance(d, Status::Indexed)),
        events::FAILED => {
            let f: Failed = data(event)?;
            Box::new(move |d| {
                let moved = advance(d, Status::Failed);
                if moved {
                    d.error = Some(Failure {
                        code: f.code.clone(),
                        message: f.message.clone(),
                    });
                }
                moved
            })
        }
        events::DELETED => Box::new(|d| advance(d, Status::Deleted)),
        // Compensation and anything newer: the audit trail is all.
        _ => {
            log()?;
            return Ok(Outcome::Ok);
        }
    };
    let key = documents::key(&tenant, &id);
    let mut missing = false;
    let mut settled = false;
    documents::update(&key, |current: Option<Document>| {
        let Some(mut doc) = current else {
            missing = true;
            return Change::Keep;
        };
        let changed = change(&mut doc);
        settled = doc.status.settled();
        if changed {
            doc.updated_at = now_rfc3339();
            Change::Put(doc)
        } else {
            Change::Keep
        }
    })?;
    if missing {
        // The record is written before `uploaded` is published, so this event
        // overtook nothing: the document is unknown. Retry; it dead-letters if it
        // stays unknown.
        return Ok(Outcome::Retry(Some(1000)));
    }
    log()?;
    if settled {
        state::delete(&documents::active_key(&tenant, &id), None)
            .map_err(host(format!("clearing the active marker of {id}")))?;
        retention::mark_settled(&tenant, &id)?;
    }
    Ok(Outcome::Ok)
}

/// Moves `doc` to `to` if that is forward; says whether it moved.
fn advance(doc: &mut Document, to: Status) -> bool {
    if to.rank() <= doc.status.rank() {
        return false;
    }
    doc.status = to;
    doc.progressed_ms = now_ms();
    true
}
