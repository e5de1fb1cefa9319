//! The document record: the status projection `status` maintains (and `api` creates),
//! read by every other function. Keys in state:
//!
//! - `doc/<tenant>/<id>`: the [`Document`] (JSON);
//! - `active/<tenant>/<id>`: present while the document is not settled (the sweeper's
//!   work list);
//! - the event log of subject `<tenant>/<id>` (the audit trail).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::events::BlobRef;
use crate::{HandlerError, HostError, Result, host, state};

/// Where a document is in the pipeline. Transitions only move forward
/// ([`Status::rank`]); late or repeated events never move a document back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored; extraction not done.
    Uploaded,
    /// Chunks are being embedded.
    Processing,
    /// Searchable.
    Indexed,
    /// Gave up; compensation removes what was made.
    Failed,
    /// Deleted by a client.
    Deleted,
}

impl Status {
    /// Order of the state machine: a transition must raise the rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Uploaded => 0,
            Self::Processing => 1,
            Self::Indexed | Self::Failed => 2,
            Self::Deleted => 3,
        }
    }

    /// Whether the document has come to rest.
    pub fn settled(self) -> bool {
        self.rank() >= 2
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Processing => "processing",
            Self::Indexed => "indexed",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }
}

/// Batches embedded out of batches queued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Batches embedded.
    pub done: u32,
    /// Batches queued; 0 until extraction is known.
    pub total: u32,
}

/// Why a document failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Reason code.
    pub code: String,
    /// Detail.
    pub message: String,
}

/// A document's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    /// Id (UUIDv7 for uploads; derived from the object for drop-ins).
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// File name.
    pub name: String,
    /// Declared media type.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// The file.
    pub blob: BlobRef,
    /// Where it is.
    pub status: Status,
    /// Batches embedded of batches queued.
    pub progress: Progress,
    /// Which batches are done: a set, so a repeated completion counts once.
    #[serde(default)]
    pub batches_done: Vec<u32>,
    /// Chunks made by extraction.
    pub chunks: Option<u64>,
    /// Why it failed.
    pub error: Option<Failure>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the last change of any kind.
    pub updated_at: String,
    /// When the status last changed or progress was made, ms since the epoch: the
    /// sweeper measures stuck time from it.
    pub progressed_ms: u64,
    /// Facts from `inspect`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Title from `inspect`.
    #[serde(default)]
    pub title: Option<String>,
    /// Pages from `inspect`.
    #[serde(default)]
    pub pages: Option<u32>,
    /// Media type sniffed by `inspect`.
    #[serde(default)]
    pub sniffed_type: Option<String>,
    /// The id of the document's trace (32 hex digits) when traces are exported:
    /// what to look for in the tracing backend.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl Document {
    /// The public view (`GET /v1/documents/{id}`).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "progress": self.progress,
            "chunks": self.chunks,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "title": self.title,
            "pages": self.pages,
            "trace_id": self.trace_id,
        })
    }
}

/// Key of a document's record.
pub fn key(tenant: &str, id: &str) -> String {
    format!("doc/{tenant}/{id}")
}

/// Key marking a document unsettled.
pub fn active_key(tenant: &str, id: &str) -> String {
    format!("active/{tenant}/{id}")
}

/// Prefix of every unsettled document's marker.
pub const ACTIVE_PREFIX: &str = "active/";

