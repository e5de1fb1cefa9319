//! `troupe worker`'s own listener: `POST /v1/embeddings`, `GET /health`,
//! `GET /metrics`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Embedder;
use crate::metrics::Metrics;

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
pub async fn read_body(body: Incoming) -> Result<Bytes, (u16, serde_json::Value)> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err((
            413,
            serde_json::json!({"error": {"code": "too_large", "message": format!("request body over {MAX_BODY} bytes or unreadable: {e}")}}),
        )),
    }
}

async fn handle(
    embedder: Embedder,
    metrics: Arc<Metrics>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
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

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    embedder: Embedder,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (embedder, metrics) = (embedder.clone(), metrics.clone());
        let service = hyper::service::service_fn(move |req| {
            let (embedder, metrics) = (embedder.clone(), metrics.clone());
            async move { Ok::<_, Infallible>(handle(embedder, metrics, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}
