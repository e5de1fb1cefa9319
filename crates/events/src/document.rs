//! A document's life, one topic per step. Every event about a document has the
//! document id as its `subject` and `session`.

use serde::{Deserialize, Serialize};

use crate::{BlobRef, Payload};

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

/// Data of [`UPLOADED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Payload for Uploaded {
    const TOPIC: &'static str = UPLOADED;
    const TYPE: &'static str = "troupe.document.uploaded.v1";
}

/// Data of [`EXTRACTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Payload for Extracted {
    const TOPIC: &'static str = EXTRACTED;
    const TYPE: &'static str = "troupe.document.extracted.v1";
}

/// Data of [`INSPECTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Payload for Inspected {
    const TOPIC: &'static str = INSPECTED;
    const TYPE: &'static str = "troupe.document.inspected.v1";
}

/// Data of [`INDEXED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed {
    /// The document id.
    pub document: String,
    /// Chunks embedded.
    pub chunks: u64,
    /// Batches embedded.
    pub batches: u32,
    /// When the document was uploaded (RFC 3339, the document's `created_at`), so
    /// that whoever sees this event measures upload → indexed without a lookup (the
    /// host's `troupe_document_indexed_seconds`). `None` in events written before it.
    #[serde(default)]
    pub uploaded_at: Option<String>,
}

impl Payload for Indexed {
    const TOPIC: &'static str = INDEXED;
    const TYPE: &'static str = "troupe.document.indexed.v1";
}

/// Data of [`FAILED`]. Its event id is [`crate::id::failed`] whoever publishes it, so
/// the first failure of a document wins the dedupe window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// The document id.
    pub document: String,
    /// Machine-readable reason: `corrupt`, `empty`, `unsupported_type`, `timeout`, ….
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// The function (or `embed`, the worker) that gave up.
    pub stage: String,
}

impl Payload for Failed {
    const TOPIC: &'static str = FAILED;
    const TYPE: &'static str = "troupe.document.failed.v1";
}

/// Data of [`DELETED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The document id.
    pub document: String,
}

impl Payload for Deleted {
    const TOPIC: &'static str = DELETED;
    const TYPE: &'static str = "troupe.document.deleted.v1";
}

/// Data of [`COMPENSATED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensated {
    /// The document id.
    pub document: String,
    /// The CloudEvents type of the event that asked for it.
    pub cause: String,
    /// Vectors removed.
    pub vectors_removed: u32,
    /// Blobs removed.
    pub blobs_removed: u32,
}

impl Payload for Compensated {
    const TOPIC: &'static str = COMPENSATED;
    const TYPE: &'static str = "troupe.document.compensated.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `document.failed` as the worker wrote it before this crate: an untyped
    /// `json!`, so keys in sorted order.
    const WORKER_FAILED: &str = r#"{"code":"chunks_missing","document":"d","message":"the embedding job could not be processed: no object documents/chunks/t/d/1.json","stage":"embed"}"#;

    #[test]
    fn the_workers_untyped_failure_decodes() {
        let f: Failed = serde_json::from_str(WORKER_FAILED).unwrap();
        assert_eq!(f.document, "d");
        assert_eq!(f.code, "chunks_missing");
        assert_eq!(f.stage, "embed");
        let back: serde_json::Value = serde_json::to_value(&f).unwrap();
        let old: serde_json::Value = serde_json::from_str(WORKER_FAILED).unwrap();
        assert_eq!(back, old, "the typed failure writes the same object");
    }

    #[test]
    fn payloads_write_the_bytes_the_functions_wrote() {
        let up = Uploaded {
            document: "d".into(),
            name: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 3,
            blob: BlobRef {
                bucket: "documents".into(),
                key: "docs/t/d".into(),
            },
        };
        let json = r#"{"document":"d","name":"a.txt","content_type":"text/plain","size":3,"blob":{"bucket":"documents","key":"docs/t/d"}}"#;
        assert_eq!(serde_json::to_string(&up).unwrap(), json);
        assert_eq!(serde_json::from_str::<Uploaded>(json).unwrap(), up);

        let inspected = Inspected {
            document: "d".into(),
            sha256: "ab".into(),
            size: 3,
            sniffed_type: None,
            title: None,
            pages: Some(2),
        };
        let json =
            r#"{"document":"d","sha256":"ab","size":3,"sniffed_type":null,"title":null,"pages":2}"#;
        assert_eq!(serde_json::to_string(&inspected).unwrap(), json);
        assert_eq!(serde_json::from_str::<Inspected>(json).unwrap(), inspected);

        // `uploaded_at` came later: events written before it still decode.
        let old = r#"{"document":"d","chunks":4,"batches":2}"#;
        let indexed = serde_json::from_str::<Indexed>(old).unwrap();
        assert_eq!((indexed.chunks, indexed.uploaded_at), (4, None));
        let indexed = Indexed {
            uploaded_at: Some("2025-01-02T03:04:05.678Z".into()),
            ..indexed
        };
        let json =
            r#"{"document":"d","chunks":4,"batches":2,"uploaded_at":"2025-01-02T03:04:05.678Z"}"#;
        assert_eq!(serde_json::to_string(&indexed).unwrap(), json);
        assert_eq!(serde_json::from_str::<Indexed>(json).unwrap(), indexed);

        let done = Compensated {
            document: "d".into(),
            cause: Failed::TYPE.into(),
            vectors_removed: 4,
            blobs_removed: 1,
        };
        let json = r#"{"document":"d","cause":"troupe.document.failed.v1","vectors_removed":4,"blobs_removed":1}"#;
        assert_eq!(serde_json::to_string(&done).unwrap(), json);
        assert_eq!(serde_json::from_str::<Compensated>(json).unwrap(), done);
    }
}
