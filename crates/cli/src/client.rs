//! The commands that talk to a running Troupe over its public HTTP API:
//! `troupe ingest`, `troupe search`, `troupe status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
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
}

impl Api {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Sends a request; (status, JSON body). Transport failures name the URL.
    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Value)> {
        let url = self.endpoint(path);
        let agent = Self::agent();
        let bearer = self
            .api_key
            .as_deref()
            .map(|k| format!("Bearer {}", k.trim()));
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
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("{method} {url}: reading the response"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, json))
    }
}

/// The message of a `{"error": {"code", "message"}}` body.
fn error_text(status: u16, body: &Value) -> String {
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
        _ => format!("HTTP {status}: {body}"),
    }
}

/// The media type of a file, by extension; the server sniffs what it does not know.
fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("txt" | "text" | "log") => "text/plain; charset=utf-8",
        Some("md" | "markdown") => "text/markdown; charset=utf-8",
        Some("html" | "htm") => "text/html",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Files named by `paths`, folders walked recursively (hidden entries skipped), sorted.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading folder {}", dir.display()))?;
        entries.sort_by_key(std::fs::DirEntry::path);
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files)?;
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(files)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

/// `troupe ingest PATH…`: uploads every file, then (unless `no_wait`) waits until each
/// document settles. Fails if any upload was refused or any document failed.
pub fn ingest(api: &Api, paths: &[PathBuf], no_wait: bool, timeout: Duration) -> Result<()> {
    let files = collect(paths)?;
    if files.is_empty() {
        bail!(
            "no files to ingest under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let uploading = bar(files.len() as u64, "uploading");
    let mut accepted = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        uploading.set_message(path.display().to_string());
        uploading.inc(1);
        // One file's trouble is reported with the others; it stops nothing.
        let body = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{}: reading it: {e}", path.display()));
                continue;
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let query = format!("/v1/documents?name={}", encode(&name));
        match api.call("POST", &query, content_type(path), Some(&body)) {
            Ok((202, reply)) if reply["id"].is_string() => {
                accepted.push((
                    path.clone(),
                    reply["id"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            Ok((status, reply)) => problems.push(format!(
                "{}: {}",
                path.display(),
                error_text(status, &reply)
            )),
            Err(e) => problems.push(format!("{}: {e:#}", path.display())),
        }
    }
    uploading.finish_with_message(format!("{} accepted", accepted.len()));
    if !no_wait && !accepted.is_empty() {
        let waiting = bar(accepted.len() as u64, "indexing");
        let started = Instant::now();
        let mut pending = accepted.clone();
        while !pending.is_empty() {
            if started.elapsed() > timeout {
                for (path, id) in &pending {
                    problems.push(format!(
                        "{}: document {id} did not settle within {timeout:?}",
                        path.display()
                    ));
                }
                break;
            }
            let mut still = Vec::new();
            for (path, id) in pending {
                let doc = match api.call("GET", &format!("/v1/documents/{id}"), "", None) {
                    Ok((_, doc)) => doc,
                    // Transient: ask again on the next round.
                    Err(_) => {
                        still.push((path, id));
                        continue;
                    }
                };
                match doc["status"].as_str() {
                    Some("indexed") => waiting.inc(1),
                    Some("failed" | "deleted") => {
                        waiting.inc(1);
                        problems.push(format!(
                            "{}: document {id} {}: {}",
                            path.display(),
                            doc["status"].as_str().unwrap_or_default(),
                            error_text(0, &serde_json::json!({"error": doc["error"]}))
                                .trim_start_matches("HTTP 0 ")
                        ));
                    }
                    _ => still.push((path, id)),
                }
            }
            pending = still;
            waiting.set_message(format!("{} in progress", pending.len()));
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        waiting.finish_with_message("settled");
    }
    for (path, id) in &accepted {
        println!("{id}\t{}", path.display());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "{} of {} file(s) did not end indexed",
            problems.len(),
            files.len()
        )
    }
}

/// Characters kept as they are in a path segment or query value (RFC 3986 unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
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
