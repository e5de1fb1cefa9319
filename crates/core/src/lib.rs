//! Troupe's shared vocabulary: the CloudEvents envelope every function sees, the
//! small async traits each backend family implements, and the errors they share.
//!
//! Backends (`troupe-local` for the embedded default; S3/SQS/Postgres later) implement
//! these traits; the host and the CLI only ever hold `Arc<dyn …>` of them, chosen from
//! configuration at start-up.
//!
//! # Layout
//!
//! - [`event`]: the CloudEvents 1.0 envelope ([`Event`]) and its structured JSON form.
//! - [`queue`]: durable queues and topics ([`Queue`]), dead letters ([`DeadLetters`]),
//!   delivery policies and the backoff with full jitter.
//! - [`blobs`]: object storage ([`Blobs`]) and the S3-shaped object-created record.
//! - [`state`]: versioned key-value state with compare-and-set and a per-subject event
//!   log ([`State`]).
//! - [`vectors`]: embedding vectors keyed by document, chunk and model ([`Vectors`]).
//! - [`embeddings`]: the embedding model as functions see it ([`Embeddings`]).
//! - [`clock`]: the clock backends read, so tests can move time by hand.
//! - [`error`]: the [`Error`] every backend returns.

pub mod blobs;
pub mod clock;
pub mod embeddings;
pub mod error;
pub mod event;
pub mod queue;
pub mod state;
pub mod vectors;

pub use blobs::{Blobs, ObjectCreated};
pub use clock::{Clock, ManualClock, SystemClock};
pub use embeddings::{Embeddings, ModelInfo};
pub use error::{Error, Result};
pub use event::Event;
pub use queue::{
    DeadLetter, DeadLetters, Delivery, DeliveryPolicy, Depth, Leases, Message, Queue, Receipt,
    Retired, RetryOutcome, Subscription,
};
pub use state::{Entry, FeedEntry, State};
pub use vectors::{Hit, VectorRecord, Vectors};
