//! `intake`: a file written straight into the blob store's uploads prefix (not
//! through the API) becomes a document just as an upload does: recorded, then
//! `document.uploaded`. The document id derives from bucket, key, ETag and the
//! announcement's time, so a repeated delivery registers it once while a file written
//! again is a new document. The document gets its own copy under `docs/`; a file
//! over `max_upload_bytes` fails with `too_large`.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use troupe_guest::events::{self, BlobRef, Failed, Uploaded};
use troupe_guest::stages;
use troupe_guest::{Event, Outcome, blobs, config_u64, documents, each, reject};
use troupe_text::Kind;

use troupe_guest::{Result, host};
troupe_guest::event_function!(handle);

/// The parts of the S3-shaped object-created record used here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_time: String,
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

fn intake(event: &Event) -> Result<Outcome> {
    let record: Record = match stages::data(event) {
        Ok(r) => r,
        Err(why) => return Ok(reject("malformed_notification", why.to_string())),
    };
    let (bucket, object) = (record.s3.bucket.name.clone(), record.s3.object);
    let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
    if name.is_empty() || name.starts_with('.') {
        // A folder marker or a hidden (partial) file: not a document.
        return Ok(Outcome::Ok);
    }
    // One announcement is one document, however often it is delivered; the same key
    // written again (a new announcement) is a new document.
    let digest = Sha256::digest(
        format!(
            "{bucket}\n{}\n{}\n{}",
            object.key, object.e_tag, record.event_time
        )
        .as_bytes(),
    );
    let id = hex::encode(&digest[..16]);
    let tenant = stages::tenant(event);
    let mut up = Uploaded {
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
    let limit = config_u64("max_upload_bytes", 50 * 1024 * 1024);
    let refusal = if up.size > limit {
        Some((
            "too_large",
            format!(
                "{} is {} bytes; the limit is {limit} (variable `max_upload_bytes`)",
                up.name, up.size
            ),
        ))
    } else if documents::load(&tenant, &id)?.is_none() {
        documents::over_quota(&tenant, up.size)?.map(|why| ("quota_exceeded", why))
    } else {
        None // registered by an earlier delivery: its bytes are counted already
    };
    if let Some((code, message)) = refusal {
        // Recorded as failed, without its bytes: nothing of it is kept.
        up.size = 0;
        documents::register(
            &tenant,
            &up,
            documents::trace_id(event.traceparent.as_deref()),
        )?;
        let failed = Failed {
            document: id.clone(),
            code: code.into(),
            message,
            stage: "intake".into(),
        };
        let ev = stages::new(events::id::failed(&id), &tenant, &id, &failed);
        stages::publish(ev, Some(event))?;
        return Ok(Outcome::Ok);
    }
    // The document keeps its own copy: the dropped-in key may be overwritten or
    // removed, and deleting the document must not touch another one's file.
    let Some(bytes) = blobs::get(&up.blob.bucket, &up.blob.key)
        .map_err(host(format!("reading {}", up.blob.key)))?
    else {
        return Ok(Outcome::Ok); // removed before it could be read: nothing to ingest
    };
    let copy = BlobRef {
        bucket: up.blob.bucket.clone(),
        key: format!("docs/{tenant}/{id}"),
    };
    blobs::put(&copy.bucket, &copy.key, &bytes)
        .map_err(host(format!("copying to {}", copy.key)))?;
    up.size = bytes.len() as u64;
    up.blob = copy;
    documents::register(
        &tenant,
        &up,
        documents::trace_id(event.traceparent.as_deref()),
    )?;
    let uploaded = stages::new(events::id::uploaded(&id), &tenant, &id, &up);
    stages::publish(uploaded, Some(event))?;
    Ok(Outcome::Ok)
}
