//! The routes the host answers itself, whatever the manifest says: `/health`,
//! `/metrics`, the API's description, and the method check of `/v1/events`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{error, json, json_bytes};
use crate::Shared;

/// Where the API's OpenAPI description is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The OpenAPI 3.1 description of every `/v1` route (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

pub(super) fn openapi() -> Response<HyperOutgoingBody> {
    json_bytes(Bytes::from_static(OPENAPI.as_bytes()))
}

/// `/metrics`: the host's registry and every extra source, one OpenMetrics text.
pub(super) async fn metrics(shared: &Shared) -> Response<HyperOutgoingBody> {
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

/// 405 with `Allow: GET`, for a route that answers GET only.
pub(super) fn get_only(path: &str) -> Response<HyperOutgoingBody> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{path} answers GET only"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
    r
}

/// `/health`: each backend and extra dependency, 503 when one is down.
pub(super) async fn health(shared: &Shared) -> Response<HyperOutgoingBody> {
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
