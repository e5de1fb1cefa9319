//! `GET /v1/documents[?limit=&cursor=&status=]`: the tenant's documents, newest first,
//! each as `GET /v1/documents/{id}` shows it, a page at a time.
//!
//! The cursor is opaque to clients: the position (creation time, id) of the last
//! document of the previous page, so a page is stable while documents are added.
//! Each page reads the tenant's records (one key range); fine for thousands of
//! documents per tenant, and the place to add an index when tenants hold millions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR;
use spin_sdk::http::ResponseOutparam;
use troupe_guest::documents::{self, Document};
use troupe_guest::http::{error, json};
use troupe_guest::{host, state};

/// Documents per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 20;
/// The largest `limit`.
const MAX_LIMIT: usize = 100;

/// The statuses `?status=` accepts.
const STATUSES: [&str; 5] = ["uploaded", "processing", "indexed", "failed", "deleted"];

pub async fn list(out: ResponseOutparam, tenant: &str, query: &str) {
    let param = |k: &str| crate::query_param(query, k);
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    out,
                    400,
                    "bad_request",
                    &format!("`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{l}`"),
                )
                .await;
            }
        },
    };
    let status = param("status").filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        let known = STATUSES.join(", ");
        return error(
            out,
            400,
            "bad_request",
            &format!("`status` must be one of {known}, not `{s}`"),
        )
        .await;
    }
    let after = match param("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match decode(&c) {
            Some(pos) => Some(pos),
            None => {
                return error(
                    out,
                    400,
                    "bad_request",
                    "`cursor` is not one this API gave out; start again without it",
                )
                .await;
            }
        },
    };
    let mut docs = match load_all(tenant) {
        Ok(d) => d,
        Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
    };
    docs.retain(|d| status.as_deref().is_none_or(|s| d.status.as_str() == s));
    // Newest first; the id breaks ties between documents of the same instant.
    docs.sort_by(|a, b| position(b).cmp(&position(a)));
    if let Some(after) = &after {
        docs.retain(|d| position(d) < (after.0.as_str(), after.1.as_str()));
    }
    let more = docs.len() > limit;
    docs.truncate(limit);
    let next = more.then(|| docs.last().map(encode)).flatten();
    let body = serde_json::json!({
        "documents": docs.iter().map(Document::view).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    json(out, 200, &body).await
}

fn position(d: &Document) -> (&str, &str) {
    (d.created_at.as_str(), d.id.as_str())
}

fn encode(d: &Document) -> String {
    CURSOR.encode(format!("{}\n{}", d.created_at, d.id))
}

fn decode(cursor: &str) -> Option<(String, String)> {
    let bytes = CURSOR.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once('\n')?;
    documents::valid_id(id).then(|| (at.to_owned(), id.to_owned()))
}

/// Every document record of `tenant`.
fn load_all(tenant: &str) -> troupe_guest::Result<Vec<Document>> {
    let prefix = documents::key(tenant, "");
    let mut docs = Vec::new();
    for key in state::list_keys(&prefix).map_err(host("listing documents"))? {
        let Some(id) = key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some((doc, _)) = documents::load(tenant, id)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}
