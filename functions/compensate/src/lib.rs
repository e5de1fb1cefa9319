//! `compensate` (on `document.failed` and `document.deleted`): the saga's undo. It
//! removes the document's vectors and its temporary chunk blobs, and on delete the
//! file itself, then records `document.compensated`. Every step is idempotent, so a
//! repeated event repeats nothing harmful. A failure the record does not confirm (the
//! document was indexed first) is ignored: the status projection is the arbiter.

use troupe_guest::documents::{Status, Verdict};
use troupe_guest::events::{self, Compensated, Deleted, Payload};
use troupe_guest::stages;
use troupe_guest::{Event, Outcome, blobs, bucket, documents, each, vectors};

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, compensate)
}

fn compensate(event: &Event) -> Result<Outcome> {
    let tenant = stages::tenant(event);
    let id = match stages::subject(event) {
        Ok(id) => id,
        Err(rejected) => return Ok(rejected),
    };
    let deleted = event.type_ == Deleted::TYPE;
    if !deleted {
        match documents::verdict(&tenant, &id, Status::Failed)? {
            Verdict::Agrees => {}
            // It was indexed first: this failure lost the race and undoes nothing.
            Verdict::Disagrees => return Ok(Outcome::Ok),
            Verdict::Pending => return Ok(Outcome::Retry(Some(500))),
        }
    }
    let vectors_removed = vectors::delete_document(&id).map_err(host("removing vectors"))?;
    let bucket = bucket();
    let mut keys = blobs::list_objects(&bucket, &format!("chunks/{tenant}/{id}/"))
        .map_err(host("listing chunk blobs"))?;
    let mut source = None;
    if deleted && let Some((doc, _)) = documents::load(&tenant, &id)? {
        source = Some(doc.blob);
    }
    let mut blobs_removed = 0;
    for key in keys.drain(..) {
        if blobs::delete(&bucket, &key).map_err(host(format!("removing {key}")))? {
            blobs_removed += 1;
        }
    }
    if let Some(blob) = source
        && blobs::delete(&blob.bucket, &blob.key).map_err(host("removing the file"))?
    {
        blobs_removed += 1;
    }
    let cause = if deleted { "deleted" } else { "failed" };
    let done = Compensated {
        document: id.clone(),
        cause: event.type_.clone(),
        vectors_removed,
        blobs_removed,
    };
    let ev = stages::new(events::id::compensated(&id, cause), &tenant, &id, &done);
    stages::publish(ev, Some(event))?;
    Ok(Outcome::Ok)
}
