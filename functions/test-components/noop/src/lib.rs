//! Event test component that acknowledges every event and does nothing else: the
//! dispatch benchmark's subject.

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `event-function`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "event-function" });
}

use bindings::{exports, troupe};

use exports::troupe::pipeline::handler::Guest;
use troupe::pipeline::types::{Event, Outcome};

struct Noop;

impl Guest for Noop {
    fn handle(events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

bindings::export!(Noop with_types_in bindings);
