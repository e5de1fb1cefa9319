//! `extract` (on `document.uploaded`): reads the file, extracts its text (txt, md,
//! html without scripts or styles, pdf), cuts it into chunks of at most the model's
//! token limit on paragraph and sentence boundaries, with overlap, and queues the
//! embedding jobs in batches (`batch_chunks` chunks each). A job too big for a queue
//! message (`claim_check_bytes`) carries its chunks by blob key instead.
//!
//! A document it cannot read ends `document.failed` with the reason code
//! (`unsupported_type`, `corrupt`, `empty`, `bad_encoding`, `missing_blob`,
//! `too_large` past `max_text_bytes` of text or the extractor's budgets). Ids of
//! everything it publishes derive from the document, so running twice publishes
//! nothing new.

use troupe_guest::events::{self, BlobRef, Chunk, Extracted, Failed, Job};
use troupe_guest::stages::{self, Upload};
use troupe_guest::{Event, Outcome, blobs, bucket, config_u64, documents, each, embeddings};
use troupe_text::Kind;

use troupe_guest::{HandlerError, Result, host};
troupe_guest::event_function!(handle);

/// Default of `max_text_bytes`: extracted text one document may hold (some 4 million
/// tokens); past it the document fails `too_large`.
const MAX_TEXT_BYTES: u64 = 16 << 20;

/// How long a document waits before asking again for an absent embedding model.
const MODEL_WAIT_MS: u32 = 5_000;

/// Text handed to the host's tokenizer per call (its limit is 1 MiB).
const SPANS_WINDOW: usize = 256 << 10;

/// Token offsets of the whole text, asked for window by window (cut after whitespace,
/// where no token spans the cut).
fn token_spans(text: &str) -> Result<Vec<(u32, u32)>> {
    let mut spans = Vec::with_capacity(text.len() / 4);
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let mut end = rest.len().min(SPANS_WINDOW);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let mut half = end / 2;
        while !rest.is_char_boundary(half) {
            half -= 1;
        }
        if end < rest.len()
            && let Some(i) = rest[half..end].rfind(char::is_whitespace)
        {
            let i = half + i;
            end = i + rest[i..].chars().next().map_or(1, char::len_utf8);
        }
        let offset =
            u32::try_from(at).map_err(|_| HandlerError::State("text longer than 4 GiB".into()))?;
        let window = embeddings::token_spans(&rest[..end]).map_err(host("tokenizing"))?;
        spans.extend(window.into_iter().map(|(s, e)| (s + offset, e + offset)));
        at += end;
    }
    Ok(spans)
}

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    each(events, extract)
}

fn extract(event: &Event) -> Result<Outcome> {
    let (tenant, up) = match stages::upload(event)? {
        Upload::Work(tenant, up) => (tenant, up),
        Upload::Skip(outcome) => return Ok(outcome),
    };
    let id = up.document.as_str();
    // The model is served by the worker; while it is away, wait for it: a wait, not a
    // failure, so it uses up no delivery. Asked first: a document waiting for the model
    // is neither read again each time nor marked as progressing (the sweeper's timeout
    // bounds the wait).
    let model = match embeddings::info() {
        Ok(m) => m,
        Err(e) => {
            troupe_guest::log(
                troupe_guest::logging::Level::Warn,
                &format!(
                    "{id}: waiting for the embedding model: {}",
                    troupe_guest::describe(&e)
                ),
            );
            return Ok(Outcome::Defer(MODEL_WAIT_MS));
        }
    };
    documents::beat(&tenant, id)?;
    let fail = |code: &str, message: String| -> Result<Outcome> {
        let failed = Failed {
            document: id.to_owned(),
            code: code.to_owned(),
            message,
            stage: "extract".into(),
        };
        stages::publish(
            stages::new(events::id::failed(id), &tenant, id, &failed),
            Some(event),
        )?;
        Ok(Outcome::Ok)
    };
    let bytes = match blobs::get(&up.blob.bucket, &up.blob.key).map_err(host("reading the file"))? {
        Some(b) => b,
        None => {
            return fail(
                "missing_blob",
                format!("the file {}/{} is gone", up.blob.bucket, up.blob.key),
            );
        }
    };
    let kind = Kind::from_media_type(&up.content_type)
        .or_else(|| Kind::from_name(&up.name))
        .or_else(|| Kind::sniff(&bytes));
    let Some(kind) = kind else {
        return fail(
            "unsupported_type",
            format!(
                "`{}` ({}) is none of text, markdown, html or pdf",
                up.name,
                if up.content_type.is_empty() {
                    "no type"
                } else {
                    &up.content_type
                }
            ),
        );
    };
    let text = match troupe_text::extract(kind, &bytes) {
        Ok(x) => x.text,
        Err(e) => return fail(e.code(), format!("{}: {e}", up.name)),
    };
    let max_text = config_u64("max_text_bytes", MAX_TEXT_BYTES);
    if text.len() as u64 > max_text {
        return fail(
            "too_large",
            format!(
                "{}: {} bytes of text is over the {max_text} bytes one document may hold; split the file, or raise the variable max_text_bytes",
                up.name,
                text.len()
            ),
        );
    }
    let spans = token_spans(&text)?;
    let max = usize::try_from(model.max_tokens)
        .unwrap_or(256)
        .saturating_sub(2)
        .max(16);
    let overlap = usize::try_from(config_u64("overlap_tokens", 32))
        .unwrap_or(32)
        .min(max / 2);
    let chunks = troupe_text::chunk(&text, &spans, max, overlap);
    if chunks.is_empty() {
        return fail("empty", format!("{}: no text to index", up.name));
    }
    let per_job = usize::try_from(config_u64("batch_chunks", 32))
        .unwrap_or(32)
        .max(1);
    let of = u32::try_from(chunks.len().div_ceil(per_job))
        .map_err(|_| HandlerError::State("too many batches".into()))?;
    let extracted = Extracted {
        document: id.to_owned(),
        chunks: chunks.len() as u64,
        batches: of,
        tokens: spans.len() as u64,
    };
    stages::publish(
        stages::new(events::id::extracted(id), &tenant, id, &extracted),
        Some(event),
    )?;
    let claim_check =
        usize::try_from(config_u64("claim_check_bytes", 192 * 1024)).unwrap_or(usize::MAX);
    for (i, group) in chunks.chunks(per_job).enumerate() {
        let batch = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let items: Vec<Chunk> = group
            .iter()
            .enumerate()
            .map(|(j, c)| Chunk {
                id: format!("{:06}", i * per_job + j),
                text: c.text.clone(),
            })
            .collect();
        let mut job = Job {
            document: id.to_owned(),
            batch,
            of,
            chunks: items,
            chunks_blob: None,
        };
        let inline = serde_json::to_vec(&job)
            .map_err(|e| HandlerError::State(format!("encoding a job: {e}")))?;
        if inline.len() > claim_check {
            let blob = BlobRef {
                bucket: bucket(),
                key: format!("chunks/{tenant}/{id}/{batch:05}.json"),
            };
            let body = serde_json::to_vec(&job.chunks)
                .map_err(|e| HandlerError::State(format!("encoding chunks: {e}")))?;
            blobs::put(&blob.bucket, &blob.key, &body).map_err(host("storing chunks"))?;
            job.chunks.clear();
            job.chunks_blob = Some(blob);
        }
        let ev = stages::new(events::id::job(id, batch), &tenant, id, &job);
        stages::publish(ev, Some(event))?;
    }
    Ok(Outcome::Ok)
}
