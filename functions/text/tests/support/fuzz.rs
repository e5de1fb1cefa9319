//! What each fuzz target runs on one input, and what must hold of the outcome. The
//! fuzz targets (`fuzz/fuzz_targets/*.rs`) and the regression test
//! (`tests/fuzz_regressions.rs`) both include this file, so a saved input replays
//! exactly as the fuzzer ran it, on stable.

#![allow(dead_code)]

use troupe_text::{ExtractError, Kind, chunk as chunk_text, extract};

/// Text bytes a PDF may yield: its text budget (32 MiB), with room for page breaks.
/// (Forms drawn many times make a small PDF's text large.)
const MAX_PDF_TEXT: usize = 40 << 20;

/// A PDF: text or one of the documented failures; never a panic.
pub fn pdf(data: &[u8]) {
    let _ = Kind::sniff(data);
    let codes = ["corrupt", "empty", "too_large"];
    check(extract(Kind::Pdf, data), MAX_PDF_TEXT, &codes);
}

/// HTML (any bytes; invalid UTF-8 is replaced).
pub fn html(data: &[u8]) {
    let _ = Kind::sniff(data);
    check(extract(Kind::Html, data), linear(data), &["empty"]);
}

/// Markdown (and plain text, which shares the UTF-8 handling).
pub fn markdown(data: &[u8]) {
    let _ = Kind::sniff(data);
    let codes = ["empty", "bad_encoding"];
    check(extract(Kind::Markdown, data), linear(data), &codes);
    check(extract(Kind::Text, data), linear(data), &codes);
}

/// The text of markup is no longer than its bytes, but for invalid UTF-8 and NULs
/// (one byte, three of U+FFFD) and the separators of short tags.
fn linear(data: &[u8]) -> usize {
    3 * data.len() + 16
}

fn check(result: Result<troupe_text::Extracted, ExtractError>, max_text: usize, codes: &[&str]) {
    match result {
        Ok(x) => {
            assert!(!x.text.trim().is_empty(), "Ok with no text");
            assert!(x.text.len() <= max_text, "{} bytes of text", x.text.len());
            if let Some(t) = &x.title {
                assert!(!t.is_empty() && t.chars().count() <= 200, "title {t:?}");
            }
        }
        Err(e) => assert!(codes.contains(&e.code()), "unexpected {}: {e}", e.code()),
    }
}

/// Chunking. Input: `max_tokens` (u16 LE), `overlap` (u16 LE), a span count (u16
/// LE), that many spans of a u16 LE start and a u8 length, then the text (UTF-8,
/// invalid bytes replaced).
pub fn chunk(data: &[u8]) {
    let (text, spans, max, overlap) = chunk_input(data);
    let chunks = chunk_text(&text, &spans, max, overlap);
    let mut total = 0;
    for c in &chunks {
        assert!(c.start <= c.end && c.end <= text.len(), "{c:?}");
        assert_eq!(text.get(c.start..c.end), Some(c.text.as_str()));
        assert!(!c.text.is_empty() && c.text.trim() == c.text, "{c:?}");
        assert!(c.tokens <= max.max(1), "{} tokens > {max}", c.tokens);
        total += c.text.len();
    }
    // Overlap repeats at most half of each chunk: the chunks hold O(text) bytes.
    assert!(
        total <= 3 * text.len(),
        "{total} bytes of chunks from {} of text",
        text.len()
    );
}

/// Decodes [`chunk`]'s input.
pub fn chunk_input(data: &[u8]) -> (String, Vec<(u32, u32)>, usize, usize) {
    let u16_at = |i: usize| {
        data.get(i..i + 2)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let (max, overlap, count) = (u16_at(0), u16_at(2), u16_at(4));
    let mut at = 6.min(data.len());
    let mut spans = Vec::new();
    for _ in 0..count {
        let Some(b) = data.get(at..at + 3) else { break };
        let start = u32::from(u16::from_le_bytes([b[0], b[1]]));
        spans.push((start, start + u32::from(b[2])));
        at += 3;
    }
    let text = String::from_utf8_lossy(&data[at..]).into_owned();
    (text, spans, max, overlap)
}
