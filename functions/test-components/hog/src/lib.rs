//! Event test component that allocates without bound: the host must stop it at its
//! memory cap.

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `event-function`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "event-function" });
}

use bindings::{exports, troupe};

use exports::troupe::pipeline::handler::Guest;
use troupe::pipeline::types::{Event, Outcome};

struct Hog;

impl Guest for Hog {
    fn handle(_events: Vec<Event>) -> Vec<Outcome> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

bindings::export!(Hog with_types_in bindings);
