//! `api`: the public document API (`docs/api.md`).
//!
//! - `POST /v1/documents[?name=]`: the body is the file, `Content-Type` its type.
//!   Stores it, records the document and publishes `document.uploaded` → 202.
//!   Over the size limit (variable `max_upload_bytes`, default 50 MB) → 413; a type
//!   the pipeline cannot read → 415.
//! - `GET /v1/documents/{id}`: the record → 200, or 404.
//! - `GET /v1/documents/{id}/events`: the audit trail as a JSON array of CloudEvents;
//!   with `Accept: text/event-stream`, a live stream until the document settles.
//! - `DELETE /v1/documents/{id}` → 202; `document.deleted` cascades.
//! - `GET /v1/documents[?limit=&cursor=&status=]`: the tenant's documents, newest
//!   first ([`list`]).
//! - `/v1/webhooks`: the tenant's webhooks ([`webhooks`]).
//!
//! Everything acts for the tenant the host bound the request to (header
//! `troupe-tenant`, set by the host from the request's credential); the host scopes
//! every import to it as well.

mod list;
mod sse;
mod webhooks;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt as _;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;
use troupe_guest::documents::{self, Document};
use troupe_guest::events::{self, BlobRef, Deleted, Uploaded};
use troupe_guest::http::{error, json};
use troupe_guest::stages;
use troupe_guest::{Event, blobs, bucket, config_u64, describe, new_id};
use troupe_text::Kind;

/// Default upload limit: 50 MB.
const MAX_UPLOAD: u64 = 50 * 1024 * 1024;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let path = req.path_with_query().unwrap_or_default();
    let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let tenant = troupe_guest::http::tenant(&req);
    let tenant = tenant.as_str();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["v1", "documents"]) => {
            let name = query_param(query, "name");
            upload(req, out, tenant, name).await
        }
        (Method::Get, ["v1", "documents"]) => list::list(out, tenant, query).await,
        (Method::Get, ["v1", "documents", id]) => match find(tenant, id) {
            Ok(Some(doc)) => json(out, 200, &doc.view()).await,
            Ok(None) => not_found(out, id).await,
            Err(why) => error(out, 503, "unavailable", &why.to_string()).await,
        },
        (Method::Get, ["v1", "documents", id, "events"]) => {
            let id = (*id).to_owned();
            match find(tenant, &id) {
                Ok(Some(_)) => {}
                Ok(None) => return not_found(out, &id).await,
                Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
            }
            if accepts_sse(&req) {
                sse::stream(out, tenant, &id).await
            } else {
                match documents::trail(tenant, &id) {
                    Ok(log) => json(out, 200, &serde_json::Value::Array(log.iter().map(cloud_event).collect())).await,
                    Err(e) => error(out, 503, "unavailable", &describe(&e)).await,
                }
            }
        }
        (Method::Delete, ["v1", "documents", id]) => delete(out, tenant, id).await,
        (_, ["v1", "documents"] | ["v1", "documents", ..]) => {
            error(out, 405, "method_not_allowed", "use GET or POST /v1/documents, GET or DELETE /v1/documents/{id}, GET /v1/documents/{id}/events").await
        }
        (Method::Post, ["v1", "webhooks"]) => match small_body(req).await {
            Ok(body) => webhooks::create(out, tenant, &body).await,
            Err((status, code, message)) => error(out, status, code, &message).await,
        },
        (Method::Get, ["v1", "webhooks"]) => webhooks::list(out, tenant).await,
        (Method::Delete, ["v1", "webhooks", id]) => webhooks::delete(out, tenant, id).await,
        (_, ["v1", "webhooks"] | ["v1", "webhooks", ..]) => {
            error(out, 405, "method_not_allowed", "use GET or POST /v1/webhooks, DELETE /v1/webhooks/{id}").await
        }
        _ => error(out, 404, "not_found", &format!("no route {path}")).await,
    }
}

async fn not_found(out: ResponseOutparam, id: &str) {
    error(out, 404, "not_found", &format!("no document `{id}`")).await
}

fn find(tenant: &str, id: &str) -> troupe_guest::Result<Option<Document>> {
    if !documents::valid_id(id) {
        return Ok(None);
    }
    Ok(documents::load(tenant, id)?.map(|(d, _)| d))
}

fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn accepts_sse(req: &IncomingRequest) -> bool {
    header(req, "accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
}

/// The largest JSON body of a request other than an upload.
const MAX_JSON_BODY: usize = 16 * 1024;

/// A short request body, whole.
async fn small_body(req: IncomingRequest) -> Result<Vec<u8>, (u16, &'static str, String)> {
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let bytes =
            chunk.map_err(|e| (400, "bad_body", format!("reading the request body: {e:?}")))?;
        if body.len() + bytes.len() > MAX_JSON_BODY {
            return Err((
                413,
                "too_large",
                format!("the body is over {MAX_JSON_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}

pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The file name kept: its last path segment, without control characters.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect::<String>()
        .trim()
        .to_owned()
}

async fn upload(req: IncomingRequest, out: ResponseOutparam, tenant: &str, name: Option<String>) {
    let limit = config_u64("max_upload_bytes", MAX_UPLOAD);
    let trace = troupe_guest::http::trace_id(&req);
    let declared = header(&req, "content-type").unwrap_or_default();
    let name = name.map(|n| clean_name(&n)).filter(|n| !n.is_empty());
    let kind = Kind::from_media_type(&declared).or_else(|| {
        let generic = declared.is_empty() || declared.starts_with("application/octet-stream");
        generic
            .then(|| name.as_deref().and_then(Kind::from_name))
            .flatten()
    });
    let Some(kind) = kind else {
        let what = if declared.is_empty() {
            "no Content-Type".to_owned()
        } else {
            format!("Content-Type `{declared}`")
        };
        return error(
            out,
            415,
            "unsupported_type",
            &format!("{what} is not a type Troupe reads; send text/plain, text/markdown, text/html or application/pdf (or application/octet-stream with ?name=file.ext)"),
        )
        .await;
    };
    let too_big = || {
        format!(
            "the upload is larger than the limit of {limit} bytes (variable `max_upload_bytes`)"
        )
    };
    let declared_size = header(&req, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
    if declared_size.is_some_and(|l| l > limit) {
        return error(out, 413, "too_large", &too_big()).await;
    }
    match documents::over_quota(tenant, declared_size.unwrap_or(0)) {
        Ok(None) => {}
        Ok(Some(why)) => return error(out, 413, "quota_exceeded", &why).await,
        Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if (body.len() + bytes.len()) as u64 > limit {
                    return error(out, 413, "too_large", &too_big()).await;
                }
                body.extend_from_slice(&bytes);
            }
            Err(e) => {
                return error(
                    out,
                    400,
                    "bad_body",
                    &format!("reading the request body: {e:?}"),
                )
                .await;
            }
        }
    }
    match documents::over_quota(tenant, body.len() as u64) {
        Ok(None) => {}
        Ok(Some(why)) => return error(out, 413, "quota_exceeded", &why).await,
        Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
    }
    let id = new_id();
    let name = name.unwrap_or_else(|| format!("{id}.{}", extension(kind)));
    let blob = BlobRef {
        bucket: bucket(),
        key: format!("docs/{tenant}/{id}"),
    };
    if let Err(e) = blobs::put(&blob.bucket, &blob.key, &body) {
        return error(
            out,
            503,
            "unavailable",
            &format!("storing the file: {}", describe(&e)),
        )
        .await;
    }
    let up = Uploaded {
        document: id.clone(),
        name,
        content_type: kind.media_type().to_owned(),
        size: body.len() as u64,
        blob,
    };
    let registered = documents::register(tenant, &up, trace).and_then(|_| {
        let event = stages::new(events::id::uploaded(&id), tenant, &id, &up);
        stages::publish(event, None)
    });
    match registered {
        Ok(()) => {
            let body = serde_json::json!({"id": id, "status": "uploaded", "status_url": format!("/v1/documents/{id}")});
            json(out, 202, &body).await
        }
        Err(why) => error(out, 503, "unavailable", &why.to_string()).await,
    }
}

fn extension(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "txt",
        Kind::Markdown => "md",
        Kind::Html => "html",
        Kind::Pdf => "pdf",
    }
}

async fn delete(out: ResponseOutparam, tenant: &str, id: &str) {
    match find(tenant, id) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(out, id).await,
        Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
    }
    let event = stages::new(
        events::id::deleted(id),
        tenant,
        id,
        &Deleted {
            document: id.to_owned(),
        },
    );
    match stages::publish(event, None) {
        Ok(()) => {
            json(
                out,
                202,
                &serde_json::json!({"id": id, "status": "deleted"}),
            )
            .await
        }
        Err(why) => error(out, 503, "unavailable", &why.to_string()).await,
    }
}

/// An event as CloudEvents 1.0 structured JSON (`data` inline when it is JSON).
pub(crate) fn cloud_event(e: &Event) -> serde_json::Value {
    let mut v = serde_json::json!({
        "specversion": "1.0",
        "id": e.id,
        "source": e.source,
        "type": e.type_,
        "time": e.time,
    });
    let obj = v.as_object_mut().expect("a JSON object literal");
    let mut opt = |k: &str, val: &Option<String>| {
        if let Some(s) = val {
            obj.insert(k.into(), s.clone().into());
        }
    };
    opt("subject", &e.subject);
    opt("datacontenttype", &e.datacontenttype);
    opt("tenant", &e.tenant);
    opt("session", &e.session);
    opt("traceparent", &e.traceparent);
    match serde_json::from_slice::<serde_json::Value>(&e.data) {
        Ok(data) => obj.insert("data".into(), data),
        Err(_) => obj.insert("data_base64".into(), BASE64.encode(&e.data).into()),
    };
    v
}
