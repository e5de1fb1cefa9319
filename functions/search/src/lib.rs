//! `search`: `POST /v1/search {"query", "k"}`. The query is embedded by the worker
//! (the `embeddings` import), the nearest chunks of the tenant's vectors are looked
//! up, and hits of documents that are not `indexed` (failed, deleted, still in
//! progress) are left out. → `{"hits": [{"document_id", "chunk_id", "score", "text",
//! "name"}]}`, best first.

use std::collections::HashMap;

use futures::StreamExt as _;
use serde::Deserialize;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;
use troupe_guest::documents::{self, Status};
use troupe_guest::http::{error, json};
use troupe_guest::{HostError, describe, embeddings, vectors};

/// The largest request body.
const MAX_BODY: usize = 64 * 1024;

/// The largest `k`.
const MAX_K: u32 = 100;

#[derive(Deserialize)]
struct Query {
    query: String,
    #[serde(default = "default_k")]
    k: u32,
}

fn default_k() -> u32 {
    10
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    if req.method() != Method::Post {
        return error(
            out,
            405,
            "method_not_allowed",
            "use POST /v1/search with {\"query\": \"…\", \"k\": 10}",
        )
        .await;
    }
    let mut body = Vec::new();
    let tenant = troupe_guest::http::tenant(&req);
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if body.len() + bytes.len() <= MAX_BODY => body.extend_from_slice(&bytes),
            Ok(_) => {
                let msg =
                    format!("the request body is over {MAX_BODY} bytes; send a shorter query");
                return error(out, 413, "too_large", &msg).await;
            }
            Err(e) => {
                let msg = format!("reading the request body: {e:?}");
                return error(out, 400, "bad_body", &msg).await;
            }
        }
    }
    let q: Query = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => {
            return error(
                out,
                400,
                "bad_request",
                &format!("the body must be JSON {{\"query\": string, \"k\": number}}: {e}"),
            )
            .await;
        }
    };
    if q.query.trim().is_empty() {
        return error(out, 400, "bad_request", "`query` is empty").await;
    }
    if q.k == 0 || q.k > MAX_K {
        return error(
            out,
            400,
            "bad_request",
            &format!("`k` must be 1..={MAX_K}, not {}", q.k),
        )
        .await;
    }
    match search(&tenant, &q) {
        Ok(hits) => json(out, 200, &serde_json::json!({ "hits": hits })).await,
        Err((status, code, message)) => error(out, status, code, &message).await,
    }
}

type Failure = (u16, &'static str, String);

fn unavailable(what: &str, e: &HostError) -> Failure {
    match e {
        HostError::Invalid(why) => (400, "bad_request", format!("{what}: {why}")),
        HostError::Denied(why) => (500, "misconfigured", format!("{what}: {why}")),
        other => (503, "unavailable", format!("{what}: {}", describe(other))),
    }
}

fn search(tenant: &str, q: &Query) -> Result<Vec<serde_json::Value>, Failure> {
    let model = embeddings::info().map_err(|e| unavailable("the embedding model", &e))?;
    let query = embeddings::embed(std::slice::from_ref(&q.query))
        .map_err(|e| unavailable("embedding the query", &e))?
        .pop()
        .ok_or((
            503,
            "unavailable",
            "the model returned no vector".to_owned(),
        ))?;
    // Ask for more than k: hits of documents that are not indexed are dropped.
    let mut want = q.k * 2 + 10;
    loop {
        let found = vectors::search(&model.name, &query, want)
            .map_err(|e| unavailable("searching vectors", &e))?;
        let exhausted = (found.len() as u32) < want;
        let mut names: HashMap<String, Option<String>> = HashMap::new();
        let mut hits = Vec::new();
        for hit in found {
            let name = match names.get(&hit.document) {
                Some(n) => n.clone(),
                None => {
                    let doc = documents::load(tenant, &hit.document)
                        .map_err(|why| (503, "unavailable", why.to_string()))?;
                    let name = doc
                        .filter(|(d, _)| d.status == Status::Indexed)
                        .map(|(d, _)| d.name);
                    names.insert(hit.document.clone(), name.clone());
                    name
                }
            };
            if let Some(name) = name {
                hits.push(serde_json::json!({
                    "document_id": hit.document,
                    "chunk_id": hit.chunk,
                    "score": hit.score,
                    "text": hit.text,
                    "name": name,
                }));
                if hits.len() == q.k as usize {
                    return Ok(hits);
                }
            }
        }
        if exhausted || want >= 10_000 {
            return Ok(hits);
        }
        want *= 4;
    }
}
