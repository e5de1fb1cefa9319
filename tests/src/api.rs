//! The public HTTP API as the whole-system tests drive it: upload, read, wait, search,
//! the audit trail.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::call;

/// Uploads `body` as `name`; the document id.
pub fn upload(base: &str, name: &str, content_type: &str, body: &[u8]) -> String {
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name={name}"),
        content_type,
        body,
    );
    assert_eq!(status, 202, "uploading {name}: {reply}");
    reply["id"].as_str().expect("id").to_owned()
}

/// The document's record (`GET /v1/documents/{id}`).
pub fn document(base: &str, id: &str) -> Value {
    call("GET", &format!("{base}/v1/documents/{id}"), "", b"").1
}

/// Waits until the document's status is settled; returns its record. Every record
/// seen on the way is passed to `seen` (to check, say, that it never showed `indexed`).
pub fn settle_watching(
    base: &str,
    id: &str,
    within: Duration,
    mut seen: impl FnMut(&Value),
) -> Value {
    let start = Instant::now();
    loop {
        let doc = document(base, id);
        seen(&doc);
        if matches!(
            doc["status"].as_str(),
            Some("indexed" | "failed" | "deleted")
        ) {
            return doc;
        }
        assert!(
            start.elapsed() < within,
            "document {id} did not settle within {within:?}: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the document's status is settled; returns its record.
pub fn settle(base: &str, id: &str, within: Duration) -> Value {
    settle_watching(base, id, within, |_| {})
}

/// The hits of a search.
pub fn search(base: &str, query: &str, k: u32) -> Vec<Value> {
    let body = serde_json::json!({"query": query, "k": k}).to_string();
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/search"),
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(status, 200, "search {query}: {reply}");
    reply["hits"].as_array().cloned().unwrap_or_default()
}

/// The document's audit trail, checked to repeat no event.
pub fn trail(base: &str, id: &str) -> Vec<Value> {
    let (status, log) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
    assert_eq!(status, 200, "trail of {id}: {log}");
    let events = log.as_array().cloned().expect("an array of events");
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "the audit trail repeats an event: {log}"
    );
    events
}

/// The types in the document's audit trail, in order.
pub fn trail_types(base: &str, id: &str) -> Vec<String> {
    trail(base, id)
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}
