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

/// Why a batch failed, as every caller with an input in it hears: one failure answers
/// many callers, so it is `Clone` (TEI's `BackendError`), and it keeps the kind the
/// callers act on. It becomes an [`Error`] where the reply reaches the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The inputs are not acceptable: they fail the same way every time (HTTP 400; a
    /// rejected job).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend failed on this batch; a retry may succeed.
    #[error("embedding failed: {0}")]
    Backend(String),
    /// The backend can embed nothing more; the inference thread ends.
    #[error("the embedding backend has stopped")]
    Stopped,
}

impl From<&Error> for BatchError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Invalid(why) => BatchError::Invalid(why.clone()),
            Error::Stopped => BatchError::Stopped,
            Error::Backend(why) => BatchError::Backend(why.clone()),
            other => BatchError::Backend(other.to_string()),
        }
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Invalid(why) => Error::Invalid(why),
            BatchError::Backend(why) => Error::Backend(why),
            BatchError::Stopped => Error::Stopped,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
