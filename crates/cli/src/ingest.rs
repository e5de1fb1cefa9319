//! `troupe ingest PATH…`: uploads files, several at a time, and waits until each
//! document settles.
//!
//! Settling is followed on the tenant's live event stream (`GET /v1/events`), opened
//! before the first upload, so nothing polls the server while it works and nothing
//! that happens between an upload and its answer is missed. Where the server streams
//! nothing (AWS Lambda answers 501) or the stream cannot be kept, each unsettled
//! document is asked for every [`POLL`] instead.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use troupe_events::Payload as _;
use troupe_events::document::{Deleted, Failed, Indexed};

use crate::client::{Api, encode, error_text};

/// How `troupe ingest` goes about it.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Return once uploaded, without waiting for indexing.
    pub no_wait: bool,
    /// Give up waiting after this long (from the first upload).
    pub timeout: Duration,
    /// Uploads in flight at once.
    pub concurrency: usize,
}

/// Between two rounds of asking for each unsettled document, without a stream.
const POLL: Duration = Duration::from_millis(250);
/// Times one upload is tried when the server says it is busy (429, 503).
const BUSY_TRIES: u32 = 8;
/// The longest a busy answer's `Retry-After` is waited for.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest line of the event stream read; a longer one ends the stream.
const MAX_LINE: u64 = 4 << 20;
/// Reconnects of a dropped event stream before falling back to asking.
const RECONNECTS: u32 = 5;
/// The tenant's live event stream.
const EVENTS: &str = "/v1/events";

/// What the uploaders and the stream tell the waiting loop.
enum Note {
    /// A file was accepted as this document.
    Accepted(usize, String),
    /// A file was not accepted.
    Refused(usize, String),
    /// An uploader has no files left.
    Done,
    /// The stream is ready: every event from now on will be seen.
    Ready,
    /// A document reached a final status: its id, the event type, and for a failure
    /// the event's reason.
    Settled(String, String, Option<String>),
    /// The stream cannot be had or kept: why.
    Lost(String),
}

/// How a document ended.
enum End {
    Indexed,
    Failed,
    Deleted,
}

impl End {
    fn of(event_type: &str) -> Option<Self> {
        match event_type {
            t if t == Indexed::TYPE => Some(Self::Indexed),
            t if t == Failed::TYPE => Some(Self::Failed),
            t if t == Deleted::TYPE => Some(Self::Deleted),
            _ => None,
        }
    }

    fn of_status(status: &str) -> Option<Self> {
        match status {
            "indexed" => Some(Self::Indexed),
            "failed" => Some(Self::Failed),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// Uploads every file named by `paths` (folders walked), `how.concurrency` at a time,
/// then (unless `no_wait`) waits until each document settles. Prints `id<TAB>path`
/// per accepted file and, on stderr, how long it took. Fails if any upload was
/// refused or any document did not end indexed.
pub fn ingest(api: &Api, paths: &[PathBuf], how: &Ingest) -> Result<()> {
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
    let bars = MultiProgress::new();
    let uploading = bars.add(bar(files.len() as u64, "uploading"));
    let indexing = (!how.no_wait).then(|| bars.add(bar(files.len() as u64, "indexing")));
    let (tx, rx) = mpsc::channel();
    let mut streaming = false;
    if !how.no_wait {
        // Opened before the first upload; its `ready` frame marks where it starts.
        let (api, tx) = (api.clone(), tx.clone());
        std::thread::spawn(move || follow(&api, &tx));
        let why = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Note::Ready) => None,
            Ok(Note::Lost(why)) => Some(why),
            _ => Some("the event stream did not start within 10 s".to_owned()),
        };
        match why {
            None => streaming = true,
            Some(why) => {
                bars.suspend(|| eprintln!("{why}; asking for each document instead"));
            }
        }
    }
    let started = Instant::now();
    let deadline = started + how.timeout;
    let next = AtomicUsize::new(0);
    let workers = how.concurrency.clamp(1, 64).min(files.len());
    let mut tally = Tally::new(&files);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (tx, next, files, uploading) = (tx.clone(), &next, &files, uploading.clone());
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    uploading.set_message(path.display().to_string());
                    let note = match upload(api, path, deadline) {
                        Ok(id) => Note::Accepted(i, id),
                        Err(e) => Note::Refused(i, format!("{e:#}")),
                    };
                    uploading.inc(1);
                    if tx.send(note).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Note::Done);
            });
        }
        let mut uploaders = workers;
        let mut asked_at: Option<Instant> = None;
        while uploaders > 0 || (!how.no_wait && !tally.pending.is_empty()) {
            if uploaders == 0 && Instant::now() >= deadline {
                break;
            }
            let wait = if streaming || uploaders > 0 {
                Duration::from_millis(200)
            } else {
                asked_at.map_or(Duration::ZERO, |at| POLL.saturating_sub(at.elapsed()))
            };
            match rx.recv_timeout(wait) {
                Ok(Note::Accepted(i, id)) => tally.accepted(api, i, id, !how.no_wait),
                Ok(Note::Refused(i, why)) => tally.problem(i, why),
                Ok(Note::Done) => uploaders -= 1,
                Ok(Note::Ready) => {}
                Ok(Note::Settled(id, kind, why)) => {
                    if let Some(end) = End::of(&kind) {
                        tally.ended(api, id, end, why);
                    }
                }
                Ok(Note::Lost(why)) => {
                    if streaming {
                        bars.suspend(|| eprintln!("{why}; asking for each document instead"));
                    }
                    streaming = false;
                }
                Err(_) => {
                    if !streaming && uploaders == 0 && !how.no_wait {
                        ask(api, &mut tally);
                        asked_at = Some(Instant::now());
                    }
                }
            }
            if let Some(b) = &indexing {
                b.set_position(tally.settled as u64);
                b.set_message(format!("{} in progress", tally.pending.len()));
            }
        }
    });
    uploading.finish_with_message(format!("{} accepted", tally.ids.iter().flatten().count()));
    if let Some(b) = &indexing {
        b.finish_with_message("settled");
    }
    report(tally, how, started)
}

