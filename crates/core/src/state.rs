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

/// The least string above every string that starts with `prefix`, in byte order
/// (UTF-8 byte order is code-point order): `key >= prefix AND key < end` selects the
/// keys under `prefix` as one index range. `None` when there is no such bound (the
/// empty prefix, or one made only of `char::MAX`): every key from `prefix` on.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            char::MAX => continue,
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The tenant whose feed an event-log subject belongs to: its first segment
/// (`<tenant>/<name>`); `None` for a subject without one, which has no feed.
pub fn feed_tenant(subject: &str) -> Option<&str> {
    subject
        .split_once('/')
        .map(|(t, _)| t)
        .filter(|t| !t.is_empty())
}

/// One event of a tenant's feed: every event appended to one of the tenant's logs,
/// in the order they were appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Where it stands in the feed: larger than every position before it. Positions
    /// need not be consecutive.
    pub position: u64,
    /// The log it was appended to.
    pub subject: String,
    /// The event.
    pub event: Event,
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
    /// Removes `subject`'s whole log (a deleted document's trail), and its events
    /// from the tenant's feed; returns how many events it held.
    async fn delete_events(&self, subject: &str) -> Result<u64>;
    /// The events appended to `tenant`'s logs ([`feed_tenant`]) after position
    /// `after`, in append order, at most `limit`. An event appended once another
    /// reader saw position `p` gets a position above `p`, so reading on from the last
    /// position seen misses nothing and repeats nothing.
    async fn read_feed(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<FeedEntry>>;
    /// The position of `tenant`'s newest feed entry; 0 before the first.
    async fn feed_head(&self, tenant: &str) -> Result<u64>;
    /// Whether the store answers.
    async fn health(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_least_string_above_the_prefix() {
        assert_eq!(prefix_end("doc/").as_deref(), Some("doc0"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}").as_deref(), None);
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        // Every key under the prefix sorts below the bound, in byte order.
        let end = prefix_end("doc/").unwrap_or_default();
        for key in ["doc/", "doc/\u{10FFFF}\u{10FFFF}", "doc/zzz"] {
            assert!(key.as_bytes() >= b"doc/".as_slice() && key.as_bytes() < end.as_bytes());
        }
    }
}
