//! The commands that talk to a running Troupe over its public HTTP API:
//! `troupe search`, `troupe status`, and the client [`Api`] they and `troupe ingest`
//! share.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Where the API is.
#[derive(Debug, Clone, clap::Args)]
pub struct Api {
    /// Base URL of a running `troupe up` (or `troupe serve`).
    #[arg(long, env = "TROUPE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The API key (`troupe keys create`) or token sent as `Authorization: Bearer …`,
    /// when the server needs one.
    #[arg(long, env = "TROUPE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// One connection pool for every request (clones share it).
    #[arg(skip)]
    agent: OnceLock<ureq::Agent>,
}

impl Api {
    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(600)))
                .max_idle_connections_per_host(64)
                .build()
                .into()
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    fn bearer(&self) -> Option<String> {
        self.api_key
            .as_deref()
            .map(|k| format!("Bearer {}", k.trim()))
    }

    /// Sends a request; (status, JSON body). Transport failures name the URL.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Value)> {
        self.call_with_headers(method, path, content_type, body)
            .map(|(status, json, _)| (status, json))
    }

    /// [`Self::call`], with the response's `Retry-After` (in seconds) when it has one.
    pub(crate) fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Value, Option<Duration>)> {
        let url = self.endpoint(path);
        let agent = self.agent();
        let bearer = self.bearer();
        let sent = match (method, body) {
            ("GET" | "DELETE", _) => {
                let mut req = if method == "GET" {
                    agent.get(&url)
                } else {
                    agent.delete(&url)
                };
                if let Some(b) = &bearer {
                    req = req.header("authorization", b);
                }
                req.call()
            }
            (_, body) => {
                let mut req = agent.post(&url);
                if let Some(b) = &bearer {
                    req = req.header("authorization", b);
                }
                match body {
                    Some(b) => req.header("content-type", content_type).send(b),
                    None => req.send_empty(),
                }
            }
        };
        let mut resp = sent.with_context(|| {
            format!("{method} {url}: is `troupe up` running there? (--url / TROUPE_URL)")
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("{method} {url}: reading the response"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, json, retry_after))
    }

    /// Opens a `text/event-stream` at `path` (resuming after `last_event_id`); its
    /// body, read as the server sends it. Its own connection, without the overall
    /// timeout; a stream silent for a minute (the server comments every 15 s) fails.
    pub(crate) fn stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<impl std::io::Read + use<>> {
        let url = self.endpoint(path);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut req = agent.get(&url).header("accept", "text/event-stream");
        if let Some(b) = self.bearer() {
            req = req.header("authorization", b);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let mut resp = req
            .call()
            .with_context(|| format!("GET {url}: is `troupe up` running there?"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            bail!("GET {url}: {}", error_text(status, &json));
        }
        Ok(resp.into_body().into_reader())
    }
}

/// The message of a `{"error": {"code", "message"}}` body.
pub(crate) fn error_text(status: u16, body: &Value) -> String {
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
        _ => format!("HTTP {status}: {body}"),
    }
}

/// Characters kept as they are in a path segment or query value (RFC 3986 unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// `troupe search QUERY`: prints the hits, best first (or the JSON with `json`).
pub fn search(api: &Api, query: &str, k: u32, json: bool) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({"query": query, "k": k}))?;
    let (status, reply) = api.call("POST", "/v1/search", "application/json", Some(&body))?;
    if status != 200 {
        bail!("search: {}", error_text(status, &reply));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let hits = reply["hits"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        println!("no hits");
    }
    for (i, h) in hits.iter().enumerate() {
        let text: String = h["text"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let snippet: String = text.chars().take(160).collect();
        println!(
            "{:>2}. {:.3}  {} ({} #{})\n    {snippet}{}",
            i + 1,
            h["score"].as_f64().unwrap_or_default(),
            h["name"].as_str().unwrap_or_default(),
            h["document_id"].as_str().unwrap_or_default(),
            h["chunk_id"].as_str().unwrap_or_default(),
            if text.chars().count() > 160 {
                "…"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// `troupe status ID`: prints the document's record as JSON.
pub fn status(api: &Api, id: &str) -> Result<()> {
    let (status, reply) = api.call("GET", &format!("/v1/documents/{}", encode(id)), "", None)?;
    if status != 200 {
        bail!("status of {id}: {}", error_text(status, &reply));
    }
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}
