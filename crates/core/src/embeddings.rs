//! The embedding model as the functions see it: vectors for queries, and the
//! tokenizer's token boundaries for token-aware chunking.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// What a model is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name stored with every vector it makes.
    pub name: String,
    /// Vector width.
    pub dims: usize,
    /// Tokens per input it reads, special tokens included.
    pub max_tokens: usize,
}

/// An embedding model, served by the worker.
#[async_trait]
pub trait Embeddings: Send + Sync {
    /// The model.
    fn info(&self) -> ModelInfo;
    /// Unit-length vectors for `texts`, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;
    /// Byte offsets (start, end) of each token of `text`, without special tokens or
    /// truncation.
    async fn token_spans(&self, text: String) -> Result<Vec<(u32, u32)>>;
}