/// Prints each accepted file's id (stdout), how long it took and every problem
/// (stderr); fails if there was any.
fn report(mut tally: Tally<'_>, how: &Ingest, started: Instant) -> Result<()> {
    let files = tally.files;
    let unsettled: Vec<(String, usize)> = tally.pending.drain().collect();
    for (id, i) in unsettled {
        tally.problem(
            i,
            format!("document {id} did not settle within {:?}", how.timeout),
        );
    }
    for (id, path) in tally.ids.iter().zip(files) {
        if let Some(id) = id {
            println!("{id}\t{}", path.display());
        }
    }
    let accepted = tally.ids.iter().flatten().count();
    if how.no_wait {
        eprintln!(
            "{accepted} of {} file(s) accepted in {:.2} s",
            files.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "{} of {} document(s) indexed in {:.2} s (first upload to last settled)",
            tally.indexed,
            files.len(),
            tally
                .last
                .unwrap_or(started)
                .duration_since(started)
                .as_secs_f64()
        );
    }
    if tally.problems.is_empty() {
        return Ok(());
    }
    tally.problems.sort_by_key(|(i, _)| *i);
    for (_, p) in &tally.problems {
        eprintln!("{p}");
    }
    bail!(
        "{} of {} file(s) did not end indexed",
        tally.problems.len(),
        files.len()
    )
}

/// Where each file stands.
struct Tally<'a> {
    files: &'a [PathBuf],
    /// The document id of each accepted file.
    ids: Vec<Option<String>>,
    /// Accepted, not yet settled: id → file.
    pending: HashMap<String, usize>,
    /// Settled before its upload's answer was read (or not ours): id → how, why.
    early: HashMap<String, (End, Option<String>)>,
    problems: Vec<(usize, String)>,
    settled: usize,
    indexed: usize,
    /// When the last document settled.
    last: Option<Instant>,
}

impl<'a> Tally<'a> {
    fn new(files: &'a [PathBuf]) -> Self {
        Self {
            files,
            ids: vec![None; files.len()],
            pending: HashMap::new(),
            early: HashMap::new(),
            problems: Vec::new(),
            settled: 0,
            indexed: 0,
            last: None,
        }
    }

    fn problem(&mut self, i: usize, why: String) {
        self.problems
            .push((i, format!("{}: {why}", self.files[i].display())));
    }

    fn accepted(&mut self, api: &Api, i: usize, id: String, waiting: bool) {
        self.ids[i] = Some(id.clone());
        if !waiting {
            return;
        }
        self.pending.insert(id.clone(), i);
        if let Some((end, why)) = self.early.remove(&id) {
            self.ended(api, id, end, why);
        }
    }

    /// `id` ended as `end`, for the reason `why` when known.
    fn ended(&mut self, api: &Api, id: String, end: End, why: Option<String>) {
        let Some(i) = self.pending.remove(&id) else {
            // Not ours, or ours before its upload's answer: kept for `accepted`.
            if self.early.len() < MAX_EARLY {
                self.early.insert(id, (end, why));
            }
            return;
        };
        self.settled += 1;
        self.last = Some(Instant::now());
        let status = match end {
            End::Indexed => {
                self.indexed += 1;
                return;
            }
            End::Failed => "failed",
            End::Deleted => "deleted",
        };
        let why = match why {
            Some(why) => why,
            None => match api.call("GET", &format!("/v1/documents/{}", encode(&id)), "", None) {
                Ok((200, doc)) => reason(&doc),
                Ok((code, reply)) => error_text(code, &reply),
                Err(e) => format!("{e:#}"),
            },
        };
        self.problem(i, format!("document {id} {status}: {why}"));
    }
}

