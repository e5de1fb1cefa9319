//! What the multi-host and kill tests share: a generated corpus (txt, md, html, pdf;
//! some documents long enough for several embedding jobs), a copy of the repository's
//! pipeline with short leases, a webhook receiver, and the end-state checks — every
//! document `indexed` once, with the expected chunks and as many vectors, no event twice
//! in its trail, one webhook per document, nothing in flight or dead-lettered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stack::Stack;
use crate::{call, components, repo_root};

/// Component timeout in the short-lease pipeline copy.
pub const SHORT_TIMEOUT_MS: u64 = 15_000;
/// Visibility timeout (lease) of every subscription in the copy.
pub const SHORT_LEASE_MS: u64 = 20_000;

/// Writes `dir/spin.toml`: the repository's pipeline with every subscription's lease
/// at [`SHORT_LEASE_MS`] and the event handlers' timeouts at [`SHORT_TIMEOUT_MS`] (a
/// lease must outlast its component's timeout), so work a killed process held comes
/// back within seconds; components are read from the built `functions/dist`.
pub fn short_lease_pipeline(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).expect("reading spin.toml");
    let dist = components().display().to_string();
    let handler_tool = |section: &str| {
        section
            .strip_prefix("[component.")
            .and_then(|s| s.strip_suffix(".tool.troupe]"))
            .is_some_and(|id| is_handler(&text, id))
    };
    // Each section's own setting is appended where the section ends.
    let close = |section: &str, out: &mut String| {
        if section == "[[trigger.queue]]" || section == "[[trigger.blob]]" {
            out.push_str(&format!("visibility_timeout_ms = {SHORT_LEASE_MS}\n"));
        } else if handler_tool(section) {
            out.push_str(&format!("timeout_ms = {SHORT_TIMEOUT_MS}\n"));
        }
    };
    let mut out = String::new();
    let mut section = String::new();
    let mut tooled = HashSet::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            close(&section, &mut out);
            section = trimmed.to_owned();
            if let Some(id) = section
                .strip_prefix("[component.")
                .and_then(|s| s.strip_suffix(".tool.troupe]"))
            {
                tooled.insert(id.to_owned());
            }
        }
        let replaced = trimmed.starts_with("visibility_timeout_ms")
            || (trimmed.starts_with("timeout_ms") && handler_tool(&section));
        if !replaced {
            out.push_str(&line.replace("\"functions/dist", &format!("\"{dist}")));
            out.push('\n');
        }
    }
    close(&section, &mut out);
    // Handlers without a tool table get one.
    let mut ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[component."))
        .filter_map(|l| l.strip_suffix(']'))
        .filter(|id| !id.contains('.'))
        .collect();
    ids.sort_unstable();
    for id in ids {
        if is_handler(&text, id) && !tooled.contains(id) {
            out.push_str(&format!(
                "\n[component.{id}.tool.troupe]\ntimeout_ms = {SHORT_TIMEOUT_MS}\n"
            ));
        }
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, out).expect("writing the pipeline copy");
    path
}

/// Whether component `id` is the target of a queue, blob or cron trigger in `manifest`.
fn is_handler(manifest: &str, id: &str) -> bool {
    let mut section = "";
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
        }
        if section != "[[trigger.http]]" && t == format!("component = \"{id}\"") {
            return true;
        }
    }
    false
}

/// A document to upload.
#[derive(Debug, Clone)]
pub struct Doc {
    /// File name (`?name=`).
    pub name: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: Vec<u8>,
}

const WORDS: &[&str] = &[
    "river", "mountain", "engine", "harvest", "orbit", "signal", "lantern", "copper", "meadow",
    "glacier", "canyon", "violin", "harbor", "thunder", "pepper", "marble", "falcon", "compass",
    "garden", "silver", "bridge", "desert", "rocket", "pencil", "winter", "island", "forest",
    "candle", "mirror", "planet", "ribbon", "anchor", "museum", "tunnel", "crystal", "saddle",
    "village", "lemon", "shadow", "comet", "feather", "ladder", "quartz", "voyage", "kettle",
    "beacon", "velvet", "prairie",
];

/// A small deterministic generator (xorshift64*), so a corpus is the same every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }
}

/// Sentences of 8–16 words; `tag` (the document's number) starts each one, so every
/// document's chunks are its own.
fn sentences(rng: &mut Rng, tag: usize, words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = 0;
    while n < words {
        let len = 8 + rng.below(9);
        let mut s = format!("Doc{tag}");
        for _ in 0..len {
            s.push(' ');
            s.push_str(WORDS[rng.below(WORDS.len())]);
        }
        s.push('.');
        n += len + 1;
        out.push(s);
    }
    out
}

