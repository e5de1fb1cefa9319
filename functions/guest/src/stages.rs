//! What a pipeline stage does with events: reads an event's tenant, subject and data,
//! builds the events it causes and publishes them, and checks that an upload still
//! needs work. The payloads, topics and id rules themselves are [`crate::events`].

use serde::de::DeserializeOwned;

use crate::events::{Payload, Uploaded};
use crate::{DEFAULT_TENANT, Event, HandlerError, Outcome, Result, host, now_rfc3339, publisher};

/// The tenant an event belongs to.
pub fn tenant(event: &Event) -> String {
    event
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.into())
}

/// The topic of `event` (its type without the `.v1` suffix).
pub fn topic_of(event: &Event) -> &str {
    crate::events::topic_of(&event.type_)
}

/// Decodes an event's JSON data.
pub fn data<T: DeserializeOwned>(event: &Event) -> Result<T> {
    serde_json::from_slice(&event.data).map_err(|e| {
        HandlerError::Malformed(format!("event {} ({}): data: {e}", event.id, event.type_))
    })
}

/// An event of `data`'s kind about `document`, correlated by the document id; `id`
/// comes from [`crate::events::id`].
pub fn new<T: Payload>(id: String, tenant: &str, document: &str, data: &T) -> Event {
    Event {
        id,
        source: String::new(),
        type_: T::TYPE.to_owned(),
        subject: Some(document.to_owned()),
        time: now_rfc3339(),
        datacontenttype: Some("application/json".into()),
        data: serde_json::to_vec(data).unwrap_or_default(),
        tenant: Some(tenant.to_owned()),
        session: Some(document.to_owned()),
        traceparent: None,
    }
}

/// Publishes `event` to the topic of its type, keeping the trace of `cause` when given.
pub fn publish(mut event: Event, cause: Option<&Event>) -> Result<()> {
    if let Some(c) = cause {
        event.traceparent = c.traceparent.clone();
    }
    let topic = topic_of(&event).to_owned();
    publisher::publish(&topic, &event).map_err(host(format!("publishing to {topic}")))
}

/// The document an event is about: its `subject`, if it is a valid id; otherwise the
/// rejection (`bad_subject`) to answer with.
pub fn subject(event: &Event) -> Result<String, Outcome> {
    event
        .subject
        .clone()
        .filter(|s| crate::documents::valid_id(s))
        .ok_or_else(|| {
            crate::reject(
                "bad_subject",
                format!("event {} names no valid document id in `subject`", event.id),
            )
        })
}

/// What a stage reacting to `document.uploaded` should do.
pub enum Upload {
    /// Work on this upload of this tenant.
    Work(String, Uploaded),
    /// Answer with this and do nothing else: the payload is unreadable (reject), the
    /// record is not there yet (retry), or the document already settled (ok).
    Skip(Outcome),
}

/// Reads a `document.uploaded` event and checks its document still needs work.
pub fn upload(event: &Event) -> Result<Upload> {
    let up: Uploaded = match data(event) {
        Ok(u) => u,
        Err(why) => {
            return Ok(Upload::Skip(crate::reject(
                "malformed_event",
                why.to_string(),
            )));
        }
    };
    let tenant = tenant(event);
    Ok(match crate::documents::load(&tenant, &up.document)? {
        // Deleted and forgotten: nothing to do, ever.
        None if crate::retention::is_gone(&tenant, &up.document)? => Upload::Skip(Outcome::Ok),
        None => Upload::Skip(Outcome::Retry(Some(1000))),
        Some((doc, _)) if doc.status.settled() => Upload::Skip(Outcome::Ok),
        Some(_) => Upload::Work(tenant, up),
    })
}
