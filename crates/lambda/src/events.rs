//! The Lambda event kinds, told apart by shape, and how each is answered.

use std::collections::HashMap;
use tracing::Instrument as _;

use anyhow::{Context as _, Result};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::Value;
use troupe_aws::notifications::{self, Notification};
use troupe_aws::sqs::Raw;
use troupe_host::bindings::Outcome;
use troupe_host::manifest::Source;
use troupe_host::tenancy::{self, Binding};

use crate::Adapter;

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Records[].eventSource == "aws:sqs"`.
    Sqs,
    /// `Records[].eventSource == "aws:s3"`.
    S3,
    /// API Gateway HTTP API (payload 2.0) or a function URL.
    Http,
    /// An EventBridge schedule.
    Schedule,
    /// Anything else.
    Unknown,
}

/// Tells an event's kind from its shape.
pub fn kind(event: &Value) -> Kind {
    let source = event["Records"][0]["eventSource"].as_str();
    match source {
        Some("aws:sqs") => return Kind::Sqs,
        Some("aws:s3") => return Kind::S3,
        _ => {}
    }
    if event["requestContext"]["http"]["method"].is_string() {
        return Kind::Http;
    }
    if event["source"] == "aws.events" && event["detail-type"] == "Scheduled Event" {
        return Kind::Schedule;
    }
    Kind::Unknown
}

/// SQS records, by queue: each queue's batch runs through its subscription's trigger;
/// what is left for redelivery is reported as batch item failures.
pub async fn sqs(adapter: &Adapter, event: Value) -> Result<Value> {
    let event: SqsEvent = serde_json::from_value(event).context("decoding the SQS event")?;
    let prefix = adapter.scale.settings.queue_prefix.clone();
    let mut by_queue: HashMap<String, Vec<Raw>> = HashMap::new();
    let mut response = SqsBatchResponse::default();
    for r in event.records {
        let message_id = r.message_id.clone().unwrap_or_default();
        let queue = r
            .event_source_arn
            .as_deref()
            .and_then(|arn| arn.rsplit(':').next())
            .and_then(|q| q.strip_prefix(&prefix))
            .map(str::to_owned);
        let Some(queue) = queue else {
            tracing::error!(message_id, arn = ?r.event_source_arn, prefix, "an SQS record from a queue outside TROUPE_QUEUE_PREFIX: left for redelivery");
            response.add_failure(message_id);
            continue;
        };
        let attributes = r
            .message_attributes
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
            .collect();
        by_queue.entry(queue).or_default().push(Raw {
            message_id,
            handle: r.receipt_handle.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            attributes,
            receive_count: r
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            sent_ms: r
                .attributes
                .get("SentTimestamp")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        });
    }
    for (queue, raws) in by_queue {
        let handles: HashMap<String, String> = raws
            .iter()
            .map(|r| (r.handle.clone(), r.message_id.clone()))
            .collect();
        let trigger = adapter
            .shared
            .app
            .subscriptions
            .iter()
            .find(|t| t.subscription.name == queue && adapter.serves(&t.component));
        let Some(trigger) = trigger else {
            tracing::error!(queue, component = ?adapter.component, "no trigger of this function consumes the queue: its messages are left for redelivery (check the event source mapping)");
            for id in handles.into_values() {
                response.add_failure(id);
            }
            continue;
        };
        let deliveries = match adapter.scale.queue.deliveries(&queue, raws).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(queue, error = %e, "preparing the batch failed; it is left for redelivery");
                for id in handles.into_values() {
                    response.add_failure(id);
                }
                continue;
            }
        };
        let left =
            troupe_host::triggers::subscription::process(&adapter.shared, trigger, deliveries)
                .await;
        for receipt in left {
            if let Some(id) = handles.get(&receipt.handle) {
                response.add_failure(id.clone());
            }
        }
    }
    Ok(serde_json::to_value(response)?)
}

/// S3 records straight from a bucket notification: each `blob` trigger whose bucket
/// and prefix match runs on them.
pub async fn s3(adapter: &Adapter, event: Value) -> Result<Value> {
    let body = serde_json::to_vec(&event)?;
    let mut failures = Vec::new();
    let mut ran = 0;
    for t in &adapter.shared.app.subscriptions {
        let Source::Blob { bucket } = &t.source else {
            continue;
        };
        if !adapter.serves(&t.component) {
            continue;
        }
        let Notification::Created(events) = notifications::decode(&body, bucket)? else {
            continue;
        };
        let events: Vec<_> = events
            .into_iter()
            .filter(|e| match &t.subscription.subject_prefix {
                Some(p) => e.subject.as_deref().is_some_and(|s| s.starts_with(p)),
                None => true,
            })
            .collect();
        if events.is_empty() {
            continue;
        }
        let loaded = adapter
            .shared
            .runtime
            .component(&t.component)
            .with_context(|| format!("component `{}` is not loaded", t.component))?;
        ran += events.len();
        // Each object runs for the tenant its folder names (`uploads/<tenant>/…`).
        for mut event in events {
            let tenant = match tenancy::of_event(&event) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(component = %t.component, error = %e, "an S3 event names no valid tenant; skipped");
                    continue;
                }
            };
            adapter.shared.tenants.register(&tenant).await;
            event.tenant = Some(tenant.to_string());
            let binding = Binding {
                tenant,
                objects: tenancy::announced(&event).into_iter().collect(),
                origins: Vec::new(),
            };
            // An S3 notification carries no trace context: the document's trace
            // starts here.
            let span = tracing::info_span!(
                "lambda.s3",
                otel.name = %format!("process {}", t.component),
                otel.kind = "consumer",
                messaging.system = "aws_s3",
                messaging.operation.type = "process",
                component = %t.component,
                tenant = %binding.tenant,
            );
            match adapter
                .shared
                .runtime
                .handle_events_in(loaded, vec![event.into()], binding)
                .instrument(span)
                .await
            {
                Ok(outcomes) => {
                    for o in outcomes {
                        match o {
                            Outcome::Ok => {}
                            Outcome::Retry(_) => {
                                failures.push(format!("{} asked to retry", t.component))
                            }
                            // No queue to hold it: Lambda's asynchronous retries are the wait.
                            Outcome::Defer(_) => {
                                failures.push(format!("{} asked to wait", t.component))
                            }
                            Outcome::Reject(r) => {
                                tracing::warn!(component = %t.component, reason = %r.reason, detail = %r.detail, "an S3 event was rejected")
                            }
                        }
                    }
                }
                Err(fault) => failures.push(format!("{}: {fault}", t.component)),
            }
        }
    }
    if !failures.is_empty() {
        // Lambda retries asynchronous invocations that fail.
        anyhow::bail!("S3 event not processed: {}", failures.join("; "));
    }
    Ok(serde_json::json!({"processed": ran}))
}

/// An HTTP request from API Gateway (payload 2.0) or a function URL.
pub async fn http(adapter: &Adapter, event: Value) -> Result<Value> {
    let request = http_request(event)?;
    let response = troupe_host::server::respond(adapter.shared.clone(), request).await;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the component's response: {e:?}"))?
        .to_bytes();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    match std::str::from_utf8(&bytes) {
        Ok(text) => out.body = Some(Body::Text(text.to_owned())),
        Err(_) => {
            out.body = Some(Body::Text(
                base64::engine::general_purpose::STANDARD.encode(&bytes),
            ));
            out.is_base64_encoded = true;
        }
    }
    Ok(serde_json::to_value(out)?)
}

/// The body type of a decoded HTTP event.
pub type EventBody = http_body_util::combinators::MapErr<
    http_body_util::Full<bytes::Bytes>,
    fn(std::convert::Infallible) -> hyper::Error,
>;

/// Decodes an API Gateway (payload 2.0) or function URL event into the request the
/// host serves; a malformed event is an error, never a panic.
pub fn http_request(event: Value) -> Result<http::Request<EventBody>> {
    let req: ApiGatewayV2httpRequest =
        serde_json::from_value(event).context("decoding the HTTP event (payload format 2.0)")?;
    let path = req
        .raw_path
        .clone()
        .or_else(|| req.request_context.http.path.clone())
        .unwrap_or_else(|| "/".into());
    let uri = match req.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let body = match (&req.body, req.is_base64_encoded) {
        (Some(b), true) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .context("the request body is marked base64 but does not decode")?,
        (Some(b), false) => b.clone().into_bytes(),
        (None, _) => Vec::new(),
    };
    let mut builder = http::Request::builder()
        .method(req.request_context.http.method.clone())
        .uri(&uri);
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    if let Some(cookies) = &req.cookies
        && !cookies.is_empty()
    {
        builder = builder.header(http::header::COOKIE, cookies.join("; "));
    }
    fn never(n: std::convert::Infallible) -> hyper::Error {
        match n {}
    }
    builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)).map_err(never as fn(_) -> _))
        .with_context(|| format!("building the request for {uri}"))
}

/// A scheduled event: one tick of every `cron` trigger this function serves.
pub async fn schedule(adapter: &Adapter) -> Result<Value> {
    let now = chrono::Utc::now();
    let mut ticked = 0;
    for t in &adapter.shared.app.cron {
        if adapter.serves(&t.component) {
            troupe_host::triggers::cron::tick(&adapter.shared, t, now).await;
            ticked += 1;
        }
    }
    Ok(serde_json::json!({"ticked": ticked}))
}
