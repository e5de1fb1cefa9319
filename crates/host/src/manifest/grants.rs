//! `[component.<id>.tool.troupe.grants]`: what a component may reach through the
//! host's imports. Nothing is granted that is not listed, so a component that only
//! sends webhooks cannot read documents, and one that serves search cannot delete
//! vectors:
//!
//! ```toml
//! [component.extract.tool.troupe.grants]
//! blobs = ["{{ bucket }}/docs/", "{{ bucket }}/chunks/"]  # a bucket, or bucket/key-prefix
//! state = ["doc/", "heartbeat/"]                          # key prefixes; "*" is every key
//! event_logs = "read"                                     # "read" or "write" (append, delete)
//! publish = ["troupe.document.extracted"]                 # topics
//! vectors = "write"                                       # "read" (search, count) or "write" (+ delete)
//! embeddings = true                                       # the model: info, embed, token spans
//! ```
//!
//! `config` (the component's own variables) and `logging` need no grant. Each name
//! is checked at load: a bucket no `[[trigger.blob]]` watches and
//! `[application.tool.troupe] buckets` does not declare, or a topic no
//! `[[trigger.queue]]` subscribes to and `[application.tool.troupe] topics` does not
//! declare (a consumer outside the manifest), is refused with the field that names it.

use std::collections::{BTreeMap, BTreeSet};

use super::expand;
use super::raw::{RawAppTool, RawGrants};

/// Read, or read and write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing.
    #[default]
    None,
    /// Reads only.
    Read,
    /// Reads and writes (deletes included).
    Write,
}

impl Access {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            other => Err(format!(
                "`{other}` is not an access: write \"read\" or \"write\" (or leave it out for none)"
            )),
        }
    }

    /// Whether this access covers `wanted`.
    pub fn allows(self, wanted: Access) -> bool {
        self >= wanted
    }
}

/// A bucket, or the keys of a bucket under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobGrant {
    /// The bucket.
    pub bucket: String,
    /// Keys granted start with this (empty: the whole bucket).
    pub prefix: String,
}

/// A component's grants, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Objects it may read, write, delete and list.
    pub blobs: Vec<BlobGrant>,
    /// State key prefixes it may read and write (an empty prefix: every key).
    pub state: Vec<String>,
    /// Event logs (`append-event`, `read-events`, `delete-events`).
    pub event_logs: Access,
    /// Topics it may publish to.
    pub publish: BTreeSet<String>,
    /// Stored vectors.
    pub vectors: Access,
    /// The embedding model.
    pub embeddings: bool,
}

impl Grants {
    /// Whether `key` of `bucket` is granted.
    pub fn blob(&self, bucket: &str, key: &str) -> bool {
        self.blobs
            .iter()
            .any(|g| g.bucket == bucket && key.starts_with(&g.prefix))
    }

    /// Whether listing `bucket` under `prefix` may find granted keys (the listing is
    /// then filtered with [`Grants::blob`]).
    pub fn blob_listing(&self, bucket: &str, prefix: &str) -> bool {
        self.blobs
            .iter()
            .any(|g| g.bucket == bucket && overlaps(&g.prefix, prefix))
    }

