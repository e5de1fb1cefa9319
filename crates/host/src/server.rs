//! The main HTTP listener: `GET /health`, `GET /metrics`, and the manifest's routes,
//! each request served by a fresh instance of its component. Requests under `/v1/`
//! are authenticated first ([`crate::auth`]), and a component gets the caller's
//! tenant in the `troupe-tenant` header, set by the host.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::Shared;
use crate::admission::{BodyError, ConnectionGate, read_body};
use crate::auth::{self, Principal, Refusal};
use crate::runtime::{Exports, Fault, Runtime};
use crate::tenancy::Binding;
use troupe_events::Tenant;

mod host;
pub use host::{OPENAPI, OPENAPI_PATH};

/// Largest body a native endpoint reads.
const MAX_NATIVE_BODY: u64 = 16 << 20;

/// A client that has not sent its request head by then is disconnected.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn json(status: StatusCode, value: &serde_json::Value) -> Response<HyperOutgoingBody> {
    let mut resp = json_bytes(Bytes::from(value.to_string()));
    *resp.status_mut() = status;
    resp
}

/// 200 with `bytes` of JSON.
fn json_bytes(bytes: Bytes) -> Response<HyperOutgoingBody> {
    let body = Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error body: `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<HyperOutgoingBody> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// A JSON error body naming the request, for failures whose detail stays in the
/// host's log (under the same request id): `{"error": {"code", "message",
/// "request_id"}}`.
fn failure(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<HyperOutgoingBody> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message, "request_id": request_id}}),
    )
}

/// Header carrying the request id on every answer.
const REQUEST_ID: &str = "x-request-id";

