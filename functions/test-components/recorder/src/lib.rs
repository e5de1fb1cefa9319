//! Event test component for queue, blob and cron triggers.
//!
//! For each event it appends the event to the log of subject `seen`, bumps the
//! counter `count/<event id>` in state (compare-and-set), and answers with the outcome
//! the event's data asks for: `{"outcome": "ok" | "retry" | "reject" | "trap", "delay_ms": n}`
//! (`trap` panics, after recording: the whole invocation traps).
//! With the variable `forward_topic` set it republishes each event there; with
//! `delay_ms` set it sleeps that long per batch (so tests can kill it mid-batch).

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `event-function`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "event-function" });
}

use bindings::{exports, troupe};

use exports::troupe::pipeline::handler::Guest;
use troupe::pipeline::types::{Event, Outcome, Rejection};
use troupe::pipeline::{config, publisher, state};

struct Recorder;

fn bump(key: &str) -> Result<(), String> {
    for _ in 0..10 {
        let (count, version) = match state::get(key).map_err(|e| format!("{e:?}"))? {
            Some(entry) => (
                String::from_utf8_lossy(&entry.value)
                    .parse::<u64>()
                    .unwrap_or(0),
                entry.version,
            ),
            None => (0, 0),
        };
        match state::put(key, (count + 1).to_string().as_bytes(), Some(version)) {
            Ok(_) => return Ok(()),
            Err(troupe::pipeline::types::Error::Conflict) => continue,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Err("too many conflicts".into())
}

impl Guest for Recorder {
    fn handle(events: Vec<Event>) -> Vec<Outcome> {
        if let Some(ms) = config::get("delay_ms").and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let forward = config::get("forward_topic");
        events
            .into_iter()
            .map(|event| {
                let data: serde_json::Value =
                    serde_json::from_slice(&event.data).unwrap_or_default();
                // Keys and logs name the tenant the host bound the invocation to.
                let tenant = event.tenant.clone().unwrap_or_else(|| "default".into());
                if let Err(e) = state::append_event(&format!("{tenant}/seen"), &event) {
                    eprintln!("append failed: {e:?}");
                    return Outcome::Retry(None);
                }
                if let Err(e) = bump(&format!("count/{tenant}/{}", event.id)) {
                    eprintln!("bump failed: {e}");
                    return Outcome::Retry(None);
                }
                if let Some(topic) = &forward {
                    let mut copy = event.clone();
                    copy.id = format!("{}-fwd", event.id);
                    if publisher::publish(topic, &copy).is_err() {
                        return Outcome::Retry(None);
                    }
                }
                match data.get("outcome").and_then(|o| o.as_str()) {
                    Some("retry") => Outcome::Retry(
                        data.get("delay_ms")
                            .and_then(|d| d.as_u64())
                            .map(|d| d as u32),
                    ),
                    Some("trap") => panic!("event {} asked to trap", event.id),
                    Some("reject") => Outcome::Reject(Rejection {
                        reason: "asked_to_reject".into(),
                        detail: format!("event {} asked to be rejected", event.id),
                    }),
                    _ => Outcome::Ok,
                }
            })
            .collect()
    }
}

bindings::export!(Recorder with_types_in bindings);
