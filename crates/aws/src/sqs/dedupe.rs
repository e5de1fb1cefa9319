//! Message-id dedupe inside a subscription's window, through claims in a [`State`].

use super::*;

impl SqsQueue {
    /// Claims `id` for queue `name` for `window`; `None` when it was seen inside it.
    /// A claim made for `owner` (an SQS message id) is its own again when that same
    /// message is delivered again.
    pub(super) async fn claim(
        &self,
        name: &str,
        id: &str,
        window: Duration,
        owner: Option<&str>,
    ) -> Result<Option<(String, u64)>> {
        let Some(state) = &self.dedupe else {
            return Ok(Some((String::new(), 0)));
        };
        if window.is_zero() {
            return Ok(Some((String::new(), 0)));
        }
        let key = format!("queue-dedupe/{}{name}/{id}", self.prefix);
        let until = now_ms() + u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let until = match owner {
            Some(o) => format!("{until} {o}"),
            None => until.to_string(),
        };
        match state.put(&key, until.as_bytes(), Some(0)).await {
            Ok(v) => return Ok(Some((key, v))),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some(entry) = state.get(&key).await? else {
            return Ok(None);
        };
        let stored = std::str::from_utf8(&entry.value).unwrap_or_default();
        let (seen_until, seen_by) = stored.split_once(' ').unwrap_or((stored, ""));
        if owner.is_some_and(|o| o == seen_by) {
            return Ok(Some((key, entry.version)));
        }
        if seen_until.parse::<u64>().unwrap_or(u64::MAX) > now_ms() {
            return Ok(None);
        }
        match state.put(&key, until.as_bytes(), Some(entry.version)).await {
            Ok(v) => Ok(Some((key, v))),
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn release(&self, claims: &[(String, u64)]) {
        let Some(state) = &self.dedupe else { return };
        for (key, version) in claims {
            if !key.is_empty()
                && key != EXTRA_COPY
                && let Err(e) = state.delete(key, Some(*version)).await
            {
                tracing::warn!(key, error = %e, "releasing a dedupe claim failed; a repeat publish inside the window will be dropped");
            }
        }
    }
}