    /// Whether the state key `key` is granted.
    pub fn state_key(&self, key: &str) -> bool {
        self.state.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether listing state keys under `prefix` may find granted keys.
    pub fn state_listing(&self, prefix: &str) -> bool {
        self.state.iter().any(|p| overlaps(p, prefix))
    }

    /// Whether publishing to `topic` is granted.
    pub fn publishes(&self, topic: &str) -> bool {
        self.publish.contains(topic)
    }
}

/// Whether some key can start with both prefixes.
fn overlaps(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// What a component's grants may name: buckets that exist for the application and
/// topics something consumes.
pub(super) struct Known {
    buckets: BTreeSet<String>,
    topics: BTreeSet<String>,
}

impl Known {
    /// The buckets blob triggers watch (`watched`) and the topics subscriptions take
    /// (`consumed`), with those `[application.tool.troupe]` declares; the error is the
    /// field and why.
    pub(super) fn new(
        tool: &RawAppTool,
        vars: &BTreeMap<String, String>,
        watched: impl Iterator<Item = String>,
        consumed: impl Iterator<Item = String>,
    ) -> Result<Self, (String, String)> {
        let mut buckets: BTreeSet<String> = watched.collect();
        for (i, written) in tool.buckets.iter().enumerate() {
            let field = format!("application.tool.troupe.buckets[{i}]");
            let bucket = expand(written, vars).map_err(|why| (field.clone(), why))?;
            troupe_core::blobs::check_bucket(&bucket).map_err(|e| (field, e.to_string()))?;
            buckets.insert(bucket);
        }
        let mut topics: BTreeSet<String> = consumed.collect();
        for (i, written) in tool.topics.iter().enumerate() {
            let field = format!("application.tool.troupe.topics[{i}]");
            let topic = expand(written, vars).map_err(|why| (field.clone(), why))?;
            if topic.trim().is_empty() {
                return Err((field, "must not be empty".into()));
            }
            topics.insert(topic);
        }
        Ok(Self { buckets, topics })
    }
}

/// Resolves `raw` (its names may use `{{ variable }}`); the error is the field below
/// `component.<id>.tool.troupe.grants.` and why.
pub(super) fn resolve(
    raw: &RawGrants,
    vars: &BTreeMap<String, String>,
    known: &Known,
) -> Result<Grants, (String, String)> {
    let at = |field: &str, i: usize| format!("{field}[{i}]");
    let mut grants = Grants::default();
    for (i, written) in raw.blobs.iter().enumerate() {
        let text = expand(written, vars).map_err(|why| (at("blobs", i), why))?;
        let (bucket, prefix) = text.split_once('/').unwrap_or((&text, ""));
        troupe_core::blobs::check_bucket(bucket)
            .map_err(|e| (at("blobs", i), format!("`{text}`: {e}")))?;
        if !known.buckets.contains(bucket) {
            return Err((
                at("blobs", i),
                format!(
                    "names bucket `{bucket}`, which no [[trigger.blob]] watches and [application.tool.troupe] buckets does not declare; declare it there or fix the name"
                ),
            ));
        }
        grants.blobs.push(BlobGrant {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    for (i, written) in raw.state.iter().enumerate() {
        let prefix = expand(written, vars).map_err(|why| (at("state", i), why))?;
        grants.state.push(match prefix.as_str() {
            "*" => String::new(),
            "" => {
                return Err((
                    at("state", i),
                    "an empty prefix would grant every key: write \"*\" if that is meant".into(),
                ));
            }
            _ => prefix,
        });
    }
    for (i, written) in raw.publish.iter().enumerate() {
        let topic = expand(written, vars).map_err(|why| (at("publish", i), why))?;
        if !known.topics.contains(&topic) {
            return Err((
                at("publish", i),
                format!(
                    "names topic `{topic}`, which no [[trigger.queue]] subscribes to and [application.tool.troupe] topics does not declare: events published there would reach no one; subscribe a component to it, declare it, or fix the name"
                ),
            ));
        }
        grants.publish.insert(topic);
    }
    if let Some(a) = &raw.event_logs {
        grants.event_logs = Access::parse(a).map_err(|why| ("event_logs".to_owned(), why))?;
    }
    if let Some(a) = &raw.vectors {
        grants.vectors = Access::parse(a).map_err(|why| ("vectors".to_owned(), why))?;
    }
    grants.embeddings = raw.embeddings;
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_grant_what_starts_with_them_and_listings_that_overlap() {
        let g = Grants {
            blobs: vec![BlobGrant {
                bucket: "documents".into(),
                prefix: "chunks/".into(),
            }],
            state: vec!["doc/".into()],
            ..Grants::default()
        };
        assert!(g.blob("documents", "chunks/t/d/1.json"));
        assert!(!g.blob("documents", "docs/t/d"));
        assert!(!g.blob("other", "chunks/x"));
        assert!(g.blob_listing("documents", ""));
        assert!(g.blob_listing("documents", "chunks/t/"));
        assert!(!g.blob_listing("documents", "docs/"));
        assert!(g.state_key("doc/t/1"));
        assert!(!g.state_key("webhook/x"));
        assert!(g.state_listing("do"));
        assert!(!g.state_listing("active/"));
        assert!(Access::Write.allows(Access::Read));
        assert!(!Access::Read.allows(Access::Write));
        assert!(!Access::None.allows(Access::Read));
    }
}
