//! `intake`: a file written straight into the blob store's uploads prefix (not
//! through the API) becomes a document just as an upload does: recorded, then
//! `document.uploaded`. The document id derives from bucket, key and ETag, so a
//! repeated notification of the same object registers it once.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use troupe_guest::events::{self, BlobRef, Uploaded};
use troupe_guest::{Event, Outcome, documents, each, reject};
use troupe_text::Kind;

troupe_guest::event_function!(handle);

/// The parts of the S3-shaped object-created record used here.
#[derive(Deserialize)]
struct Record {
    s3: S3,
}

#[derive(Deserialize)]
struct S3 {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    key: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    e_tag: String,
}

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, intake)
}

fn intake(event: &Event) -> Result<Outcome, String> {
    let record: Record = match events::data(event) {
        Ok(r) => r,
        Err(why) => return Ok(reject("malformed_notification", why)),
    };
    let (bucket, object) = (record.s3.bucket.name, record.s3.object);
    let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
    if name.is_empty() || name.starts_with('.') {
        // A folder marker or a hidden (partial) file: not a document.
        return Ok(Outcome::Ok);
    }
    let digest = Sha256::digest(format!("{bucket}\n{}\n{}", object.key, object.e_tag).as_bytes());
    let id = hex::encode(&digest[..16]);
    let tenant = events::tenant(event);
    let up = Uploaded {
        document: id.clone(),
        content_type: Kind::from_name(&name)
            .map(|k| k.media_type().to_owned())
            .unwrap_or_default(),
        name,
        size: object.size,
        blob: BlobRef {
            bucket,
            key: object.key,
        },
    };
    documents::register(&tenant, &up)?;
    let uploaded = events::new(
        events::UPLOADED,
        format!("{id}-uploaded"),
        &tenant,
        &id,
        &up,
    );
    events::publish(events::UPLOADED, uploaded, Some(event))?;
    Ok(Outcome::Ok)
}
