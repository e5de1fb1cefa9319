//! The worker's errors.

use std::path::PathBuf;

/// What went wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model folder lacks a file.
    #[error(
        "model file {path} is missing: run `make setup` (it fetches all-MiniLM-L6-v2) or pass --model-dir with a Hugging Face-layout folder (config.json, tokenizer.json, model.safetensors)"
    )]
    ModelMissing {
        /// The file looked for.
        path: PathBuf,
    },
    /// A model file could not be read or understood.
    #[error("model {path}: {why}")]
    ModelInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The tensor library failed.
    #[error("inference failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Tokenization failed.
    #[error("tokenization failed: {0}")]
    Tokenizer(String),
    /// Admission is full: retry later (HTTP 429; a retryable nack for queue work).
    #[error("overloaded: {queued} texts are already waiting (limit {limit}); retry later")]
    Overloaded {
        /// Texts admitted and not yet answered.
        queued: usize,
        /// The admission limit.
        limit: usize,
    },
    /// The request is not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A batch failed in the backend; the caller may retry.
    #[error("embedding failed: {0}")]
    Backend(String),
    /// The inference thread has stopped.
    #[error("the embedding backend has stopped")]
    Stopped,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