/// Subject of a document's event log.
pub fn log_subject(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

/// A document's audit trail in the order things happened: by each event's `time`,
/// then by its stage in the document's life ([`crate::events::stage`]: times have
/// millisecond precision), then in log order. An event without a readable time is
/// placed as if it happened at the latest time logged before it. The log itself is
/// in arrival order, and `status` receives each topic on its own subscription, so a
/// later event can arrive first.
pub fn trail(tenant: &str, id: &str) -> std::result::Result<Vec<crate::Event>, HostError> {
    let log = state::read_events(&log_subject(tenant, id))?;
    let mut latest = std::time::Duration::ZERO;
    let mut dated: Vec<_> = log
        .into_iter()
        .map(|event| {
            let at = crate::unix_time(&event).unwrap_or(latest);
            latest = latest.max(at);
            let stage = crate::events::stage(crate::events::topic_of(&event.type_));
            ((at, stage), event)
        })
        .collect();
    dated.sort_by_key(|(key, _)| *key); // stable: log order among equals
    Ok(dated.into_iter().map(|(_, event)| event).collect())
}

/// Whether `id` can be a document id (it becomes part of keys and paths).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads a JSON value and its version.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<(T, u64)>> {
    match state::get(key).map_err(host(format!("reading {key}")))? {
        None => Ok(None),
        Some(entry) => serde_json::from_slice(&entry.value)
            .map(|v| Some((v, entry.version)))
            .map_err(|e| HandlerError::State(format!("{key} holds unreadable JSON: {e}"))),
    }
}

/// A document's record.
pub fn load(tenant: &str, id: &str) -> Result<Option<(Document, u64)>> {
    get_json(&key(tenant, id))
}

/// What an update decided.
pub enum Change<T> {
    /// Store this value.
    Put(T),
    /// Leave the key as it is.
    Keep,
}

/// Read-modify-write of a JSON value under compare-and-set, retried on conflicts.
/// `f` gets the current value (`None` if absent) and decides. Returns whether it wrote.
pub fn update<T: Serialize + DeserializeOwned>(
    key: &str,
    mut f: impl FnMut(Option<T>) -> Change<T>,
) -> Result<bool> {
    for _ in 0..32 {
        let (current, version) = match get_json::<T>(key)? {
            Some((v, ver)) => (Some(v), ver),
            None => (None, 0),
        };
        let Change::Put(next) = f(current) else {
            return Ok(false);
        };
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| HandlerError::State(format!("encoding {key}: {e}")))?;
        match state::put(key, &bytes, Some(version)) {
            Ok(_) => return Ok(true),
            Err(HostError::Conflict) => continue,
            Err(e) => return Err(host(format!("writing {key}"))(e)),
        }
    }
    Err(HandlerError::State(format!(
        "{key}: too many concurrent writers; retry"
    )))
}