/// Settled ids remembered before their upload's answer arrives.
const MAX_EARLY: usize = 1 << 20;

/// Why a document record says it failed.
fn reason(doc: &Value) -> String {
    error_text(0, &serde_json::json!({"error": doc["error"]}))
        .trim_start_matches("HTTP 0 ")
        .to_owned()
}

/// One round of asking for each unsettled document (no stream).
fn ask(api: &Api, tally: &mut Tally<'_>) {
    let ids: Vec<String> = tally.pending.keys().cloned().collect();
    for id in ids {
        // Transient failures: asked again next round.
        let Ok((200, doc)) = api.call("GET", &format!("/v1/documents/{}", encode(&id)), "", None)
        else {
            continue;
        };
        if let Some(end) = doc["status"].as_str().and_then(End::of_status) {
            tally.ended(api, id, end, Some(reason(&doc)));
        }
    }
}

/// Uploads one file; its document id. A busy server (429, 503) is asked again after
/// its `Retry-After` (at most [`MAX_BACKOFF`]), [`BUSY_TRIES`] times, until `deadline`.
fn upload(api: &Api, path: &Path, deadline: Instant) -> Result<String> {
    let body = std::fs::read(path).context("reading it")?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let query = format!("/v1/documents?name={}", encode(&name));
    let mut tries = 0;
    loop {
        tries += 1;
        let (status, reply, retry_after) =
            api.call_with_headers("POST", &query, content_type(path), Some(&body))?;
        match status {
            202 => {
                return reply["id"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("HTTP 202 without a document id: {reply}"));
            }
            429 | 503 if tries < BUSY_TRIES => {
                let pause = retry_after
                    .unwrap_or(Duration::from_millis(250) * tries)
                    .min(MAX_BACKOFF);
                if Instant::now() + pause >= deadline {
                    bail!("{}", error_text(status, &reply));
                }
                std::thread::sleep(pause);
            }
            _ => bail!("{}", error_text(status, &reply)),
        }
    }
}

/// Follows `GET /v1/events`, telling `tx` when it is ready and each final event
/// about a document; reconnects with `Last-Event-ID`; ends when nobody listens.
fn follow(api: &Api, tx: &mpsc::Sender<Note>) {
    let mut last_id: Option<String> = None;
    let mut drops = 0;
    loop {
        let why = match api.stream(EVENTS, last_id.as_deref()) {
            Ok(body) => {
                drops = 0;
                match read_frames(body, &mut last_id, tx) {
                    Ok(Gone::Listener) => return,
                    Ok(Gone::Stream) => "the event stream ended".to_owned(),
                    Err(e) => format!("the event stream broke: {e:#}"),
                }
            }
            Err(e) => format!("{e:#}"),
        };
        drops += 1;
        // Before `ready` there is nothing to resume from.
        if last_id.is_none() || drops > RECONNECTS {
            let _ = tx.send(Note::Lost(why));
            return;
        }
        std::thread::sleep(Duration::from_millis(200) * drops);
    }
}

/// Why [`read_frames`] stopped.
enum Gone {
    /// Nobody reads the notes any more.
    Listener,
    /// The server ended the stream.
    Stream,
}

/// Reads server-sent-event frames from `body` until it ends.
fn read_frames(
    body: impl std::io::Read,
    last_id: &mut Option<String>,
    tx: &mpsc::Sender<Note>,
) -> Result<Gone> {
    let mut reader = BufReader::new(body);
    let (mut id, mut event, mut data) = (None::<String>, String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_line(&mut line)
            .context("reading a line")?;
        if n == 0 {
            return Ok(Gone::Stream);
        }
        if !line.ends_with('\n') {
            bail!("a line longer than {MAX_LINE} bytes");
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            // A frame ends.
            if let Some(id) = id.take() {
                *last_id = Some(id);
            }
            let note = match event.as_str() {
                "ready" => Some(Note::Ready),
                "error" => bail!("the server ended it: {data}"),
                t if End::of(t).is_some() => {
                    let event = serde_json::from_str::<Value>(&data).unwrap_or_default();
                    // A failure's code and message travel in its event.
                    let why = event["data"]["code"].as_str().map(|code| {
                        format!(
                            "{code}: {}",
                            event["data"]["message"].as_str().unwrap_or("")
                        )
                    });
                    event["subject"]
                        .as_str()
                        .map(|subject| Note::Settled(subject.to_owned(), t.to_owned(), why))
                }
                _ => None,
            };
            if let Some(note) = note
                && tx.send(note).is_err()
            {
                return Ok(Gone::Listener);
            }
            event.clear();
            data.clear();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("event:") {
            v.trim().clone_into(&mut event);
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
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