/// Accepts connections until `shutdown` resolves, then lets open requests finish.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let gate = ConnectionGate::new(&shared.options.http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match gate.admit(peer.ip()) {
            Ok(a) => a,
            Err(refused) => {
                tracing::debug!(client.address = %peer, ?refused, "connection refused");
                // Best effort: a full socket buffer just means a bare close.
                let _ = stream.try_write(&refused.answer());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(shared, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(e) = conn.await {
                tracing::debug!(client.address = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Event streams never end by themselves: end them, so open connections can.
    shared.feeds.close();
    graceful.shutdown().await;
}

/// A request body the host can hand to a component.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static
{
}

/// Serves one request without a listener (the Lambda adapter's HTTP events): native
/// endpoints, `/health`, `/metrics` and the manifest's routes, as the listener does.
pub async fn respond<B: RequestBody>(
    shared: Arc<Shared>,
    req: Request<B>,
) -> Response<HyperOutgoingBody> {
    handle(shared, req).await
}

/// Serves one request inside its HTTP server span, which continues the client's W3C
/// trace context (`traceparent`, `tracestate`) and whose `traceparent` the answer
/// carries.
async fn handle<B: RequestBody>(
    shared: Arc<Shared>,
    mut req: Request<B>,
) -> Response<HyperOutgoingBody> {
    let request_id = uuid::Uuid::now_v7().simple().to_string();
    let timer = crate::metrics::http::Timer::start(&shared, req.method(), req.uri().path());
    let route_name =
        Some(timer.route().to_owned()).filter(|r| r != crate::metrics::http::UNMATCHED);
    let span = tracing::info_span!(
        "host.http",
        otel.name = %match &route_name {
            Some(r) => format!("{} {r}", req.method()),
            None => req.method().to_string(),
        },
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.route = route_name.as_deref(),
        request.id = %request_id,
        http.response.status_code = tracing::field::Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    troupe_telemetry::set_parent(&span, header("traceparent"), header("tracestate"));
    // A function sees the host's trace context, never the client's own.
    let trace = troupe_telemetry::context::headers_of(&span);
    for name in ["traceparent", "tracestate"] {
        req.headers_mut().remove(name);
        if let Some(v) = trace
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            req.headers_mut().insert(name, v);
        }
    }
    let mut resp = route(shared.clone(), req, &request_id)
        .instrument(span.clone())
        .await;
    timer.finish(&shared.metrics, resp.status());
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        troupe_telemetry::set_error(&span, status.canonical_reason().unwrap_or("server error"));
    }
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(v) = trace
        .as_ref()
        .and_then(|t| t.get("traceparent"))
        .and_then(|v| http::HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert("traceparent", v);
    }
    resp
}

async fn route<B: RequestBody>(
    shared: Arc<Shared>,
    mut req: Request<B>,
    request_id: &str,
) -> Response<HyperOutgoingBody> {
    let path = req.uri().path().to_owned();
    // The API's description is public: client generators fetch it before they have a
    // credential.
    if path == OPENAPI_PATH && req.method() == http::Method::GET {
        return host::openapi();
    }
    // The API needs a credential (when authentication is on) before anything serves it.
    let principal = if auth::is_api_path(&path) {
        match shared.auth.admit(req.method(), &path, req.headers()).await {
            Ok(p) => p,
            Err(r) => {
                tracing::debug!(
                    http.request.method = %req.method(),
                    url.path = %path,
                    http.response.status_code = r.status.as_u16(),
                    error.code = r.code,
                    "request refused before any function ran"
                );
                return refused(r);
            }
        }
    } else {
        Principal::anonymous()
    };
    if let Some((_, _, endpoint)) = shared
        .options
        .endpoints
        .iter()
        .find(|(m, p, _)| m == req.method() && *p == path)
    {
        let endpoint = endpoint.clone();
        let declared = content_length(&req);
        return match read_body(
            req.into_body(),
            declared,
            MAX_NATIVE_BODY,
            &shared.options.http,
            &shared.body_budget,
        )
        .await
        {
            Ok(body) => {
                let (status, value) = endpoint(body.bytes.clone()).await;
                json(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &value,
                )
            }
            Err(e) => body_refused(e),
        };
    }
    match (req.method(), path.as_str()) {
        (&http::Method::GET, "/health") => host::health(&shared).await,
        (&http::Method::GET, "/metrics") => host::metrics(&shared).await,
        (&http::Method::GET, crate::feed::PATH) => {
            crate::feed::respond(&shared, principal.tenant.as_str(), req.headers())
        }
        (_, crate::feed::PATH) => host::get_only(&path),
        _ => match shared.app.route(&path) {
            Some(component) => {
                auth::bind_tenant(req.headers_mut(), &principal.tenant);
                invoke(&shared, component, req, request_id, principal.tenant).await
            }
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route serves {path}"),
            ),
        },
    }
}

/// Whether the client asks for an event stream (a long-lived response).
fn wants_stream<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

async fn invoke<B: RequestBody>(
    shared: &Arc<Shared>,
    id: &str,
    req: Request<B>,
    request_id: &str,
    tenant: Tenant,
) -> Response<HyperOutgoingBody> {
    let runtime: &Runtime = &shared.runtime;
    let Some(loaded) = runtime.component(id).cloned() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_component",
            &format!("component `{id}` is not loaded"),
        );
    };
    let Exports::Http(pre) = loaded.exports.clone() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_http",
            &format!("component `{id}` does not export wasi:http/incoming-handler"),
        );
    };
    let span = tracing::info_span!(
        "host.invoke",
        otel.name = %format!("invoke {id}"),
        otel.status_code = tracing::field::Empty,
        component = %id,
        trigger = "http",
        request.id = %request_id,
        tenant = %tenant,
        http.response.status_code = tracing::field::Empty,
    );
    // The body first, whole, before any slot is taken: a slow client holds its
    // connection, never a slot.
    let limit = loaded.def.max_body_bytes;
    let declared = content_length(&req);
    let stream = wants_stream(&req);
    let (parts, body) = req.into_parts();
    let body = match read_body(
        body,
        declared,
        limit,
        &shared.options.http,
        &shared.body_budget,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            shared
                .metrics
                .invoked(id, "http", "refused", 0.0, Duration::ZERO);
            if let BodyError::Broken(why) = &e {
                tracing::debug!(parent: &span, error = %why, "request body broken off");
            }
            return body_refused(e);
        }
    };
    // The body's share of the buffer budget is held until the invocation ends.
    let req = Request::from_parts(parts, Full::new(body.bytes.clone()));
    // Event streams are long-lived: they draw from their own pool when the component
    // has one, and are refused at once, not queued, when it is full.
    let permit = if stream && loaded.def.max_streams > 0 {
        match loaded.streams.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                shared
                    .metrics
                    .invoked(id, "http", "overloaded", 0.0, Duration::ZERO);
                return busy(&format!(
                    "{} event streams are open on this route, as many as it serves; retry shortly",
                    loaded.def.max_streams
                ));
            }
        }
    } else {
        let wait = loaded.def.timeout.min(shared.options.http.slot_wait);
        match tokio::time::timeout(wait, loaded.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                shared
                    .metrics
                    .invoked(id, "http", "overloaded", 0.0, Duration::ZERO);
                return busy(&format!(
                    "component `{id}` is at its concurrency limit ({}); retry later",
                    loaded.def.max_concurrency
                ));
            }
        }
    };
    shared.tenants.register(&tenant).await;
    let started = Instant::now();
    let mut store = runtime.store(&loaded, Binding::tenant(tenant));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let prepared = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|r| {
            store
                .data_mut()
                .http()
                .new_response_outparam(tx)
                .map(|o| (r, o))
        });
    let (request, out) = match prepared {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(parent: &span, error = %format!("{e:#}"), "request not handed to the component");
            return failure(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request could not be handed to the function",
                request_id,
            );
        }
    };
    let (shared2, loaded2, id2) = (shared.clone(), loaded.clone(), id.to_owned());
    // Tracked, so shutdown waits for guests still streaming a body or publishing
    // after their response was sent.
    let task = shared.tasks.spawn(
        async move {
            let _permit = permit;
            let _body = body;
            let limit = loaded2.def.timeout;
            // Epoch interruption stops running guest code; this also bounds time
            // spent waiting on the host (sleeps, slow outbound calls).
            let call = async {
                match pre.instantiate_async(&mut store).await {
                    Ok(proxy) => {
                        proxy
                            .wasi_http_incoming_handler()
                            .call_handle(&mut store, request, out)
                            .await
                    }
                    Err(e) => Err(e),
                }
            };
            let (timed, cpu) = crate::metrics::cpu_timed(tokio::time::timeout(limit, call)).await;
            let outcome = match timed {
                Ok(result) => result.map_err(|e| Runtime::fault(&loaded2, &store, started, &e)),
                Err(_) => Err(Fault::Timeout(limit)),
            };
            let label = outcome.as_ref().err().map_or("ok", Fault::label);
            if let Err(fault) = &outcome {
                tracing::warn!(error = %fault, "the component failed");
                troupe_telemetry::set_error(&tracing::Span::current(), fault.label());
            }
            shared2
                .metrics
                .invoked(&id2, "http", label, started.elapsed().as_secs_f64(), cpu);
            outcome
        }
        .instrument(span.clone()),
    );
    let resp = match rx.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => {
            tracing::warn!(parent: &span, error = ?code, "the component answered with an error code");
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "component_error",
                &format!("the function `{id}` failed to answer; the host's log has the details"),
                request_id,
            )
        }
        Err(_) => match task.await {
            Ok(Err(Fault::Timeout(t))) => failure(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("the function `{id}` did not answer within {t:?}"),
                request_id,
            ),
            // The detail (a trap's backtrace, a panic's message) is logged, not sent.
            Ok(Err(fault)) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                fault.label(),
                &format!(
                    "the function `{id}` failed ({}); the host's log has the details",
                    fault.label()
                ),
                request_id,
            ),
            Ok(Ok(())) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_response",
                &format!("the function `{id}` returned without an answer"),
                request_id,
            ),
            Err(e) => {
                tracing::error!(parent: &span, error = %e, "the invocation task failed");
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the host's log has the details",
                    request_id,
                )
            }
        },
    };
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

/// The declared `Content-Length`, if any.
fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The answer to a body that was not read whole.
fn body_refused(e: BodyError) -> Response<HyperOutgoingBody> {
    match e {
        BodyError::TooLarge(limit) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the request body is larger than the limit of {limit} bytes for this route"),
        ),
        BodyError::TooSlow { rate } => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                "too_slow",
                &format!(
                    "the request body arrived slower than {rate} bytes/s; send it faster or in smaller parts"
                ),
            );
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        }
        BodyError::Busy => busy(
            "the server is receiving as many request bodies as it buffers at once; retry shortly",
        ),
        BodyError::Broken(_) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read whole",
        ),
    }
}

/// The answer to a request refused by authentication, scope or rate limit.
fn refused(r: Refusal) -> Response<HyperOutgoingBody> {
    let mut resp = error(r.status, r.code, &r.message);
    let headers = resp.headers_mut();
    if let Some(challenge) = r
        .challenge
        .and_then(|c| http::HeaderValue::from_str(&c).ok())
    {
        headers.insert(http::header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(secs) = r.retry_after {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    resp
}

/// 503 with `Retry-After`: the request may succeed shortly.
pub(crate) fn busy(message: &str) -> Response<HyperOutgoingBody> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}
