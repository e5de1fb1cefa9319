//! What every Troupe pipeline function shares: the `troupe:pipeline` imports, the
//! events the functions choreograph with, and the document record they project.
//!
//! # Layout
//!
//! - [`bindings`]: the `imports` world of `wit/troupe.wit`; event functions reuse it
//!   through `wit_bindgen::generate!`'s `with`.
//! - [`events`]: topics, event types, payloads and id rules: the `troupe-events` crate,
//!   which the embedding worker shares.
//! - [`stages`]: reading events, building and publishing the events they cause.
//! - [`documents`]: the document record (status projection), its keys in state, and
//!   compare-and-set updates.
//! - [`retention`]: how long a document's state is kept; forgetting a deleted one.
//! - [`webhooks`]: a tenant's registered webhooks (`hooks/<tenant>/<id>`).
//! - [`error`]: [`HandlerError`], why a handler could not finish (retry or dead-letter).
//! - [`http`] (feature `http`): JSON responses and `{"error": {"code", "message"}}` bodies.

pub mod documents;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod retention;
pub mod stages;
pub mod webhooks;

/// The event contract: topics, CloudEvents types, payloads and id rules.
pub use troupe_events as events;

/// The host's imports (`troupe:pipeline` world `imports`).
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "imports", pub_export_macro: true });
}

pub use bindings::troupe::pipeline::types::{Error as HostError, Event, Outcome, Rejection};
pub use bindings::troupe::pipeline::{
    blobs, config, embeddings, logging, publisher, state, vectors,
};
pub use error::{HandlerError, Result, host};

pub use troupe_events::DEFAULT_TENANT;

/// The variable the host sets on every component: `"true"` when it lets outbound
/// calls reach loopback, link-local and private addresses (`--allow-private-outbound`).
pub const HOST_PRIVATE_OUTBOUND: &str = "allow_private_outbound";

/// The bucket documents, drop-ins and temporary chunk files live in (variable `bucket`).
pub fn bucket() -> String {
    config::get("bucket").unwrap_or_else(|| "documents".into())
}

/// A variable parsed as a number, or `default` when unset or unreadable.
pub fn config_u64(name: &str, default: u64) -> u64 {
    config::get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Milliseconds since `event` occurred (its `time`); `None` when that is not RFC 3339.
pub fn age_ms(event: &Event) -> Option<u64> {
    let at = humantime::parse_rfc3339_weak(&event.time).ok()?;
    Some(
        std::time::SystemTime::now()
            .duration_since(at)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// When `event` occurred (its `time`) since the Unix epoch; `None` when that is not
/// RFC 3339 or lies before 1970.
pub fn unix_time(event: &Event) -> Option<std::time::Duration> {
    humantime::parse_rfc3339_weak(&event.time)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
}

/// A fresh time-ordered id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Renders a host error for logs and failure messages.
pub fn describe(e: &HostError) -> String {
    match e {
        HostError::Conflict => "version conflict".into(),
        HostError::Invalid(why) => format!("invalid: {why}"),
        HostError::Unavailable(why) => format!("unavailable: {why}"),
        HostError::Denied(why) => format!("denied: {why}"),
    }
}

/// Logs at `level` into the host's tracing.
pub fn log(level: logging::Level, message: &str) {
    logging::log(level, message);
}

/// Makes the crate an event function (world `event-function`) whose handler is
/// `$handle: fn(Vec<Event>) -> Vec<Outcome>`, reusing this crate's import bindings.
/// The crate must depend on `wit-bindgen` and live at `functions/<name>`.
#[macro_export]
macro_rules! event_function {
    ($handle:path) => {
        mod generated {
            wit_bindgen::generate!({
                path: "../../wit",
                world: "event-function",
                with: {
                    "troupe:pipeline/types@0.1.0": ::troupe_guest::bindings::troupe::pipeline::types,
                    "troupe:pipeline/publisher@0.1.0": ::troupe_guest::bindings::troupe::pipeline::publisher,
                    "troupe:pipeline/blobs@0.1.0": ::troupe_guest::bindings::troupe::pipeline::blobs,
                    "troupe:pipeline/state@0.1.0": ::troupe_guest::bindings::troupe::pipeline::state,
                    "troupe:pipeline/config@0.1.0": ::troupe_guest::bindings::troupe::pipeline::config,
                    "troupe:pipeline/logging@0.1.0": ::troupe_guest::bindings::troupe::pipeline::logging,
                    "troupe:pipeline/embeddings@0.1.0": ::troupe_guest::bindings::troupe::pipeline::embeddings,
                    "troupe:pipeline/vectors@0.1.0": ::troupe_guest::bindings::troupe::pipeline::vectors,
                },
            });

            struct Function;

            impl exports::troupe::pipeline::handler::Guest for Function {
                fn handle(events: Vec<::troupe_guest::Event>) -> Vec<::troupe_guest::Outcome> {
                    super::handle_all(events)
                }
            }

            export!(Function);
        }

        fn handle_all(events: Vec<::troupe_guest::Event>) -> Vec<::troupe_guest::Outcome> {
            $handle(events)
        }
    };
}

/// Handles each event of a batch on its own: `f` returns the [`Outcome`]. A
/// [`HandlerError::Malformed`] is dead-lettered (`malformed_event`), and so is a host
/// call the component was not granted (`denied`: the manifest must change, a retry
/// cannot help); other failures are logged and retried.
pub fn each(events: Vec<Event>, mut f: impl FnMut(&Event) -> Result<Outcome>) -> Vec<Outcome> {
    events
        .iter()
        .map(|e| match f(e) {
            Ok(outcome) => outcome,
            Err(HandlerError::Malformed(why)) => reject("malformed_event", why),
            Err(
                why @ HandlerError::Host {
                    cause: HostError::Denied(_),
                    ..
                },
            ) => reject("denied", why.to_string()),
            Err(why) => {
                log(
                    logging::Level::Warn,
                    &format!("event {} ({}): {why}; will retry", e.id, e.type_),
                );
                Outcome::Retry(None)
            }
        })
        .collect()
}

/// A permanent failure: dead-letter with `reason`.
pub fn reject(reason: &str, detail: impl Into<String>) -> Outcome {
    Outcome::Reject(Rejection {
        reason: reason.into(),
        detail: detail.into(),
    })
}
