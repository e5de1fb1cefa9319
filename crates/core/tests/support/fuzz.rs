//! What the `cloudevent` fuzz target runs on one input, and what must hold. The
//! target (`fuzz/fuzz_targets/cloudevent.rs`) and the regression test
//! (`tests/fuzz_regressions.rs`) both include this file, so a saved input replays
//! exactly as the fuzzer ran it, on stable.

use troupe_core::{Error, Event};

/// Decodes a structured-mode CloudEvent; one that decodes must encode and decode
/// back to itself.
pub fn cloudevent(data: &[u8]) {
    match Event::from_json(data) {
        Ok(event) => {
            let wire = event.to_json();
            let again = Event::from_json(&wire)
                .unwrap_or_else(|e| panic!("re-decoding {}: {e}", String::from_utf8_lossy(&wire)));
            assert_eq!(again, event, "{}", String::from_utf8_lossy(&wire));
        }
        Err(Error::Corrupt { what, .. }) => assert_eq!(what, "CloudEvent"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}
