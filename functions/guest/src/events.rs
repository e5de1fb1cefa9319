//! The events the pipeline choreographs with: one topic per event kind (its
//! CloudEvents type is the topic plus `.v1`), payloads as JSON in `data`.
//!
//! Ids of derived events are deterministic (`<document>-indexed`, `<job>-completed`),
//! so a handler that runs twice publishes the same event twice and the queue's dedupe
//! window keeps one.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{DEFAULT_TENANT, Event, HandlerError, Result, host, now_rfc3339, publisher};

/// A document arrived (API upload or a file dropped into the uploads prefix).
pub const UPLOADED: &str = "troupe.document.uploaded";
/// `extract` split the text into chunks and queued the embedding jobs.
pub const EXTRACTED: &str = "troupe.document.extracted";
/// `inspect` read the file's facts.
pub const INSPECTED: &str = "troupe.document.inspected";
/// Every batch is embedded and the document inspected: it is searchable.
pub const INDEXED: &str = "troupe.document.indexed";
/// The document cannot be processed; compensation follows.
pub const FAILED: &str = "troupe.document.failed";
/// A client deleted the document; compensation follows.
pub const DELETED: &str = "troupe.document.deleted";
/// Compensation removed a document's vectors and temporary blobs.
pub const COMPENSATED: &str = "troupe.document.compensated";
/// An embedding job for the worker (its payload is [`Job`]).
pub const EMBEDDING_REQUESTED: &str = "troupe.embedding.requested";
/// The worker stored one job's vectors (its payload is [`Completed`]).
pub const EMBEDDING_COMPLETED: &str = "troupe.embedding.completed";

/// The CloudEvents type of events on `topic`.
pub fn type_of(topic: &str) -> String {
    format!("{topic}.v1")
}

/// The topic of `event` (its type without the `.v1` suffix).
pub fn topic_of(event: &crate::Event) -> &str {
    event.type_.strip_suffix(".v1").unwrap_or(&event.type_)
}

/// Where an event of `topic` falls in a document's life: an event is caused only by
/// events of a lower stage. Orders events that share a timestamp.
pub fn stage(topic: &str) -> u8 {
    match topic {
        UPLOADED => 0,
        EXTRACTED | INSPECTED => 1,
        INDEXED | FAILED | DELETED => 3,
        COMPENSATED => 4,
        _ => 2, // embedding jobs and their completions, and anything newer
    }
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
}

/// Data of [`UPLOADED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Uploaded {
    /// The document id.
    pub document: String,
    /// File name, as given by the client or the dropped file.
    pub name: String,
    /// Declared media type; empty when unknown (the functions sniff).
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// The file.
    pub blob: BlobRef,
}

/// Data of [`EXTRACTED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extracted {
    /// The document id.
    pub document: String,
    /// Chunks made.
    pub chunks: u64,
    /// Embedding jobs queued (each has `of` = this).
    pub batches: u32,
    /// Model tokens in the text.
    pub tokens: u64,
}

/// Data of [`INSPECTED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspected {
    /// The document id.
    pub document: String,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Media type from the content itself; `None` for binary of no known kind.
    pub sniffed_type: Option<String>,
    /// Title, when the format has one.
    pub title: Option<String>,
    /// Pages (PDF).
    pub pages: Option<u32>,
}

/// Data of [`INDEXED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Indexed {
    /// The document id.
    pub document: String,
    /// Chunks embedded.
    pub chunks: u64,
    /// Batches embedded.
    pub batches: u32,
}

/// Data of [`FAILED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    /// The document id.
    pub document: String,
    /// Machine-readable reason: `corrupt`, `empty`, `unsupported_type`, `timeout`, ….
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// The function that gave up.
    pub stage: String,
}

/// Data of [`DELETED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    /// The document id.
    pub document: String,
}

/// Data of [`COMPENSATED`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compensated {
    /// The document id.
    pub document: String,
    /// The event type that asked for it.
    pub cause: String,
    /// Vectors removed.
    pub vectors_removed: u32,
    /// Blobs removed.
    pub blobs_removed: u32,
}