/// `n` documents cycling through txt, md, html and pdf; every fifth is `long_words`
/// long (several embedding jobs when that exceeds `batch_chunks` chunks of ~220
/// words), the others 150–600 words.
pub fn corpus(n: usize, long_words: usize, seed: u64) -> Vec<Doc> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| {
            let words = if i % 5 == 4 {
                long_words
            } else {
                150 + rng.below(450)
            };
            let text = sentences(&mut rng, i, words);
            match i % 4 {
                0 => Doc {
                    name: format!("doc{i}.txt"),
                    content_type: "text/plain",
                    body: paragraphs(&text).join("\n\n").into_bytes(),
                },
                1 => Doc {
                    name: format!("doc{i}.md"),
                    content_type: "text/markdown",
                    body: paragraphs(&text)
                        .iter()
                        .enumerate()
                        .map(|(j, p)| format!("## Part {j}\n\n{p}"))
                        .collect::<Vec<_>>()
                        .join("\n\n")
                        .into_bytes(),
                },
                2 => Doc {
                    name: format!("doc{i}.html"),
                    content_type: "text/html",
                    body: format!(
                        "<!doctype html><html><head><title>Doc {i}</title></head><body>{}</body></html>",
                        paragraphs(&text)
                            .iter()
                            .map(|p| format!("<p>{p}</p>"))
                            .collect::<String>()
                    )
                    .into_bytes(),
                },
                _ => Doc {
                    name: format!("doc{i}.pdf"),
                    content_type: "application/pdf",
                    body: pdf(&text),
                },
            }
        })
        .collect()
}

fn paragraphs(sentences: &[String]) -> Vec<String> {
    sentences.chunks(5).map(|p| p.join(" ")).collect()
}

/// A PDF with one page per 40 sentences, Helvetica text, uncompressed content streams.
pub fn pdf(sentences: &[String]) -> Vec<u8> {
    let pages: Vec<&[String]> = sentences.chunks(40).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            (0..pages.len())
                .map(|p| format!("{} 0 R", 4 + 2 * p))
                .collect::<Vec<_>>()
                .join(" "),
            pages.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    for (p, lines) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * p
        ));
        let mut stream = String::from("BT /F1 10 Tf 40 760 Td 12 TL\n");
        for l in *lines {
            stream.push_str(&format!("({l}) Tj T*\n"));
        }
        stream.push_str("ET");
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

pub use crate::Request;

/// A webhook receiver on loopback answering 200, recording every request.
#[derive(Default, Clone)]
pub struct Hooks(Arc<Mutex<Vec<Request>>>);

impl Hooks {
    /// Starts it; (receiver, URL).
    pub fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let hooks = Self::default();
        let seen = hooks.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let (headers, body) = crate::read_request(&mut reader);
                    seen.0.lock().expect("lock").push((headers, body));
                    let _ = reader.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        (hooks, url)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Request> {
        self.0.lock().expect("lock").clone()
    }
}

/// Uploads `doc` to `base`; its id.
pub fn upload(base: &str, doc: &Doc) -> String {
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name={}", doc.name),
        doc.content_type,
        &doc.body,
    );
    assert_eq!(status, 202, "uploading {}: {reply}", doc.name);
    reply["id"].as_str().expect("id").to_owned()
}

/// The document's record, or `None` when the host does not answer (killed).
pub fn try_document(base: &str, id: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("{base}/v1/documents/{id}"))
        .call()
        .ok()?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// Progress of a set of documents: batches done plus documents settled, summed.
pub fn progress(base: &str, ids: &[String]) -> Option<(u64, usize)> {
    let mut done = 0;
    let mut settled = 0;
    for id in ids {
        let d = try_document(base, id)?;
        done += d["progress"]["done"].as_u64().unwrap_or(0);
        if matches!(d["status"].as_str(), Some("indexed" | "failed")) {
            settled += 1;
            done += 1;
        }
    }
    Some((done, settled))
}

