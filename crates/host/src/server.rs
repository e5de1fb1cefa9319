//! The main HTTP listener: `GET /health`, `GET /metrics`, and the manifest's routes,
//! each request served by a fresh instance of its component.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

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
use crate::runtime::{Exports, Fault, Runtime};

/// Largest body a native endpoint reads.
const MAX_NATIVE_BODY: usize = 16 << 20;

/// A client that has not sent its request head by then is disconnected.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn json(status: StatusCode, value: &serde_json::Value) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
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

/// Accepts connections until `shutdown` resolves, then lets open requests finish.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
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
            if let Err(e) = conn.await {
                tracing::debug!(client.address = %peer, error = %e, "connection ended with an error");
            }
        });
    }
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

async fn handle<B: RequestBody>(
    shared: Arc<Shared>,
    req: Request<B>,
) -> Response<HyperOutgoingBody> {
    let path = req.uri().path().to_owned();
    if let Some((_, _, endpoint)) = shared
        .options
        .endpoints
        .iter()
        .find(|(m, p, _)| m == req.method() && *p == path)
    {
        let endpoint = endpoint.clone();
        return match http_body_util::Limited::new(req.into_body(), MAX_NATIVE_BODY)
            .collect()
            .await
        {
            Ok(body) => {
                let (status, value) = endpoint(body.to_bytes()).await;
                json(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &value,
                )
            }
            Err(e) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("request body over {MAX_NATIVE_BODY} bytes or unreadable: {e}"),
            ),
        };
    }
    match (req.method(), path.as_str()) {
        (&http::Method::GET, "/health") => health(&shared).await,
        (&http::Method::GET, "/metrics") => {
            shared.refresh_depths().await;
            let mut text = shared.metrics.encode();
            for source in &shared.options.metrics {
                // Each registry ends with `# EOF`; keep only the last one.
                text = text.trim_end().trim_end_matches("# EOF").to_owned();
                text.push_str(&source());
            }
            let body = Full::new(Bytes::from(text))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync();
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => match shared.app.route(&path) {
            Some(component) => invoke(&shared, component, req).await,
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route serves {path}"),
            ),
        },
    }
}

async fn health(shared: &Shared) -> Response<HyperOutgoingBody> {
    let b = &shared.backends;
    let (q, s, o) = tokio::join!(b.queue.health(), b.state.health(), b.blobs.health());
    let check = |r: &troupe_core::Result<()>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "down", "error": e.to_string()}),
    };
    let mut ok = q.is_ok() && s.is_ok() && o.is_ok();
    let mut deps = serde_json::json!({"queue": check(&q), "state": check(&s), "blobs": check(&o)});
    for (name, probe) in &shared.options.health {
        let entry = match probe().await {
            Ok(()) => serde_json::json!({"status": "ok"}),
            Err(e) => {
                ok = false;
                serde_json::json!({"status": "down", "error": e})
            }
        };
        deps[name.as_str()] = entry;
    }
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "app": shared.app.name,
        "dependencies": deps,
    });
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

async fn invoke<B: RequestBody>(
    shared: &Arc<Shared>,
    id: &str,
    req: Request<B>,
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
        component = %id,
        trigger = "http",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let permit = match tokio::time::timeout(
        loaded.def.timeout,
        loaded.slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            shared.metrics.invoked(id, "http", "overloaded", 0.0);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                &format!(
                    "component `{id}` is at its concurrency limit ({}); retry later",
                    loaded.def.max_concurrency
                ),
            );
        }
    };
    let started = Instant::now();
    let mut store = runtime.store(&loaded);
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
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &format!("{e:#}")),
    };
    let (shared2, loaded2, id2) = (shared.clone(), loaded.clone(), id.to_owned());
    // Tracked, so shutdown waits for guests still streaming a body or publishing
    // after their response was sent.
    let task = shared.tasks.spawn(
        async move {
            let _permit = permit;
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
            let outcome = match tokio::time::timeout(limit, call).await {
                Ok(result) => result.map_err(|e| Runtime::fault(&loaded2, &store, started, &e)),
                Err(_) => Err(Fault::Timeout(limit)),
            };
            let label = outcome.as_ref().err().map_or("ok", Fault::label);
            shared2
                .metrics
                .invoked(&id2, "http", label, started.elapsed().as_secs_f64());
            outcome
        }
        .instrument(span.clone()),
    );
    let resp = match rx.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "component_error",
            &format!("{code:?}"),
        ),
        Err(_) => match task.await {
            Ok(Err(Fault::Timeout(t))) => error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("component `{id}` did not respond within {t:?}"),
            ),
            Ok(Err(fault)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                fault.label(),
                &format!("component `{id}` {fault}"),
            ),
            Ok(Ok(())) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_response",
                &format!("component `{id}` returned without setting a response"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "panic", &e.to_string()),
        },
    };
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}
