//! Embedding vectors, keyed by (tenant, document, chunk, model), with exact search.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One chunk's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorRecord {
    /// Owner; every search is scoped to it.
    pub tenant: String,
    /// The document the chunk belongs to.
    pub document: String,
    /// The chunk's id within the document.
    pub chunk: String,
    /// The model that produced the vector.
    pub model: String,
    /// Unit-length vector.
    pub vector: Vec<f32>,
    /// The chunk's text, returned with search hits.
    pub text: String,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The document.
    pub document: String,
    /// The chunk.
    pub chunk: String,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The chunk's text.
    pub text: String,
}

/// Vector storage.
#[async_trait]
pub trait Vectors: Send + Sync {
    /// Stores records; a record whose key is already stored is left as it is
    /// (redelivered jobs write nothing twice). Returns how many were new.
    async fn upsert(&self, records: &[VectorRecord]) -> Result<usize>;
    /// Removes a document's vectors for good: upserts for it that arrive later (a
    /// redelivered job finishing after a delete) are ignored. Returns how many.
    async fn delete_document(&self, tenant: &str, document: &str) -> Result<usize>;
    /// Vectors stored for a document.
    async fn count(&self, tenant: &str, document: &str) -> Result<usize>;
    /// The `k` chunks of `tenant` most similar to `query` (unit length), best first.
    async fn search(&self, tenant: &str, model: &str, query: &[f32], k: usize) -> Result<Vec<Hit>>;
    /// Whether the store answers.
    async fn health(&self) -> Result<()>;
}
