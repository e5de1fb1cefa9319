//! The error every backend returns.

/// What went wrong in a backend call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compare-and-set saw another version than the caller expected.
    #[error("version conflict on `{key}`: expected {expected}, found {found}")]
    Conflict {
        /// The key written.
        key: String,
        /// The version the caller expected (0 = absent).
        expected: u64,
        /// The version actually stored (0 = absent).
        found: u64,
    },
    /// A lease was lost: the message was redelivered or settled by someone else.
    #[error(
        "lease on message {message} in `{queue}` is no longer held (it expired or was settled)"
    )]
    LeaseLost {
        /// The queue.
        queue: String,
        /// The message's id.
        message: String,
    },
    /// The queue or subscription does not exist.
    #[error("no such queue `{0}`: subscribe it first (is it in spin.toml?)")]
    NoSuchQueue(String),
    /// A caller-supplied name or value is not acceptable.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Why it is refused.
        why: String,
    },
    /// Stored data could not be decoded.
    #[error("corrupt record in {what}: {why}")]
    Corrupt {
        /// Where.
        what: String,
        /// Decoding error.
        why: String,
    },
    /// The storage engine failed; retrying may help.
    #[error("{backend} backend: {cause}")]
    Backend {
        /// Which backend (`sqlite`, `filesystem`, …).
        backend: &'static str,
        /// The underlying error, already part of the message (not a `source()`, so an
        /// error chain does not print it twice).
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps an engine error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            cause: source.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            why: why.into(),
        }
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
