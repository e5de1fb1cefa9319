//! The host side of the `troupe:pipeline` imports: one module per interface, each
//! with a view (the backend, the component's id and its grants) that implements the
//! interface's `Host` trait and is linked on its own. A component holds only the
//! backends it was granted something of ([`Granted`]); a call outside its grants
//! answers `denied` and never reaches a backend.
//!
//! Every call is also scoped to the invocation's tenant ([`Binding`]): state and blob
//! keys must be `<kind>/<tenant>/…`, event-log subjects `<tenant>/…`, vector calls
//! and published events take the tenant from the host, never from the guest.
//!
//! Backend failures reach the guest as WIT errors (`conflict`, `invalid`,
//! `unavailable`) it can react to; only host bugs become traps. Adding a capability
//! is a WIT interface, a module here and a line in [`add_to_linker`].

use std::sync::Arc;

use troupe_core::Error as CoreError;
use wasmtime::component::{HasSelf, Linker};

use crate::Backends;
use crate::bindings::{GuestError, types};
use crate::manifest::{Access, Grants};
use crate::store::{Ctx, LogGate};
use crate::tenancy::Binding;
use troupe_events::Tenant;

mod blobs;
mod config;
mod embeddings;
mod logging;
mod publisher;
mod state;
#[cfg(test)]
mod tests;
mod vectors;

pub use blobs::BlobsView;
pub use config::ConfigView;
pub use embeddings::EmbeddingsView;
pub use logging::LoggingView;
pub use publisher::PublisherView;
pub use state::StateView;
pub use vectors::VectorsView;

/// What an import returns: a trap (host bug) or the guest's result.
type Guest<T> = wasmtime::Result<Result<T, GuestError>>;

/// Adds every `troupe:pipeline` import to `linker`, each served by its view of the
/// store's [`Ctx`].
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    types::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)?;
    publisher::add_to_linker(linker)?;
    blobs::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    logging::add_to_linker(linker)?;
    embeddings::add_to_linker(linker)?;
    vectors::add_to_linker(linker)?;
    Ok(())
}

impl types::Host for Ctx {}

/// The backends a component was granted something of, and its grants: what its
/// imports may reach. A backend it has no grant on is not held at all.
pub struct Granted {
    /// What the manifest grants.
    pub grants: Grants,
    queue: Option<Arc<dyn troupe_core::Queue>>,
    blobs: Option<Arc<dyn troupe_core::Blobs>>,
    state: Option<Arc<dyn troupe_core::State>>,
    vectors: Option<Arc<dyn troupe_core::Vectors>>,
    embeddings: Option<Arc<dyn troupe_core::Embeddings>>,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl Granted {
    /// The part of `backends` that `grants` reach.
    pub fn new(backends: &Backends, grants: Grants) -> Self {
        let state = !grants.state.is_empty() || grants.event_logs != Access::None;
        Self {
            queue: (!grants.publish.is_empty()).then(|| backends.queue.clone()),
            blobs: (!grants.blobs.is_empty()).then(|| backends.blobs.clone()),
            state: state.then(|| backends.state.clone()),
            vectors: (grants.vectors != Access::None).then(|| backends.vectors.clone()),
            embeddings: backends.embeddings.clone().filter(|_| grants.embeddings),
            grants,
        }
    }
}

/// Who is calling: the component's id, for denials, the gate its log lines
/// (denials among them) pass, and the tenant the invocation acts for.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The component id.
    pub component: &'a str,
    /// Its log gate.
    pub gate: &'a LogGate,
    /// The invocation's tenant, and the objects that triggered it.
    pub binding: &'a Binding,
}

impl<'a> Caller<'a> {
    /// The error for a call outside the grants, logged (through the component's log
    /// gate, so a guest that keeps trying cannot flood the host's log) with what to
    /// add to the manifest.
    fn denied(&self, what: String, grant: String) -> GuestError {
        let message = format!(
            "component `{}` is not granted {what}: add {grant} to [component.{}.tool.troupe.grants] in the manifest",
            self.component, self.component
        );
        if let Some(line) = self.gate.admit(self.component, message.clone()) {
            tracing::warn!(target: "troupe::grants", component = self.component, "{line}");
        }
        GuestError::Denied(message)
    }

    /// The tenant every call is scoped to.
    pub fn tenant(&self) -> &'a Tenant {
        &self.binding.tenant
    }

    /// The error for a name outside the invocation's tenant (`what` names it, `rule`
    /// says what it must look like), logged as a denial is.
    fn foreign(&self, what: String, rule: &str) -> GuestError {
        let tenant = self.tenant();
        let message = format!(
            "component `{}` acts for tenant `{tenant}` here and may not reach {what}: {rule}",
            self.component
        );
        if let Some(line) = self.gate.admit(self.component, message.clone()) {
            tracing::warn!(target: "troupe::tenancy", component = self.component, tenant = %tenant, "{line}");
        }
        GuestError::Denied(message)
    }
}

/// A backend error as the guest sees it. An engine's own failure (which may name
/// files, hosts or SQL) stays in the host's log; the guest, and whoever it answers,
/// learns which backend failed and that a retry may help.
fn guest_error(e: CoreError) -> GuestError {
    match e {
        CoreError::Conflict { .. } => GuestError::Conflict,
        CoreError::Invalid { .. } | CoreError::NoSuchQueue(_) => GuestError::Invalid(e.to_string()),
        CoreError::Backend { backend, .. } => {
            tracing::warn!(error = %e, "a backend call from a component failed");
            GuestError::Unavailable(format!(
                "the {backend} backend failed; retry later (the host's log has the details)"
            ))
        }
        other => GuestError::Unavailable(other.to_string()),
    }
}

fn reply<T>(r: troupe_core::Result<T>) -> Guest<T> {
    Ok(r.map_err(guest_error))
}

/// A count as the WIT's `u32`, saturating.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
