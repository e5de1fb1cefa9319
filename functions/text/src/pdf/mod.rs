//! PDF: the text of every page (pages separated by blank lines), the page count, and
//! the title from the document information dictionary.
//!
//! Parsing is `hayro-syntax`'s: pure Rust, lazy, fuzzed, with nesting limits and xref
//! repair. On top of it, `decode` undoes stream filters under a byte budget per
//! document (a clear `too_large` failure, not an out-of-memory trap) and caches what
//! is read again, `content` runs the content streams for their text and
//! `font`/`encoding` turn character codes into Unicode.
//!
//! Not bounded here: object and cross-reference streams, which `hayro-syntax`
//! decodes itself while resolving objects.

mod content;
mod decode;
mod encoding;
mod font;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use hayro_syntax::object::{Array, MaybeRef, Object, Stream};
use hayro_syntax::page::Page;
use hayro_syntax::{LoadPdfError, Pdf};

use crate::extract::{ExtractError, Extracted, clip_title, tidy};
use content::{Budget, Document};
use decode::{Streams, TooLarge};

/// Content operators one document may run, all pages together.
const MAX_OPS: usize = 10_000_000;
/// Bytes of text one document may yield; the rest is cut.
const MAX_TEXT: usize = 32 << 20;
/// Bytes one document's streams may decode to, all together; past it the document is
/// refused ([`ExtractError::TooLarge`]): flate inflates a thousandfold. The `extract`
/// function has 512 MB, and holds an upload of up to 50 MB twice.
const MAX_DECODED: usize = 128 << 20;
/// Bytes of decoded streams kept for reuse (forms, CMaps, shared page contents).
const MAX_CACHED: usize = 64 << 20;
/// Bytes of content (at every run of a stream) and of the dictionaries read for it,
/// one document may read; the rest is cut. About what [`MAX_OPS`] operators take,
/// and as much time to run.
const MAX_READ: usize = 64 << 20;
/// Acrobat's rule: `%PDF-` within the first 1024 bytes, `%%EOF` within the last 1024.
const MARKER_WINDOW: usize = 1024;

/// What one document may cost.
#[derive(Clone, Copy)]
struct Limits {
    ops: usize,
    text: usize,
    read: usize,
    decoded: usize,
    cached: usize,
}

const LIMITS: Limits = Limits {
    ops: MAX_OPS,
    text: MAX_TEXT,
    read: MAX_READ,
    decoded: MAX_DECODED,
    cached: MAX_CACHED,
};

/// Extracts a PDF's text, page count and title.
pub(crate) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    extract_with(bytes, LIMITS).map(|(x, _)| x)
}

/// What an extraction cost, for tests that bound the work.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
struct Spent {
    /// Streams decoded (not taken from the cache).
    decodes: usize,
    /// Content operators run.
    ops: usize,
    /// Bytes of content and dictionaries read.
    read: usize,
}

/// [`extract`] under `limits`; also what it cost.
fn extract_with(bytes: &[u8], limits: Limits) -> Result<(Extracted, Spent), ExtractError> {
    let head = &bytes[..bytes.len().min(MARKER_WINDOW)];
    if find(head, b"%PDF-").is_none() {
        return Err(ExtractError::Corrupt("no %PDF- header: not a PDF".into()));
    }
    let tail = &bytes[bytes.len().saturating_sub(MARKER_WINDOW)..];
    if find(tail, b"%%EOF").is_none() {
        return Err(ExtractError::Corrupt(
            "no %%EOF marker at the end: the file is truncated".into(),
        ));
    }
    let pdf = Pdf::new(bytes.to_vec()).map_err(|e| match e {
        LoadPdfError::Decryption(why) => {
            ExtractError::Corrupt(format!("the PDF is encrypted and cannot be read ({why:?})"))
        }
        LoadPdfError::Invalid => {
            ExtractError::Corrupt("no readable cross-reference table or page tree".into())
        }
    })?;
    let pages = pdf.pages();
    if pages.is_empty() {
        return Err(ExtractError::Corrupt("the PDF has no pages".into()));
    }
    let budget = Budget {
        ops: limits.ops,
        text: limits.text,
        bytes: limits.read,
    };
    let mut doc = Document::new(budget, Streams::new(limits.decoded, limits.cached));
    let too_large = |e: TooLarge| {
        let limit = if e.limit.is_multiple_of(1 << 20) {
            format!("{} MiB", e.limit >> 20)
        } else {
            format!("{} bytes", e.limit)
        };
        ExtractError::TooLarge(format!(
            "its streams decompress to more than {limit}, the limit for one document; \
             split it into smaller files"
        ))
    };
    let mut text = String::new();
    // Pages whose content streams cannot be decoded: with no text at all, the file
    // is damaged rather than empty.
    let mut undecodable = 0;
    for page in pages.iter() {
        match contents(page, &mut doc.streams).map_err(too_large)? {
            Some(stream) => {
                let page_text =
                    content::page_text(&mut doc, &stream, page.resources()).map_err(too_large)?;
                text.push_str(&page_text);
            }
            None if page.raw().contains_key(b"Contents") => undecodable += 1,
            None => {}
        }
        text.push_str("\n\n");
    }
    let text = tidy(&text);
    if text.is_empty() && undecodable > 0 {
        return Err(ExtractError::Corrupt(format!(
            "{undecodable} of {} pages have content that cannot be decoded",
            pages.len()
        )));
    }
    let title = pdf
        .metadata()
        .title
        .as_deref()
        .map(encoding::text_string)
        .and_then(|t| clip_title(&t));
    let x = Extracted {
        text,
        title,
        pages: u32::try_from(pages.len()).ok(),
    };
    let spent = Spent {
        decodes: doc.streams.decodes,
        ops: limits.ops - doc.budget.ops,
        read: limits.read - doc.budget.bytes,
    };
    Ok((x, spent))
}

/// A page's content: its stream, or its streams joined by spaces (`None` when the
/// one stream cannot be decoded; streams of a list that cannot be are skipped).
fn contents(page: &Page<'_>, streams: &mut Streams) -> Result<Option<Rc<[u8]>>, TooLarge> {
    let raw = page.raw();
    if let Some(stream) = raw.get::<Stream<'_>>(b"Contents") {
        return streams.decode(&stream);
    }
    let Some(list) = raw.get::<Array<'_>>(b"Contents") else {
        return Ok(None);
    };
    let mut joined = Vec::new();
    for item in list.raw_iter() {
        let stream = match item {
            MaybeRef::Ref(r) => page.xref().get::<Stream<'_>>(r.into()),
            MaybeRef::NotRef(Object::Stream(s)) => Some(s),
            MaybeRef::NotRef(_) => None,
        };
        if let Some(data) = stream.map(|s| streams.decode(&s)).transpose()?.flatten() {
            // The joined copy counts too: a list may name one stream many times.
            streams.charge(data.len() + 1)?;
            joined.extend_from_slice(&data);
            joined.push(b' ');
        }
    }
    Ok(Some(joined.into()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
