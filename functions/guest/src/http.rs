//! JSON responses for the HTTP functions; every error body is
//! `{"error": {"code", "message"}}`.

use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

/// The request header in which the host names the tenant a request acts for (after
/// authenticating it, and removing whatever the client sent under that name).
pub const TENANT_HEADER: &str = "troupe-tenant";

/// The tenant the host bound this request to; `default` when it named none (a host
/// older than tenants). Every import call is scoped to it whatever the guest names,
/// so this only shapes keys and answers.
pub fn tenant(req: &IncomingRequest) -> String {
    req.headers()
        .get(TENANT_HEADER)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|t| troupe_events::tenant::is_valid(t))
        .unwrap_or_else(|| crate::DEFAULT_TENANT.to_owned())
}

/// The trace id of the request's `traceparent`, which the host sets (its own span's)
/// when traces are exported.
pub fn trace_id(req: &IncomingRequest) -> Option<String> {
    let header = req.headers().get("traceparent");
    let value = header.first()?;
    crate::documents::trace_id(std::str::from_utf8(value).ok())
}

/// Sends `body` as JSON with `status`.
pub async fn json(out: ResponseOutparam, status: u16, body: &serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    send(out, status, "application/json", bytes).await;
}

/// Sends an error body.
pub async fn error(out: ResponseOutparam, status: u16, code: &str, message: &str) {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    json(out, status, &body).await;
}

/// Answers `status` with no body and no content type (e.g. 204).
pub async fn empty(out: ResponseOutparam, status: u16) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let _ = out.set_with_body(response, Vec::new()).await;
}

/// Sends `bytes` with `status` and `content_type`.
pub async fn send(out: ResponseOutparam, status: u16, content_type: &str, bytes: Vec<u8>) {
    let headers =
        Fields::from_list(&[("content-type".to_owned(), content_type.as_bytes().to_vec())])
            .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    // The client may be gone; nothing is lost by not finishing the body then.
    let _ = out.set_with_body(response, bytes).await;
}
