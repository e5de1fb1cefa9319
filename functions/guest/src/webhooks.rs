//! A tenant's webhooks: registered through `POST /v1/webhooks` (the `api`), called
//! by `notify` for that tenant's documents only. Each lives at
//! `hooks/<tenant>/<id>` with its own signing secret.

use serde::{Deserialize, Serialize};

use crate::{HostError, Result, host, state};

/// Prefix of the webhooks' keys.
pub const PREFIX: &str = "hooks/";

/// The events a webhook may ask for (topics); none named means all of them.
pub const EVENTS: [&str; 2] = ["document.indexed", "document.failed"];

/// Most webhooks one tenant may register.
pub const MAX_PER_TENANT: usize = 20;

/// One registered webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    /// Its id (UUIDv7), the last segment of its key.
    pub id: String,
    /// Where the events are POSTed.
    pub url: String,
    /// The topics it receives ([`EVENTS`]); empty for all.
    #[serde(default)]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of its signatures; shown once, when registered.
    pub secret: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
}

impl Hook {
    /// Whether it receives events of `topic` (`troupe.document.indexed`; the webhook
    /// names it without the `troupe.` prefix).
    pub fn wants(&self, topic: &str) -> bool {
        let name = topic.strip_prefix("troupe.").unwrap_or(topic);
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }

    /// What `GET /v1/webhooks` shows: everything but the secret.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url,
            "events": if self.events.is_empty() { EVENTS.iter().map(|e| e.to_string()).collect() } else { self.events.clone() },
            "created_at": self.created_at,
        })
    }
}

/// The key of `tenant`'s webhook `id`.
pub fn key(tenant: &str, id: &str) -> String {
    format!("{PREFIX}{tenant}/{id}")
}

/// A fresh signing secret: 244 random bits, hex.
pub fn new_secret() -> String {
    format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `tenant`'s webhooks, in registration order; unreadable records are skipped.
pub fn list(tenant: &str) -> Result<Vec<Hook>> {
    let prefix = format!("{PREFIX}{tenant}/");
    let mut hooks = Vec::new();
    for k in state::list_keys(&prefix).map_err(host("listing webhooks"))? {
        if let Some(e) = state::get(&k).map_err(host(format!("reading {k}")))?
            && let Ok(hook) = serde_json::from_slice::<Hook>(&e.value)
        {
            hooks.push(hook);
        }
    }
    Ok(hooks)
}

/// Stores a new webhook (its id must be new).
pub fn create(tenant: &str, hook: &Hook) -> std::result::Result<(), HostError> {
    let bytes = serde_json::to_vec(hook).unwrap_or_default();
    state::put(&key(tenant, &hook.id), &bytes, Some(0)).map(|_| ())
}

/// Removes a webhook; false if there was none.
pub fn delete(tenant: &str, id: &str) -> std::result::Result<bool, HostError> {
    state::delete(&key(tenant, id), None)
}