/// Waits until `base` answers and the documents' progress moves past `from`; the time
/// it took, or `None` after `within`.
pub fn time_to_progress(
    base: &str,
    ids: &[String],
    from: u64,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some((done, settled)) = progress(base, ids)
            && (done > from || settled == ids.len())
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Waits until every document is settled; panics after `within` naming the stragglers.
pub fn settle_all(base: &str, ids: &[String], within: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let docs: Vec<Value> = ids
            .iter()
            .map(|id| try_document(base, id).unwrap_or(Value::Null))
            .collect();
        let open: Vec<&Value> = docs
            .iter()
            .filter(|d| !matches!(d["status"].as_str(), Some("indexed" | "failed")))
            .collect();
        if open.is_empty() {
            return docs;
        }
        assert!(
            start.elapsed() < within,
            "{} of {} documents did not settle within {within:?}, e.g. {}",
            open.len(),
            ids.len(),
            open[0]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Chunk counts of `docs` on a clean run: `troupe up` over a fresh embedded data
/// directory, no kills.
pub fn reference_chunks(docs: &[Doc], env: &[(&str, String)]) -> Vec<u64> {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::local(dir.path());
    let manifest = short_lease_pipeline(dir.path());
    let up = crate::Child::pipeline_with(&stack, &manifest, &[], env);
    let base = format!("http://{}", up.addr);
    let ids: Vec<String> = docs.iter().map(|d| upload(&base, d)).collect();
    let records = settle_all(&base, &ids, Duration::from_secs(600));
    records
        .iter()
        .zip(docs)
        .map(|(r, d)| {
            assert_eq!(r["status"], "indexed", "clean run of {}: {r}", d.name);
            r["chunks"].as_u64().expect("chunks")
        })
        .collect()
}

/// The end state after kills: every document `indexed` with its reference chunk count
/// (when given) and as many vectors as chunks; its trail without an event twice and
/// with one `indexed`; one `indexed` webhook event per document, delivered once; no
/// hit twice in a search; nothing left ready, in flight or dead-lettered.
pub fn check_end_state(
    base: &str,
    stack: &Stack,
    docs: &[Doc],
    ids: &[String],
    reference: Option<&[u64]>,
    hooks: &Hooks,
) {
    let records = settle_all(base, ids, Duration::from_secs(120));
    for (i, (r, d)) in records.iter().zip(docs).enumerate() {
        assert_eq!(r["status"], "indexed", "{}: {r}", d.name);
        let chunks = r["chunks"].as_u64().expect("chunks");
        if let Some(want) = reference {
            assert_eq!(
                chunks, want[i],
                "{} chunk count against a clean run: {r}",
                d.name
            );
        }
        let id = r["id"].as_str().expect("id");
        assert_eq!(
            stack.vector_count(id) as u64,
            chunks,
            "{} ({id}): vectors ≠ chunks",
            d.name
        );
        let (status, log) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
        assert_eq!(status, 200, "{log}");
        let events = log.as_array().expect("trail");
        let unique: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(
            unique.len(),
            events.len(),
            "{} trail repeats an event",
            d.name
        );
        let indexed = events
            .iter()
            .filter(|e| e["type"] == "troupe.document.indexed.v1")
            .count();
        assert_eq!(
            indexed, 1,
            "{}: {indexed} indexed events in the trail",
            d.name
        );
    }
    // Webhooks: one event per document; the same event not delivered twice.
    let mut by_doc: HashMap<String, HashSet<String>> = HashMap::new();
    let mut deliveries: BTreeMap<String, usize> = BTreeMap::new();
    // A webhook whose sender died mid-call waits for its claim (35 s) and lease.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        by_doc.clear();
        deliveries.clear();
        for (headers, body) in hooks.received() {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            let event = headers
                .iter()
                .find(|h| h.0 == "troupe-event-id")
                .map(|h| h.1.clone())
                .unwrap_or_default();
            *deliveries.entry(event.clone()).or_default() += 1;
            if let Some(doc) = body["document_id"].as_str() {
                by_doc.entry(doc.to_owned()).or_default().insert(event);
            }
        }
        if ids.iter().all(|id| by_doc.contains_key(id)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for id in ids {
        let events = by_doc.get(id).map_or(0, HashSet::len);
        if events != 1 {
            let (_, trail) = call("GET", &format!("{base}/v1/documents/{id}/events"), "", b"");
            let types: Vec<&str> = trail
                .as_array()
                .map(|t| t.iter().filter_map(|e| e["type"].as_str()).collect())
                .unwrap_or_default();
            let busy: Vec<(String, troupe_core::Depth)> = stack
                .queue_depths()
                .into_iter()
                .filter(|(_, d)| d.ready + d.in_flight + d.dead > 0)
                .collect();
            let dead: Vec<_> = busy
                .iter()
                .filter(|(_, d)| d.dead > 0)
                .map(|(q, _)| (q, stack.dead_letters(q)))
                .collect();
            panic!(
                "document {id}: {events} distinct webhook events (1 expected); its trail: {types:?}; queues not empty: {busy:?}; dead letters: {dead:?}"
            );
        }
    }
    let repeated: Vec<(&String, &usize)> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "webhooks delivered more than once: {repeated:?}"
    );
    // Search: no chunk twice among the hits.
    let body = serde_json::json!({"query": "glacier harbor lantern", "k": 50}).to_string();
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/search"),
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    let hits = reply["hits"].as_array().cloned().unwrap_or_default();
    assert!(!hits.is_empty(), "search finds the corpus");
    let mut seen = HashSet::new();
    let repeated: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| {
            (
                h["document_id"].as_str().unwrap_or_default(),
                h["chunk_id"].as_str().unwrap_or_default(),
            )
        })
        .filter(|pair| !seen.insert(*pair))
        .collect();
    assert!(repeated.is_empty(), "search repeats chunks: {repeated:?}");
    // Queues: nothing ready, in flight or dead.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = stack.queue_depths();
        let busy: Vec<&(String, troupe_core::Depth)> = left
            .iter()
            .filter(|(_, d)| d.ready + d.in_flight + d.dead > 0)
            .collect();
        if busy.is_empty() {
            break;
        }
        if busy.iter().any(|(_, d)| d.dead > 0) || Instant::now() > deadline {
            let dead: Vec<_> = busy
                .iter()
                .filter(|(_, d)| d.dead > 0)
                .map(|(q, _)| (q, stack.dead_letters(q)))
                .collect();
            panic!("messages left in queues: {busy:?}; dead letters: {dead:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
