//! The events Troupe's pipeline choreographs with, once for both sides of the wire: the
//! functions (WebAssembly guests in `functions/`) and the embedding worker
//! (`gpu-worker`) read and write these types, so a payload, a topic name or an id rule
//! cannot drift between them. Serde only: it builds for `wasm32-wasip2` and natively.
//!
//! Every event kind has a topic (`troupe.document.uploaded`), a CloudEvents type (the
//! topic plus `.v1`) and one [`Payload`] type for its JSON `data`, which names both.
//! The envelope itself (id, subject, tenant, trace) is each side's own: the WIT
//! `event` record in the functions, `troupe_core::Event` on the host.
//!
//! # Layout
//!
//! - [`document`]: a document's life: uploaded, extracted, inspected, indexed, failed,
//!   deleted, compensated.
//! - [`embedding`]: the worker's jobs and their completions.
//! - [`notice`]: the host's notice that an event was dead-lettered.
//! - [`tenant`]: tenant names and their rule.
//! - [`id`]: the ids of derived events, deterministic so that a handler that runs twice
//!   publishes the same event twice and the queue's dedupe window keeps one.
//!
//! # Compatibility
//!
//! Queued messages and stored event logs outlive a release, so a payload only gains
//! fields with `#[serde(default)]`, and a field is skipped on write only where every
//! reader defaults it. The tests decode the shapes each side wrote before this crate.
//!
//! # Example
//!
//! ```
//! use troupe_events::{Failed, Payload, id, topic_of};
//!
//! let failed = Failed {
//!     document: "d1".into(),
//!     code: "corrupt".into(),
//!     message: "the PDF has no pages".into(),
//!     stage: "extract".into(),
//! };
//! assert_eq!(Failed::TYPE, "troupe.document.failed.v1");
//! assert_eq!(topic_of(Failed::TYPE), Failed::TOPIC);
//! assert_eq!(id::failed(&failed.document), "d1-failed");
//! ```

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub mod document;
pub mod embedding;
pub mod id;
pub mod notice;
pub mod tenant;

pub use document::{
    COMPENSATED, Compensated, DELETED, Deleted, EXTRACTED, Extracted, FAILED, Failed, INDEXED,
    INSPECTED, Indexed, Inspected, UPLOADED, Uploaded,
};
pub use embedding::{Chunk, Completed, EMBEDDING_COMPLETED, EMBEDDING_REQUESTED, Job};
pub use notice::{DEAD_LETTERED, DeadLettered};

pub use tenant::{DEFAULT_TENANT, Tenant};

/// The JSON `data` of the events on one topic.
pub trait Payload: Serialize + DeserializeOwned {
    /// The topic these events are published to.
    const TOPIC: &'static str;
    /// Their CloudEvents type: the topic plus `.v1`.
    const TYPE: &'static str;
}

/// The CloudEvents type of events on `topic`.
pub fn type_of(topic: &str) -> String {
    format!("{topic}.v1")
}

/// The topic of events of CloudEvents type `ty` (the type without its `.v1` suffix).
pub fn topic_of(ty: &str) -> &str {
    ty.strip_suffix(".v1").unwrap_or(ty)
}

/// Where an event of `topic` falls in a document's life: an event is caused only by
/// events of a lower stage. Orders a document's events that share a timestamp.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Payload>() {
        assert_eq!(T::TYPE, type_of(T::TOPIC));
        assert_eq!(topic_of(T::TYPE), T::TOPIC);
    }

    #[test]
    fn every_type_is_its_topic_plus_v1() {
        check::<Uploaded>();
        check::<Extracted>();
        check::<Inspected>();
        check::<Indexed>();
        check::<Failed>();
        check::<Deleted>();
        check::<Compensated>();
        check::<Job>();
        check::<Completed>();
        check::<DeadLettered>();
        assert_eq!(topic_of("troupe.custom"), "troupe.custom");
    }

    #[test]
    fn stages_order_a_documents_life() {
        let order = [
            UPLOADED,
            EXTRACTED,
            EMBEDDING_REQUESTED,
            INDEXED,
            COMPENSATED,
        ];
        for pair in order.windows(2) {
            assert!(stage(pair[0]) < stage(pair[1]), "{pair:?}");
        }
        assert_eq!(stage(EMBEDDING_REQUESTED), stage(EMBEDDING_COMPLETED));
        assert_eq!(stage(EXTRACTED), stage(INSPECTED));
        assert_eq!(stage(INDEXED), stage(FAILED));
        assert_eq!(stage(INDEXED), stage(DELETED));
    }
}
