//! `troupe worker`'s own listener: `POST /v1/embeddings`, `GET /health`,
//! `GET /metrics`. A [`Gate`] the caller passes admits `/v1/…` requests (the
//! deployment's credentials); `/health` and `/metrics` stay open.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Embedder;
use crate::metrics::Metrics;

/// Why a request was not admitted: the status, the JSON error body and the headers
/// that go with it (`WWW-Authenticate`, `Retry-After`).
#[derive(Debug, Clone)]
pub struct Denied {
    /// 401, 403, 429 or 503.
    pub status: u16,
    /// The `{"error": {…}}` body.
    pub body: serde_json::Value,
    /// Extra response headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Admits or refuses a `/v1/…` request by its method, path and headers.
pub type Gate = Arc<
    dyn Fn(
            http::Method,
            String,
            http::HeaderMap,
        ) -> Pin<Box<dyn Future<Output = Result<(), Denied>> + Send>>
        + Send
        + Sync,
>;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 << 20;

fn respond(status: u16, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

fn json(status: u16, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

/// Reads a body of at most [`MAX_BODY`] bytes; a larger one is a 413 response.
/// A body must arrive whole within this time.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads a body of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`]; a larger one
/// is a 413 response, a slower one a 408.
pub async fn read_body(body: Incoming) -> Result<Bytes, (u16, serde_json::Value)> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err((
            413,
            serde_json::json!({"error": {"code": "too_large", "message": format!("request body over {MAX_BODY} bytes or unreadable: {e}")}}),
        )),
        Err(_) => Err((
            408,
            serde_json::json!({"error": {"code": "too_slow", "message": format!("the request body did not arrive within {BODY_TIMEOUT:?}")}}),
        )),
    }
}

/// Serves one request inside its HTTP server span, which continues the client's W3C
/// trace context.
async fn handle(
    embedder: Embedder,
    metrics: Arc<Metrics>,
    gate: Option<Gate>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let route = matches!(path, "/v1/embeddings" | "/health" | "/metrics").then_some(path);
    let span = tracing::info_span!(
        "worker.http",
        otel.name = %match route {
            Some(r) => format!("{} {r}", req.method()),
            None => req.method().to_string(),
        },
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = route,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    troupe_telemetry::set_parent(&span, header("traceparent"), header("tracestate"));
    let resp = handle_in(embedder, metrics, gate, req)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        troupe_telemetry::set_error(&span, resp.status().as_str());
    }
    resp
}

async fn handle_in(
    embedder: Embedder,
    metrics: Arc<Metrics>,
    gate: Option<Gate>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if let Some(gate) = gate
        && !matches!(path.as_str(), "/health" | "/metrics")
        && let Err(denied) = gate(req.method().clone(), path, req.headers().clone()).await
    {
        let mut resp = json(denied.status, &denied.body);
        resp.headers_mut().extend(denied.headers);
        return resp;
    }
    match (req.method().clone(), req.uri().path()) {
        (http::Method::POST, "/v1/embeddings") => match read_body(req.into_body()).await {
            Ok(body) => {
                let (status, value) = crate::openai::handle(&embedder, &body).await;
                json(status, &value)
            }
            Err((status, value)) => json(status, &value),
        },
        (http::Method::GET, "/health") => match embedder
            .is_running()
            .then_some(())
            .ok_or(crate::Error::Stopped)
        {
            Ok(_) => json(
                200,
                &serde_json::json!({"status": "ok", "dependencies": {"model": {"status": "ok", "name": embedder.model()}}}),
            ),
            Err(e) => json(
                503,
                &serde_json::json!({"status": "degraded", "dependencies": {"model": {"status": "down", "error": e.to_string()}}}),
            ),
        },
        (http::Method::GET, "/metrics") => {
            respond(200, "text/plain; version=0.0.4", metrics.encode())
        }
        (_, path) => json(
            404,
            &serde_json::json!({"error": {"code": "not_found", "message": format!("no route serves {path}")}}),
        ),
    }
}

/// Connections served at once; the next ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// A client that has not sent its request head by then is disconnected.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest pause after failed accepts (out of file descriptors, mostly): doubling
/// from 10 ms, so a persistent failure costs no CPU.
const MAX_ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves until `shutdown` resolves; `gate` (when given) admits every request but
/// `/health` and `/metrics`.
pub async fn serve(
    listener: TcpListener,
    embedder: Embedder,
    metrics: Arc<Metrics>,
    gate: Option<Gate>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = std::time::Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        // Past the cap, stop accepting: clients queue in the backlog, not in memory.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => {
                    backoff = std::time::Duration::ZERO;
                    s
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(std::time::Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let (embedder, metrics, gate) = (embedder.clone(), metrics.clone(), gate.clone());
        let service = hyper::service::service_fn(move |req| {
            let (embedder, metrics, gate) = (embedder.clone(), metrics.clone(), gate.clone());
            async move { Ok::<_, Infallible>(handle(embedder, metrics, gate, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}
