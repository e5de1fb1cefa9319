//! `console`: the web console (`/` and `/console/...`), plain HTML, CSS and JavaScript
//! modules embedded in the component. The page talks to the public API (`/v1/...`)
//! from the browser; this component only serves files.
//!
//! Every answer carries a strict `content-security-policy` (scripts, styles and
//! connections to this origin only, nothing inline), `x-content-type-options:
//! nosniff` and `cache-control: no-cache` with an `etag`, so a reload costs a 304 per
//! file and a new build is picked up at once.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

/// A file the console is made of.
struct Asset {
    /// The path it is served at.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../assets/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/console/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/console/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/console/app.js", "app.js", JS),
    asset!("/console/api.js", "api.js", JS),
    asset!("/console/dom.js", "dom.js", JS),
    asset!("/console/documents.js", "documents.js", JS),
    asset!("/console/detail.js", "detail.js", JS),
    asset!("/console/upload.js", "upload.js", JS),
    asset!("/console/search.js", "search.js", JS),
];

/// Nothing inline, nothing from elsewhere: the page and its scripts reach this origin
/// only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => return Ok(plain(405, "use GET\n").header("allow", "GET, HEAD").build()),
    };
    let Some(asset) = ASSETS.iter().find(|a| a.path == req.path()) else {
        return Ok(plain(404, "no such file in the console\n").build());
    };
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let fresh = req
        .header("if-none-match")
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let status = if fresh { 304 } else { 200 };
    let mut resp = Response::builder();
    resp.status(status)
        .header("content-type", asset.content_type)
        .header("cache-control", "no-cache")
        .header("etag", etag)
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    let body = if fresh || head { &[][..] } else { asset.body };
    Ok(resp.body(body.to_vec()).build())
}

fn plain(status: u16, text: &'static str) -> spin_sdk::http::ResponseBuilder {
    let mut b = Response::builder();
    b.status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(text);
    b
}

/// FNV-1a over `bytes`: the files' version for `etag` (they change only with a build).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
