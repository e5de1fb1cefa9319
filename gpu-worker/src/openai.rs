//! `POST /v1/embeddings`, OpenAI-compatible: the request and response shapes and the
//! handler, independent of the HTTP server that carries them (the worker's own, or
//! `troupe up`'s main listener).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::{Embedder, Error};

/// `input`: one string or a list of them. Token-id inputs are refused with a clear
/// message.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Recognised only to refuse it clearly.
    Tokens(#[allow(dead_code)] Vec<u32>),
    /// Recognised only to refuse it clearly.
    TokenLists(#[allow(dead_code)] Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
struct Request {
    input: Input,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

fn error(status: u16, code: &str, message: impl Into<String>) -> (u16, serde_json::Value) {
    let message = message.into();
    let kind = if status == 429 {
        "rate_limit_error"
    } else if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        json!({"error": {"code": code, "message": message, "type": kind, "param": null}}),
    )
}

/// Handles one request body; returns the status and the JSON body.
pub async fn handle(embedder: &Embedder, body: &[u8]) -> (u16, serde_json::Value) {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                400,
                "invalid_json",
                format!(
                    "the body is not an embeddings request ({e}); send {{\"input\": \"text\" or [\"texts\"], \"model\": \"...\"}}"
                ),
            );
        }
    };
    let texts = match req.input {
        Input::One(s) => vec![s],
        Input::Many(v) if v.is_empty() => {
            return error(400, "invalid_input", "`input` is an empty list");
        }
        Input::Many(v) => v,
        Input::Tokens(_) | Input::TokenLists(_) => {
            return error(
                400,
                "unsupported_input",
                "token-id inputs are not supported: send the text as strings",
            );
        }
    };
    if let Some(d) = req.dimensions
        && d != embedder.dims()
    {
        return error(
            400,
            "invalid_dimensions",
            format!("this model returns {} dimensions, not {d}", embedder.dims()),
        );
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return error(
                400,
                "invalid_encoding_format",
                format!("encoding_format `{other}`: use `float` or `base64`"),
            );
        }
    };
    let _ = req.model;
    let out = match embedder.embed(&texts).await {
        Ok(out) => out,
        Err(e @ Error::Overloaded { .. }) => return error(429, "overloaded", e.to_string()),
        Err(e @ Error::Invalid(_)) => return error(400, "invalid_input", e.to_string()),
        Err(e) => return error(500, "embedding_failed", e.to_string()),
    };
    let data: Vec<serde_json::Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    (
        200,
        json!({
            "object": "list",
            "data": data,
            "model": embedder.model(),
            "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
        }),
    )
}
