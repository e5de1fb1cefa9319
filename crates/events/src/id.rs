//! Ids of derived events. Each derives from what caused the event, so a handler that
//! runs twice publishes the same id twice and the queue's dedupe window keeps one; and
//! each stage publishes a document's failure under the same id, so the first wins.

/// `<document>-uploaded`: the document's [`UPLOADED`](crate::UPLOADED) event.
pub fn uploaded(document: &str) -> String {
    format!("{document}-uploaded")
}

/// `<document>-extracted`.
pub fn extracted(document: &str) -> String {
    format!("{document}-extracted")
}

/// `<document>-inspected`.
pub fn inspected(document: &str) -> String {
    format!("{document}-inspected")
}

/// `<document>-indexed`.
pub fn indexed(document: &str) -> String {
    format!("{document}-indexed")
}

/// `<document>-failed`, whichever stage (or the worker, or the sweeper) fails it.
pub fn failed(document: &str) -> String {
    format!("{document}-failed")
}

/// `<document>-deleted`.
pub fn deleted(document: &str) -> String {
    format!("{document}-deleted")
}

/// `<document>-compensated-<cause>`, `cause` being `failed` or `deleted`: a document
/// failed and then deleted is compensated twice.
pub fn compensated(document: &str, cause: &str) -> String {
    format!("{document}-compensated-{cause}")
}

/// `<document>-job-<batch>`: embedding job `batch` (1-based) of the document.
pub fn job(document: &str, batch: u32) -> String {
    format!("{document}-job-{batch}")
}

/// `<job>-completed`: the completion of the job whose event id is `job`.
pub fn completed(job: &str) -> String {
    format!("{job}-completed")
}

/// `<event>-dead-<queue>`: the notice that event `event` is dead-lettered from `queue`.
pub fn dead_lettered(event: &str, queue: &str) -> String {
    format!("{event}-dead-{queue}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_the_forms_stored_events_have() {
        assert_eq!(uploaded("d"), "d-uploaded");
        assert_eq!(extracted("d"), "d-extracted");
        assert_eq!(inspected("d"), "d-inspected");
        assert_eq!(indexed("d"), "d-indexed");
        assert_eq!(failed("d"), "d-failed");
        assert_eq!(deleted("d"), "d-deleted");
        assert_eq!(compensated("d", "failed"), "d-compensated-failed");
        assert_eq!(job("d", 3), "d-job-3");
        assert_eq!(completed(&job("d", 3)), "d-job-3-completed");
        assert_eq!(dead_lettered("e", "extract"), "e-dead-extract");
    }
}
