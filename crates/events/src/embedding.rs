//! The embedding worker's side of the pipeline: `extract` publishes a document's
//! chunks as numbered jobs, the worker stores their vectors and announces each job
//! done, and `indexer` joins the completions.

use serde::{Deserialize, Serialize};

use crate::{BlobRef, Payload};

/// An embedding job for the worker (its payload is [`Job`]).
pub const EMBEDDING_REQUESTED: &str = "troupe.embedding.requested";
/// The worker stored one job's vectors (its payload is [`Completed`]).
pub const EMBEDDING_COMPLETED: &str = "troupe.embedding.completed";

/// One chunk of a [`Job`] to embed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Id within the document; the vector's key.
    pub id: String,
    /// The text.
    pub text: String,
}

/// Data of [`EMBEDDING_REQUESTED`]: one batch of a document's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The document id.
    pub document: String,
    /// This batch, 1-based.
    pub batch: u32,
    /// Batches the document was split into.
    pub of: u32,
    /// Chunks inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
    /// Chunks by reference, a JSON array of [`Chunk`]s, when too big for a message
    /// (claim-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_blob: Option<BlobRef>,
}

impl Payload for Job {
    const TOPIC: &'static str = EMBEDDING_REQUESTED;
    const TYPE: &'static str = "troupe.embedding.requested.v1";
}

/// Data of [`EMBEDDING_COMPLETED`]. Its event id is [`crate::id::completed`] of the
/// job's, so a redelivered job's completion is deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Payload for Completed {
    const TOPIC: &'static str = EMBEDDING_COMPLETED;
    const TYPE: &'static str = "troupe.embedding.completed.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline() -> Job {
        Job {
            document: "d".into(),
            batch: 1,
            of: 2,
            chunks: vec![Chunk {
                id: "d-0".into(),
                text: "magma".into(),
            }],
            chunks_blob: None,
        }
    }

    fn by_reference() -> Job {
        Job {
            document: "d".into(),
            batch: 2,
            of: 2,
            chunks: Vec::new(),
            chunks_blob: Some(BlobRef {
                bucket: "documents".into(),
                key: "chunks/t/d/2.json".into(),
            }),
        }
    }

    #[test]
    fn jobs_as_extract_wrote_them_decode_and_encode_the_same() {
        // `extract` skipped the empty side of a job.
        let json = r#"{"document":"d","batch":1,"of":2,"chunks":[{"id":"d-0","text":"magma"}]}"#;
        assert_eq!(serde_json::from_str::<Job>(json).unwrap(), inline());
        assert_eq!(serde_json::to_string(&inline()).unwrap(), json);
        let json = r#"{"document":"d","batch":2,"of":2,"chunks_blob":{"bucket":"documents","key":"chunks/t/d/2.json"}}"#;
        assert_eq!(serde_json::from_str::<Job>(json).unwrap(), by_reference());
        assert_eq!(serde_json::to_string(&by_reference()).unwrap(), json);
    }

    #[test]
    fn jobs_as_the_worker_wrote_them_decode() {
        // The worker's own shape wrote both sides, the empty one as `[]` or `null`.
        let json = r#"{"document":"d","batch":1,"of":2,"chunks":[{"id":"d-0","text":"magma"}],"chunks_blob":null}"#;
        assert_eq!(serde_json::from_str::<Job>(json).unwrap(), inline());
        let json = r#"{"document":"d","batch":2,"of":2,"chunks":[],"chunks_blob":{"bucket":"documents","key":"chunks/t/d/2.json"}}"#;
        assert_eq!(serde_json::from_str::<Job>(json).unwrap(), by_reference());
    }

    #[test]
    fn completions_keep_their_shape() {
        // As the worker wrote it (through a `serde_json::Value`); read by `indexer`
        // and `status`.
        let json =
            r#"{"batch":1,"chunks":3,"dims":384,"document":"d","model":"all-MiniLM-L6-v2","of":2}"#;
        let done: Completed = serde_json::from_str(json).unwrap();
        assert_eq!(
            done,
            Completed {
                document: "d".into(),
                batch: 1,
                of: 2,
                model: "all-MiniLM-L6-v2".into(),
                dims: 384,
                chunks: 3,
            }
        );
        let old: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_value(&done).unwrap(), old);
    }
}
