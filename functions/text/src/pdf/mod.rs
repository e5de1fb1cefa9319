//! PDF: the text of every page (pages separated by blank lines), the page count, and
//! the title from the document information dictionary.
//!
//! Parsing is `hayro-syntax`'s: pure Rust, lazy, fuzzed, with nesting limits and xref
//! repair. On top of it, `content` runs the content streams for their text and
//! `font`/`encoding` turn character codes into Unicode.

mod content;
mod encoding;
mod font;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use hayro_syntax::{LoadPdfError, Pdf};

use crate::extract::{ExtractError, Extracted, clip_title, tidy};
use content::{Budget, Fonts};

/// Content operators one document may run, all pages together.
const MAX_OPS: usize = 10_000_000;
/// Bytes of text one document may yield; the rest is cut.
const MAX_TEXT: usize = 32 << 20;
/// Acrobat's rule: `%PDF-` within the first 1024 bytes, `%%EOF` within the last 1024.
const MARKER_WINDOW: usize = 1024;

/// Extracts a PDF's text, page count and title.
pub(crate) fn extract(bytes: &[u8]) -> Result<Extracted, ExtractError> {
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
    let mut fonts = Fonts::default();
    let mut budget = Budget {
        ops: MAX_OPS,
        text: MAX_TEXT,
    };
    let mut text = String::new();
    // Pages whose content streams cannot be decoded: with no text at all, the file
    // is damaged rather than empty.
    let mut undecodable = 0;
    for page in pages.iter() {
        match page.page_stream() {
            Some(stream) => {
                let page_text =
                    content::page_text(stream, page.resources(), &mut fonts, &mut budget);
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
    Ok(Extracted {
        text,
        title,
        pages: u32::try_from(pages.len()).ok(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
