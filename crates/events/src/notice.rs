//! Notices the host publishes about the pipeline's delivery itself.

use serde::{Deserialize, Serialize};

use crate::Payload;

/// An event is being dead-lettered: whoever owns its subject (for documents, the
/// sweeper) settles it at once instead of waiting for a timeout. Its payload is
/// [`DeadLettered`]; its id is [`crate::id::dead_lettered`].
pub const DEAD_LETTERED: &str = "troupe.message.dead-lettered";

/// Data of [`DEAD_LETTERED`]. The notice keeps the dead event's subject, tenant,
/// session and trace in its envelope. Every field but the stage and the reason may
/// be missing on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettered {
    /// The dead event's id.
    #[serde(default)]
    pub event_id: String,
    /// The dead event's CloudEvents type.
    #[serde(default)]
    pub event_type: String,
    /// The queue (subscription) it was dead-lettered from: where `troupe dlq` finds it.
    #[serde(default)]
    pub queue: String,
    /// The consumer that gave up on it: the function's component id.
    pub stage: String,
    /// The dead-letter reason code (`max_deliveries`, `timeout`, a rejection's code).
    pub reason: String,
    /// The last error, for people; bounded by the publisher.
    #[serde(default)]
    pub detail: String,
    /// Deliveries the event had.
    #[serde(default)]
    pub deliveries: u32,
}

impl Payload for DeadLettered {
    const TOPIC: &'static str = DEAD_LETTERED;
    const TYPE: &'static str = "troupe.message.dead-lettered.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_as_the_host_wrote_them_decode() {
        // The host's untyped `json!` before this crate.
        let json = r#"{"deliveries":5,"detail":"wasm trap: out of fuel","event_id":"e1","event_type":"troupe.document.uploaded.v1","queue":"extract","reason":"max_deliveries","stage":"extract"}"#;
        let notice: DeadLettered = serde_json::from_str(json).unwrap();
        assert_eq!(
            notice,
            DeadLettered {
                event_id: "e1".into(),
                event_type: "troupe.document.uploaded.v1".into(),
                queue: "extract".into(),
                stage: "extract".into(),
                reason: "max_deliveries".into(),
                detail: "wasm trap: out of fuel".into(),
                deliveries: 5,
            }
        );
        let old: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_value(&notice).unwrap(), old);
        // The sweeper read notices that carried no more than a stage and a reason.
        let lean: DeadLettered =
            serde_json::from_str(r#"{"stage":"inspect","reason":"timeout"}"#).unwrap();
        assert_eq!((lean.queue.as_str(), lean.deliveries), ("", 0));
    }
}
