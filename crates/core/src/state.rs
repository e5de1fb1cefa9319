//! Versioned key-value state and the per-subject event log.

use async_trait::async_trait;

use crate::{Event, Result};

/// Checks a state key or event-log subject: 1 to 1024 bytes.
pub fn check_key(key: &str) -> crate::Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(crate::Error::invalid(
            "key",
            format!("must be 1..=1024 bytes, got {}", key.len()),
        ));
    }
    Ok(())
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes stored.
    pub value: Vec<u8>,
    /// 1 after the first write, +1 per write; compare-and-set compares it.
    pub version: u64,
}

/// Key-value state with compare-and-set, and an append-only event log per subject.
#[async_trait]
pub trait State: Send + Sync {
    /// Reads a key.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Writes a key; with `expected`, only if the stored version equals it (0 = absent),
    /// else [`crate::Error::Conflict`]. Returns the new version.
    async fn put(&self, key: &str, value: &[u8], expected: Option<u64>) -> Result<u64>;
    /// Deletes a key under the same rule; true if it existed.
    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<bool>;
    /// Keys under `prefix`, in order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Appends `event` to `subject`'s log; an event id already there is not stored
    /// again and its existing sequence number is returned.
    async fn append_event(&self, subject: &str, event: &Event) -> Result<u64>;
    /// `subject`'s log, oldest first.
    async fn read_events(&self, subject: &str) -> Result<Vec<Event>>;
    /// Whether the store answers.
    async fn health(&self) -> Result<()>;
}
