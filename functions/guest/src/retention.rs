//! How long a document's state is kept, and its removal. Keys in state:
//!
//! - `settled/<tenant>/<id>`: when the document settled (ms since the epoch): the
//!   retention work list. `status` writes it as the document settles; the sweeper
//!   removes the document's working state (`heartbeat/`, `join/`, `active/`, its
//!   webhook claims) once it is older than `settled_retention_ms`, then the entry.
//!   The record and the trail stay until the document is deleted.
//! - `gone/<tenant>/<id>`: a deleted document's tombstone (when it was removed): a late
//!   or repeated event for it changes nothing and creates nothing. The sweeper drops
//!   it after `tombstone_retention_ms`.
//!
//! A deleted document is forgotten once compensation has removed its vectors and
//! files: its record, trail and working state go, and `GET` answers 404.

use crate::documents;
use crate::{Result, host, now_ms, state};

/// Prefix of the retention work list.
pub const SETTLED_PREFIX: &str = "settled/";
/// Prefix of deleted documents' tombstones.
pub const GONE_PREFIX: &str = "gone/";
/// Prefix of notify's webhook claims (`webhook/<tenant>/<hook>/<event id>`).
pub const WEBHOOK_PREFIX: &str = "webhook/";
/// Prefix of notify's circuit breakers (`breaker/<tenant>/<hook>`).
pub const BREAKER_PREFIX: &str = "breaker/";

/// Key of a settled document's entry in the retention work list.
pub fn settled_key(tenant: &str, id: &str) -> String {
    format!("{SETTLED_PREFIX}{tenant}/{id}")
}

/// Key of a deleted document's tombstone.
pub fn gone_key(tenant: &str, id: &str) -> String {
    format!("{GONE_PREFIX}{tenant}/{id}")
}

/// The keys of a document's working state: what the pipeline needs only while it
/// runs (and shortly after, for late and repeated events).
pub fn working_keys(tenant: &str, id: &str) -> [String; 3] {
    [
        format!("heartbeat/{tenant}/{id}"),
        format!("join/{tenant}/{id}"),
        documents::active_key(tenant, id),
    ]
}

/// The ids of the document events webhooks are sent for; notify's claims are keyed by
/// them.
pub fn webhook_event_ids(id: &str) -> [String; 2] {
    [
        crate::events::id::indexed(id),
        crate::events::id::failed(id),
    ]
}

/// Whether the document was deleted (its tombstone is there).
pub fn is_gone(tenant: &str, id: &str) -> Result<bool> {
    Ok(state::get(&gone_key(tenant, id))
        .map_err(host(format!("reading the tombstone of {id}")))?
        .is_some())
}

/// Puts the document on the retention work list (it has settled).
pub fn mark_settled(tenant: &str, id: &str) -> Result<()> {
    let key = settled_key(tenant, id);
    match state::put(&key, now_ms().to_string().as_bytes(), Some(0)) {
        // Already listed: the first settling time counts.
        Ok(_) | Err(crate::HostError::Conflict) => Ok(()),
        Err(e) => Err(host(format!("listing {id} for retention"))(e)),
    }
}

/// Removes a document's working state and its webhook claims (`claims`: every
/// webhook claim key there is, from one listing per pass).
pub fn remove_working_state(tenant: &str, id: &str, claims: &[String]) -> Result<()> {
    for key in working_keys(tenant, id) {
        state::delete(&key, None).map_err(host(format!("removing {key}")))?;
    }
    let events = webhook_event_ids(id);
    for key in claims {
        let event = key.rsplit('/').next().unwrap_or_default();
        if events.iter().any(|e| e == event) {
            state::delete(key, None).map_err(host(format!("removing {key}")))?;
        }
    }
    Ok(())
}

/// Forgets a deleted document whose compensation is done: the tombstone first (so a
/// late event that looks finds it), then the trail, the record and the working
/// state. The document goes on the retention work list so that its webhook claims go
/// on the sweeper's next pass. Idempotent.
pub fn forget(tenant: &str, id: &str) -> Result<()> {
    let tombstone = gone_key(tenant, id);
    match state::put(&tombstone, now_ms().to_string().as_bytes(), Some(0)) {
        Ok(_) | Err(crate::HostError::Conflict) => {}
        Err(e) => return Err(host(format!("writing the tombstone of {id}"))(e)),
    }
    state::delete_events(&documents::log_subject(tenant, id))
        .map_err(host(format!("removing the trail of {id}")))?;
    let record = documents::key(tenant, id);
    if let Some((doc, version)) = documents::load(tenant, id)? {
        // Only the call that removes the record gives its bytes back.
        match state::delete(&record, Some(version)) {
            Ok(true) => documents::add_usage(tenant, -i128::from(doc.size))?,
            Ok(false) | Err(crate::HostError::Conflict) => {}
            Err(e) => return Err(host(format!("removing {record}"))(e)),
        }
    }
    state::delete(&record, None).map_err(host(format!("removing {record}")))?;
    for key in working_keys(tenant, id) {
        state::delete(&key, None).map_err(host(format!("removing {key}")))?;
    }
    match state::put(&settled_key(tenant, id), b"0", None) {
        Ok(_) => Ok(()),
        Err(e) => Err(host(format!("listing {id} for retention"))(e)),
    }
}
