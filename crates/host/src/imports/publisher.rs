//! `troupe:pipeline/publisher`: events onto the topics the component may publish to.

use tracing::Instrument as _;
use troupe_core::{Message, Queue};
use wasmtime::component::{HasData, Linker};

use super::{Caller, Guest, reply};
use crate::bindings::{GuestError, GuestEvent, publisher};
use crate::manifest::Grants;
use crate::store::Ctx;

/// A component's publisher: the queue, if it may publish anywhere, and its grants.
pub struct PublisherView<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// The queue; `None` without any `publish` grant.
    pub queue: Option<&'a dyn Queue>,
    /// Its grants.
    pub grants: &'a Grants,
}

struct HasPublisher;

impl HasData for HasPublisher {
    type Data<'a> = PublisherView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    publisher::add_to_linker::<Ctx, HasPublisher>(linker, |ctx| {
        let env = &*ctx.env;
        PublisherView {
            caller: ctx.caller(),
            queue: env.granted.queue.as_deref(),
            grants: &env.granted.grants,
        }
    })
}

impl publisher::Host for PublisherView<'_> {
    async fn publish(&mut self, topic: String, event: GuestEvent) -> Guest<()> {
        if topic.is_empty() {
            return Ok(Err(GuestError::Invalid("topic must not be empty".into())));
        }
        let Some(queue) = self.queue.filter(|_| self.grants.publishes(&topic)) else {
            return Ok(Err(self.caller.denied(
                format!("publishing to topic `{topic}`"),
                format!("\"{topic}\" to `publish`"),
            )));
        };
        let mut event = troupe_core::Event::from(event);
        if event.id.is_empty() {
            event.id = troupe_core::event::new_id();
        }
        if event.time.is_empty() {
            event.time = troupe_core::event::now_rfc3339();
        }
        // The event belongs to the tenant the invocation acts for, whatever the guest
        // wrote: its handlers will act for that tenant too.
        event.tenant = Some(self.caller.tenant().to_string());
        if event.source.is_empty() {
            event.source = format!("/functions/{}", self.caller.component);
        }
        let span = tracing::info_span!(
            "host.publish",
            otel.name = %format!("publish {topic}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "troupe",
            messaging.operation.type = "publish",
            messaging.destination.name = %topic,
            messaging.message.id = %event.id,
        );
        // In an invocation handling several documents' events, an event about one of
        // them continues that document's trace.
        let current = tracing::Span::current();
        let origin = event
            .subject
            .as_deref()
            .and_then(|s| self.caller.binding.origin_of(s))
            .filter(|tp| troupe_telemetry::trace_id(tp) != troupe_telemetry::trace_id_of(&current));
        troupe_telemetry::set_parent(&span, origin, None);
        // The trace context is the host's to set, like the tenant.
        event.traceparent = troupe_telemetry::traceparent_of(&span);
        let sent = queue
            .publish(&topic, &[Message::from_event(&event)])
            .instrument(span.clone())
            .await;
        if let Err(e) = &sent {
            troupe_telemetry::set_error(&span, &e.to_string());
        }
        reply(sent.map(|_| ()))
    }
}
