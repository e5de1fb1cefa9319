//! Why a function could not finish with an event.

use crate::{HostError, describe};

/// What went wrong while handling an event. [`crate::each`] retries
/// [`HandlerError::Host`] and [`HandlerError::State`] and dead-letters [`HandlerError::Malformed`].
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A host import failed while doing `what`; retrying later may help.
    #[error("{what}: {}", describe(cause))]
    Host {
        /// What was being done.
        what: String,
        /// The import's error.
        cause: HostError,
    },
    /// The event's payload cannot be read: retrying cannot help.
    #[error("{0}")]
    Malformed(String),
    /// Stored state is unreadable or kept changing under a compare-and-set.
    #[error("{0}")]
    State(String),
}

/// Result with [`HandlerError`] as the default error.
pub type Result<T, E = HandlerError> = std::result::Result<T, E>;

/// For `map_err`: a host error met while doing `what`.
pub fn host(what: impl Into<String>) -> impl FnOnce(HostError) -> HandlerError {
    move |cause| HandlerError::Host {
        what: what.into(),
        cause,
    }
}
