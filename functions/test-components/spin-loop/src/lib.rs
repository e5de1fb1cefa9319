//! Event test component that never returns: the host must stop it at its timeout.

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `event-function`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "event-function" });
}

use bindings::{exports, troupe};

use exports::troupe::pipeline::handler::Guest;
use troupe::pipeline::types::{Event, Outcome};

struct SpinLoop;

impl Guest for SpinLoop {
    fn handle(events: Vec<Event>) -> Vec<Outcome> {
        let mut x: u64 = events.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

bindings::export!(SpinLoop with_types_in bindings);
