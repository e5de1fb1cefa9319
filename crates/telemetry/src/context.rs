//! W3C trace context between `tracing` spans and what carries it across a hop: an
//! event envelope's `traceparent`, or HTTP headers (`traceparent`, `tracestate`).
//!
//! Everything here is a no-op returning `None` when nothing is exported (no OTLP
//! endpoint): spans then have no trace id to carry, and the check is one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ON: AtomicBool = AtomicBool::new(false);

/// Marks spans as exported ([`crate::init`] does, when an endpoint is configured).
pub(crate) fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans carry a trace (an exporter is installed).
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The `traceparent` of `span`, for an envelope or a header; `None` when nothing is
/// exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    headers_of(span).and_then(|mut h| h.remove("traceparent"))
}

/// The `traceparent` of the current span.
pub fn traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// The W3C headers (`traceparent`, and `tracestate` when there is one) of `span`.
pub fn headers_of(span: &Span) -> Option<HashMap<String, String>> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(carrier)
}

/// The span context a `traceparent` (and optional `tracestate`) names; `None` when it
/// is malformed.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace id (32 hex digits) of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<String> {
    parse(traceparent, None).map(|sc| sc.trace_id().to_string())
}

/// Makes the span a `traceparent` names the parent of `span` (before `span` is first
/// entered). A missing or malformed one leaves `span` a root.
pub fn set_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(sc) = traceparent.and_then(|t| parse(t, tracestate)) {
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        // Fails only once the span has started, which callers do not do.
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the span a `traceparent` names (a batch's events).
pub fn add_link(span: &Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    if let Some(sc) = parse(traceparent, None) {
        span.add_link(sc);
    }
}

/// The trace id of `span`, when it is exported.
pub fn trace_id_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// A span that ended in error: marks its OpenTelemetry status.
pub fn set_error(span: &Span, description: &str) {
    if !enabled() {
        return;
    }
    span.set_status(opentelemetry::trace::Status::error(description.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_bad_ones_do_not() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(trace_id("garbage").is_none());
        assert!(trace_id("").is_none());
    }

    #[test]
    fn nothing_is_carried_when_nothing_is_exported() {
        let span = tracing::info_span!("troupe.test");
        assert!(traceparent_of(&span).is_none());
        assert!(trace_id_of(&span).is_none());
    }
}
