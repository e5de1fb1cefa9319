//! Event test component that acknowledges every event and does nothing else: the
//! dispatch benchmark's subject.

wit_bindgen::generate!({ path: "../../../wit", world: "event-function" });

use exports::troupe::pipeline::handler::Guest;
use troupe::pipeline::types::{Event, Outcome};

struct Noop;

impl Guest for Noop {
    fn handle(events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

export!(Noop);