/// The trace id (32 hex digits) of a W3C `traceparent`, if it is well formed.
pub fn trace_id(traceparent: Option<&str>) -> Option<String> {
    let id = traceparent?.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// Creates the record of an uploaded document (status `uploaded`, in trace
/// `trace_id`) and marks it active; an existing record is left as it is. Returns the
/// stored record.
pub fn register(
    tenant: &str,
    up: &crate::events::Uploaded,
    trace_id: Option<String>,
) -> Result<Document> {
    // The marker first: a record is never left where the sweeper cannot see it.
    state::put(&active_key(tenant, &up.document), b"1", None)
        .map_err(host(format!("marking {} active", up.document)))?;
    let now = crate::now_rfc3339();
    let mut stored = None;
    let mut created = false;
    update(
        &key(tenant, &up.document),
        |current: Option<Document>| match current {
            Some(existing) => {
                stored = Some(existing);
                created = false;
                Change::Keep
            }
            None => {
                created = true;
                let doc = Document {
                    id: up.document.clone(),
                    tenant: tenant.to_owned(),
                    name: up.name.clone(),
                    content_type: up.content_type.clone(),
                    size: up.size,
                    blob: up.blob.clone(),
                    status: Status::Uploaded,
                    progress: Progress::default(),
                    batches_done: Vec::new(),
                    chunks: None,
                    error: None,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                    progressed_ms: crate::now_ms(),
                    sha256: None,
                    title: None,
                    pages: None,
                    sniffed_type: None,
                    trace_id: trace_id.clone(),
                };
                stored = Some(doc.clone());
                Change::Put(doc)
            }
        },
    )?;
    if created {
        add_usage(tenant, i128::from(up.size))?;
    }
    stored.ok_or_else(|| {
        HandlerError::State(format!(
            "{}: record vanished while registering",
            up.document
        ))
    })
}

/// Key of the bytes of documents a tenant stores: what `register` added and
/// `forget` took away (the quota `tenant_max_bytes` is checked against it).
pub fn usage_key(tenant: &str) -> String {
    format!("usage/{tenant}/bytes")
}

/// The bytes of documents `tenant` stores.
pub fn usage(tenant: &str) -> Result<u64> {
    Ok(get_json::<u64>(&usage_key(tenant))?.map_or(0, |(n, _)| n))
}

/// Adds `delta` (negative: removes) to `tenant`'s stored bytes, never below zero.
pub fn add_usage(tenant: &str, delta: i128) -> Result<()> {
    update(&usage_key(tenant), |n: Option<u64>| {
        let next = (i128::from(n.unwrap_or(0)) + delta).clamp(0, i128::from(u64::MAX));
        Change::Put(u64::try_from(next).unwrap_or(0))
    })?;
    Ok(())
}

/// The most bytes of documents a tenant may store (`--tenant-max-bytes`, which the
/// host hands every component as the variable `tenant_max_bytes`); `None`: no quota.
pub fn quota() -> Option<u64> {
    crate::config::get("tenant_max_bytes").and_then(|v| v.trim().parse().ok())
}

/// Why storing `more` bytes would take `tenant` past its quota, if it would.
pub fn over_quota(tenant: &str, more: u64) -> Result<Option<String>> {
    let Some(max) = quota() else {
        return Ok(None);
    };
    let used = usage(tenant)?;
    Ok((used.saturating_add(more) > max).then(|| {
        format!(
            "tenant `{tenant}` stores {used} bytes of documents; {more} more would pass its quota of {max} bytes: delete documents or ask the operator to raise --tenant-max-bytes"
        )
    }))
}

/// Key of a document's heartbeat: when a stage last started work on it.
fn heartbeat_key(tenant: &str, id: &str) -> String {
    format!("heartbeat/{tenant}/{id}")
}

/// Records that a stage is working on the document now (the sweeper counts it as
/// progress).
pub fn beat(tenant: &str, id: &str) -> Result<()> {
    state::put(
        &heartbeat_key(tenant, id),
        crate::now_ms().to_string().as_bytes(),
        None,
    )
    .map(|_| ())
    .map_err(host(format!("heartbeat of {id}")))
}

/// When a stage last started work on the document (0 if never).
pub fn heartbeat(tenant: &str, id: &str) -> Result<u64> {
    Ok(state::get(&heartbeat_key(tenant, id))
        .map_err(host(format!("heartbeat of {id}")))?
        .and_then(|e| String::from_utf8_lossy(&e.value).parse().ok())
        .unwrap_or(0))
}

/// Whether the record confirms a settling event (`indexed` or `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The record settled the way the event says.
    Agrees,
    /// The record settled the other way: another stage's event arrived first (the
    /// sweeper's timeout against the indexer's completion, say). Act on nothing.
    Disagrees,
    /// `status` has not recorded a final state yet: ask again shortly.
    Pending,
}

/// The projection is the one arbiter of how a document settled: `indexed` and
/// `failed` may both be published for one document, and `status` keeps the first.
/// Compensation and webhooks follow the record, not the event.
pub fn verdict(tenant: &str, id: &str, settled_as: Status) -> Result<Verdict> {
    let Some((doc, _)) = load(tenant, id)? else {
        // Deleted and forgotten: its deletion undid everything; act on nothing.
        if crate::retention::is_gone(tenant, id)? {
            return Ok(Verdict::Disagrees);
        }
        return Ok(Verdict::Pending);
    };
    Ok(match (doc.status, settled_as) {
        (Status::Uploaded | Status::Processing, _) => Verdict::Pending,
        (s, want) if s == want => Verdict::Agrees,
        // Deleted after settling: the error tells which way it settled.
        (Status::Deleted, Status::Failed) if doc.error.is_some() => Verdict::Agrees,
        (Status::Deleted, Status::Indexed) if doc.error.is_none() => Verdict::Agrees,
        _ => Verdict::Disagrees,
    })
}