/// One chunk to embed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobChunk {
    /// Id within the document.
    pub id: String,
    /// The text.
    pub text: String,
}

/// Data of [`EMBEDDING_REQUESTED`] (the worker's job shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The document id.
    pub document: String,
    /// This batch, 1-based.
    pub batch: u32,
    /// Batches in all.
    pub of: u32,
    /// Chunks inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<JobChunk>,
    /// Chunks by reference, when too big for a message (claim-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_blob: Option<BlobRef>,
}

/// Data of [`EMBEDDING_COMPLETED`] (the worker's completion shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completed {
    /// The document id.
    pub document: String,
    /// The batch done, 1-based.
    pub batch: u32,
    /// Batches in all.
    pub of: u32,
    /// The model.
    pub model: String,
    /// Vector width.
    pub dims: u64,
    /// Chunks embedded in this batch.
    pub chunks: u64,
}

/// The tenant an event belongs to.
pub fn tenant(event: &Event) -> String {
    event
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.into())
}

/// Decodes an event's JSON data.
pub fn data<T: DeserializeOwned>(event: &Event) -> Result<T> {
    serde_json::from_slice(&event.data).map_err(|e| {
        HandlerError::Malformed(format!("event {} ({}): data: {e}", event.id, event.type_))
    })
}

/// An event about `document` on `topic`, correlated by the document id.
pub fn new(topic: &str, id: String, tenant: &str, document: &str, data: &impl Serialize) -> Event {
    Event {
        id,
        source: String::new(),
        type_: type_of(topic),
        subject: Some(document.to_owned()),
        time: now_rfc3339(),
        datacontenttype: Some("application/json".into()),
        data: serde_json::to_vec(data).unwrap_or_default(),
        tenant: Some(tenant.to_owned()),
        session: Some(document.to_owned()),
        traceparent: None,
    }
}

/// Publishes `event` to `topic`, keeping the trace of `cause` when given.
pub fn publish(topic: &str, mut event: Event, cause: Option<&Event>) -> Result<()> {
    if let Some(c) = cause {
        event.traceparent = c.traceparent.clone();
    }
    publisher::publish(topic, &event).map_err(host(format!("publishing to {topic}")))
}

/// The document an event is about: its `subject`, if it is a valid id; otherwise the
/// rejection (`bad_subject`) to answer with.
pub fn subject(event: &Event) -> Result<String, crate::Outcome> {
    event
        .subject
        .clone()
        .filter(|s| crate::documents::valid_id(s))
        .ok_or_else(|| {
            crate::reject(
                "bad_subject",
                format!("event {} names no valid document id in `subject`", event.id),
            )
        })
}

/// What a stage reacting to `document.uploaded` should do.
pub enum Upload {
    /// Work on this upload of this tenant.
    Work(String, Uploaded),
    /// Answer with this and do nothing else: the payload is unreadable (reject), the
    /// record is not there yet (retry), or the document already settled (ok).
    Skip(crate::Outcome),
}

/// Reads a `document.uploaded` event and checks its document still needs work.
pub fn upload(event: &Event) -> Result<Upload> {
    let up: Uploaded = match data(event) {
        Ok(u) => u,
        Err(why) => {
            return Ok(Upload::Skip(crate::reject(
                "malformed_event",
                why.to_string(),
            )));
        }
    };
    let tenant = tenant(event);
    Ok(match crate::documents::load(&tenant, &up.document)? {
        // Deleted and forgotten: nothing to do, ever.
        None if crate::retention::is_gone(&tenant, &up.document)? => {
            Upload::Skip(crate::Outcome::Ok)
        }
        None => Upload::Skip(crate::Outcome::Retry(Some(1000))),
        Some((doc, _)) if doc.status.settled() => Upload::Skip(crate::Outcome::Ok),
        Some(_) => Upload::Work(tenant, up),
    })
}
