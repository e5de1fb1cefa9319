//! The model's tokenizer, set up the way sentence-transformers uses it: truncation at
//! the model's `max_seq_length` (256), no padding (the batcher pads per batch).
//!
//! all-MiniLM-L6-v2's `tokenizer.json` ships truncation at 128 and fixed padding to
//! 128; both are overridden here, or long inputs would not match the reference.

use std::path::Path;
use std::sync::Arc;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{Error, Result};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const MAX_TOKENS: usize = 256;

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
    pub fn spans(&self, text: &str) -> Result<Vec<(u32, u32)>> {
        let enc = self
            .whole
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let word_ids = enc.get_special_tokens_mask();
        Ok(enc
            .get_offsets()
            .iter()
            .zip(word_ids)
            .filter(|(_, special)| **special == 0)
            .map(|(&(s, e), _)| {
                (
                    u32::try_from(s).unwrap_or(u32::MAX),
                    u32::try_from(e).unwrap_or(u32::MAX),
                )
            })
            .collect())
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
