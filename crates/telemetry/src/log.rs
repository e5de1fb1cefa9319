//! Log lines, to stderr, in one of two formats, each carrying the trace of the span
//! it was written in (`trace_id`, `span_id`) when traces are exported:
//!
//! - `text`: tracing's usual line, the trace appended as `trace_id=… span_id=…`;
//! - `json`: one JSON object per line: `timestamp`, `level`, `target`, `fields`
//!   (the message among them), `span` (the innermost span's name and fields),
//!   `trace_id`, `span_id`.
//!
//! A guest's `logging.log` is written inside its invocation's span, so its lines
//! carry the trace of the event or request it handled.

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{Format, Full, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The stderr layer writing `format`.
pub(crate) fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(Text(Format::default()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(Json)
            .boxed(),
    }
}

/// The trace and span ids of the innermost exported span around the event.
fn trace_of<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if !crate::context::enabled() {
        return None;
    }
    // The event's explicit parent, else the current span.
    let ids: Vec<tracing::span::Id> = ctx.event_scope()?.map(|s| s.id()).collect();
    tracing::dispatcher::get_default(|dispatch| {
        // Spans the exporter does not take (other crates') have no context: look
        // further out.
        for id in &ids {
            if let Some(cx) = tracing_opentelemetry::get_otel_context(id, dispatch) {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
                }
            }
        }
        None
    })
}

/// tracing's full text format with the trace appended.
struct Text(Format<Full>);

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace, span)) = trace_of(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        writeln!(writer, "{line} trace_id={trace} span_id={span}")
    }
}

/// One JSON object per line.
struct Json;

impl<S> FormatEvent<S, JsonFields> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let trace = trace_of(ctx);
        let mut fields = serde_json::Map::new();
        event.record(&mut Visitor(&mut fields));
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("fields".into(), fields.into());
        if let Some(span) = ctx.event_scope().and_then(|mut s| s.next()) {
            let mut s = serde_json::Map::new();
            s.insert("name".into(), span.name().into());
            if let Some(f) = span.extensions().get::<FormattedFields<JsonFields>>()
                && let Ok(serde_json::Value::Object(values)) =
                    serde_json::from_str::<serde_json::Value>(&f.fields)
            {
                s.extend(values);
            }
            line.insert("span".into(), s.into());
        }
        if let Some((trace, span)) = trace {
            line.insert("trace_id".into(), trace.into());
            line.insert("span_id".into(), span.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields as JSON values.
struct Visitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
