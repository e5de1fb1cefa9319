//! `inspect` (on `document.uploaded`, beside `extract`): what the file is, from its
//! bytes: sha256, size, the sniffed media type, title and page count. The indexer
//! waits for this as well as for the embeddings.

use sha2::{Digest, Sha256};
use troupe_guest::events::{self, Inspected};
use troupe_guest::stages::{self, Upload};
use troupe_guest::{Event, Outcome, blobs, each};
use troupe_text::Kind;

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, inspect)
}

fn inspect(event: &Event) -> Result<Outcome> {
    let (tenant, up) = match stages::upload(event)? {
        Upload::Work(tenant, up) => (tenant, up),
        Upload::Skip(outcome) => return Ok(outcome),
    };
    let id = up.document.as_str();
    let Some(bytes) =
        blobs::get(&up.blob.bucket, &up.blob.key).map_err(host("reading the file"))?
    else {
        // `extract` fails the document for this; nothing to inspect.
        return Ok(Outcome::Ok);
    };
    let sniffed = Kind::sniff(&bytes);
    let kind = Kind::from_media_type(&up.content_type)
        .or_else(|| Kind::from_name(&up.name))
        .or(sniffed);
    let facts = kind.and_then(|k| troupe_text::extract(k, &bytes).ok());
    let inspected = Inspected {
        document: id.to_owned(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        sniffed_type: sniffed.map(|k| k.media_type().to_owned()),
        title: facts.as_ref().and_then(|f| f.title.clone()),
        pages: facts.as_ref().and_then(|f| f.pages),
    };
    let ev = stages::new(events::id::inspected(id), &tenant, id, &inspected);
    stages::publish(ev, Some(event))?;
    Ok(Outcome::Ok)
}
