//! The model's tokenizer, set up the way sentence-transformers uses it: truncation at
//! the model's `max_seq_length` (256), no padding (the batcher pads per batch).
//!
//! all-MiniLM-L6-v2's `tokenizer.json` ships truncation at 128 and fixed padding to
//! 128; both are overridden here, or long inputs would not match the reference.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{Error, Result};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const MAX_TOKENS: usize = 256;

/// Longest piece of text tokenized at once by [`Tokens::spans`].
pub const SPAN_WINDOW: usize = 64 << 10;

/// `text` cut into consecutive pieces of at most `max` bytes (at least one character
/// each), each with its byte offset. A piece ends after the last whitespace in its
/// second half, so a word is only split when it is longer than half a window.
pub fn windows(text: &str, max: usize) -> impl Iterator<Item = (usize, &str)> {
    let max = max.max(8);
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = &text[at..];
        if rest.is_empty() {
            return None;
        }
        let mut end = if rest.len() <= max {
            rest.len()
        } else {
            let mut end = max;
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let mut half = end / 2;
            while !rest.is_char_boundary(half) {
                half -= 1;
            }
            match rest[half..end].rfind(char::is_whitespace) {
                Some(i) => {
                    let i = half + i;
                    i + rest[i..].chars().next().map_or(1, char::len_utf8)
                }
                None => end,
            }
        };
        if end == 0 {
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let piece = (at, &rest[..end]);
        at += end;
        Some(piece)
    })
}

/// Text → token ids. Cheap to clone (the tokenizers are shared; copying one means
/// copying its 30k-entry vocabulary).
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Tokenizer>,
    /// The same tokenizer without truncation, for token boundaries of whole documents.
    whole: Arc<Tokenizer>,
    /// Where inputs are cut.
    max_tokens: usize,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads `tokenizer.json` from `dir`, truncating at `max_tokens`.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::ModelMissing { path });
        }
        let mut inner = Tokenizer::from_file(&path).map_err(|e| Error::ModelInvalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let mut whole = inner.clone();
        whole
            .with_truncation(None)
            .map_err(|e| Error::ModelInvalid {
                path: path.clone(),
                why: e.to_string(),
            })?;
        whole.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::ModelInvalid {
                path: path.clone(),
                why: e.to_string(),
            })?;
        inner.with_padding(None);
        Ok(Self {
            inner: Arc::new(inner),
            whole: Arc::new(whole),
            max_tokens,
        })
    }

    /// Tokens per input, special tokens included; the rest is cut.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Byte offsets (start, end) of each token of `text`, without special tokens and
    /// without truncation: where a chunker may cut.
    ///
    /// The text is tokenized in windows of at most [`SPAN_WINDOW`] bytes cut at
    /// whitespace, so memory stays bounded whatever the length (the tokenizer keeps
    /// some 80 bytes per token while it works); `cancelled` is checked between
    /// windows, so work stops soon after the caller has gone.
    pub fn spans(&self, text: &str, cancelled: &AtomicBool) -> Result<Vec<(u32, u32)>> {
        if u32::try_from(text.len()).is_err() {
            return Err(Error::Invalid(format!(
                "text of {} bytes is too long to tokenize (offsets are 32-bit)",
                text.len()
            )));
        }
        // About one token per four bytes of English.
        let mut spans = Vec::with_capacity(text.len() / 4);
        for (at, window) in windows(text, SPAN_WINDOW) {
            if cancelled.load(Ordering::Relaxed) {
                return Err(Error::Stopped);
            }
            let enc = self
                .whole
                .encode(window, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            let offset = at as u32;
            spans.extend(
                enc.get_offsets()
                    .iter()
                    .zip(enc.get_special_tokens_mask())
                    .filter(|(_, special)| **special == 0)
                    .map(|(&(s, e), _)| (offset + s as u32, offset + e as u32)),
            );
        }
        Ok(spans)
    }

    /// Token ids of `text`, with `[CLS]` and `[SEP]`, truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
}
