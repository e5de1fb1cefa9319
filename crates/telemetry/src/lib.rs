//! Troupe's traces and logs, for every process (`troupe up`, `serve`, `worker`, the
//! Lambda adapter): one [`init`] at start-up installs the log format and, when an OTLP
//! endpoint is configured, the span exporter; the [`Telemetry`] it returns flushes on
//! [`Telemetry::shutdown`].
//!
//! Configuration is the OpenTelemetry standard's: `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! collector's base URL; traces go to `/v1/traces` under it) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`. With
//! neither endpoint set nothing is exported: no exporter thread runs, no span gets a
//! trace id, and the envelopes carry no `traceparent`.
//!
//! Only Troupe's own spans (targets `troupe…`) become OpenTelemetry spans, and its log
//! lines from `info` up their events; the SDKs' internal spans (AWS, hyper) stay
//! local, where the log filter decides about them.
//!
//! # Layout
//!
//! - [`context`]: W3C trace context between spans and envelopes or headers.
//! - [`log`]: the log line formats (`text`, `json`), each carrying the trace.
//! - `export`: the OTLP/HTTP transport, on ureq.

use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub mod context;
mod export;
pub mod log;

pub use context::{
    add_link, set_error, set_parent, trace_id, trace_id_of, traceparent, traceparent_of,
};
pub use log::LogFormat;

/// What [`init`] installed; [`Telemetry::shutdown`] exports the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered now (the Lambda adapter calls this after each
    /// invocation: a frozen sandbox exports nothing).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The OTLP traces endpoint the environment configures, if any.
pub fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber: log lines in `format` to stderr, filtered by
/// `TROUPE_LOG` (default `info`), and, for a `service` (a process that serves:
/// `None` for a client command) when an OTLP endpoint is configured, the span
/// exporter (its `service.name` unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names one). Call once, early.
pub fn init(service: Option<&str>, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TROUPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let provider = match service {
        Some(service) if endpoint_configured() => Some(provider(service)?),
        _ => None,
    };
    let otel = provider.as_ref().map(|p| {
        context::enable();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("troupe"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            // Troupe's own spans, and its log lines from `info` up as span events. A
            // filter with a level ceiling, not a predicate: the ceiling is also what
            // `log` records from dependencies are cut at before they cost anything
            // (a predicate would raise it to `trace`, and the model's `log::trace!`
            // calls would each reach the subscriber).
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("troupe", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(otel)
        .with(log::layer(format).with_filter(filter))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

fn provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(export::Ureq::new())
        .build()
        .map_err(|e| anyhow::anyhow!("configuring the OTLP exporter: {e}"))?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name"));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}`: use `text` or `json`"
            )),
        }
    }
}
