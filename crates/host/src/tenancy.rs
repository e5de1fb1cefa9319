//! Which tenant an invocation acts for, and the tenants the host has seen.
//!
//! The host, never the guest, decides an invocation's tenant: an HTTP request's comes
//! from its credential (or is `default` with auth off), an event's from its envelope
//! (which the host set when the event was published), a dropped-in file's from its
//! folder (`uploads/<tenant>/…`), a cron tick runs once per known tenant. Every
//! import then scopes its calls to that tenant ([`Binding`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use troupe_core::State;
use troupe_core::blobs::{OBJECT_CREATED_TYPE, ObjectCreated};
use troupe_core::event::Event;
use troupe_events::Tenant;
use troupe_events::tenant::InvalidTenant;

/// What one invocation may reach beyond its grants' names: its tenant's keys, plus
/// the objects whose arrival triggered it.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    /// The tenant every import call is scoped to.
    pub tenant: Tenant,
    /// `(bucket, key)` of the objects announced by the events being handled: a file
    /// dropped straight under `uploads/` names no tenant in its key, yet its
    /// handler must read and remove it.
    pub objects: Vec<(String, String)>,
    /// `(subject, traceparent)` of the triggering events, when traces are exported:
    /// an event the invocation publishes about one of those subjects (a document)
    /// continues its trace, even in a batch that mixes documents.
    pub origins: Vec<(String, String)>,
}

impl Binding {
    /// Bound to `tenant`, with no triggering objects.
    pub fn tenant(tenant: Tenant) -> Self {
        Self {
            tenant,
            objects: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// The `traceparent` of the triggering event about `subject`, if exactly one
    /// trace handled that subject.
    pub fn origin_of(&self, subject: &str) -> Option<&str> {
        let mut found = self.origins.iter().filter(|(s, _)| s == subject);
        let first = found.next()?;
        found
            .all(|(_, tp)| tp == &first.1)
            .then_some(first.1.as_str())
    }

    /// Whether `(bucket, key)` announced this invocation.
    pub fn announced(&self, bucket: &str, key: &str) -> bool {
        self.objects.iter().any(|(b, k)| b == bucket && k == key)
    }
}

/// The tenant `event` belongs to: its envelope's, or for an object-created
/// announcement without one, the object's folder (`uploads/<tenant>/…`), else
/// `default`.
pub fn of_event(event: &Event) -> Result<Tenant, InvalidTenant> {
    if let Some(t) = &event.tenant {
        return Tenant::new(t.as_str());
    }
    Ok(announced(event)
        .and_then(|(_, key)| Tenant::of_key(&key))
        .unwrap_or_default())
}

/// `(bucket, key)` of the object an object-created event announces.
pub fn announced(event: &Event) -> Option<(String, String)> {
    if event.ty != OBJECT_CREATED_TYPE {
        return None;
    }
    let record: ObjectCreated = serde_json::from_slice(&event.data).ok()?;
    Some((record.s3.bucket.name, record.s3.object.key))
}

/// Reserved state keys of the tenants the deployment has seen (cron ticks run once
/// per tenant).
const REGISTRY: &str = "_troupe/tenants/";

/// The tenants this deployment has served, kept in the state store so that every
/// host sees them; remembered in memory so that each is written once per process.
pub struct Tenants {
    state: Arc<dyn State>,
    seen: Mutex<HashSet<Tenant>>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants").finish_non_exhaustive()
    }
}

impl Tenants {
    /// The registry in `state`.
    pub fn new(state: Arc<dyn State>) -> Self {
        Self {
            state,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Records that `tenant` has work here. A failure is logged and retried at the
    /// tenant's next invocation: it delays only that tenant's cron ticks.
    pub async fn register(&self, tenant: &Tenant) {
        if self.seen.lock().expect("tenant set").contains(tenant) {
            return;
        }
        let key = format!("{REGISTRY}{tenant}");
        match self.state.put(&key, b"", Some(0)).await {
            Ok(_) | Err(troupe_core::Error::Conflict { .. }) => {
                self.seen.lock().expect("tenant set").insert(tenant.clone());
            }
            Err(e) => tracing::warn!(tenant = %tenant, error = %e, "could not record a tenant"),
        }
    }

    /// Every tenant recorded by any host, `default` always among them.
    pub async fn all(&self) -> troupe_core::Result<Vec<Tenant>> {
        let mut all: Vec<Tenant> = self
            .state
            .list(REGISTRY)
            .await?
            .iter()
            .filter_map(|k| Tenant::new(k.strip_prefix(REGISTRY)?).ok())
            .collect();
        if !all
            .iter()
            .any(|t| t.as_str() == troupe_events::DEFAULT_TENANT)
        {
            all.insert(0, Tenant::default());
        }
        Ok(all)
    }
}
