//! Host-side bindings of the `troupe:pipeline` WIT package (`wit/` at the repo root).

// Generated from `wit/troupe.wit`: its items carry the WIT's doc comments; the glue
// bindgen adds around them (`*Pre`, `add_to_linker`, the host traits' plumbing) has none.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "event-function",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use generated::EventFunctionPre;
pub use generated::troupe::pipeline::types::{
    Error as GuestError, Event as GuestEvent, Outcome, Rejection,
};
pub use generated::troupe::pipeline::{
    blobs, config, embeddings, logging, publisher, state, types, vectors,
};

impl From<troupe_core::Event> for GuestEvent {
    fn from(e: troupe_core::Event) -> Self {
        Self {
            id: e.id,
            source: e.source,
            type_: e.ty,
            subject: e.subject,
            time: e.time,
            datacontenttype: e.datacontenttype,
            data: e.data,
            tenant: e.tenant,
            session: e.session,
            traceparent: e.traceparent,
        }
    }
}

impl From<GuestEvent> for troupe_core::Event {
    fn from(e: GuestEvent) -> Self {
        Self {
            id: e.id,
            source: e.source,
            ty: e.type_,
            subject: e.subject,
            time: e.time,
            datacontenttype: e.datacontenttype,
            data: e.data,
            tenant: e.tenant,
            session: e.session,
            traceparent: e.traceparent,
        }
    }
}
