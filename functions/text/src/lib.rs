//! Text out of the documents Troupe reads, and the chunks it embeds. Pure Rust: it runs
//! inside the wasm functions (`extract`, `inspect`, `intake`, `api`), where a panic
//! aborts the invocation, so nothing here panics on input; damaged files are errors.
//!
//! # Layout
//!
//! - `kind`: [`Kind`], the document kinds, from a media type, a file name or the bytes.
//! - `extract`: [`extract`] and its [`Extracted`] / [`ExtractError`]; helpers the
//!   formats share (titles, whitespace).
//! - `markdown`, `html`: the text of those formats (`pulldown-cmark`, `html5gum`).
//! - `pdf`: page text, page count and title of PDFs (`hayro-syntax` parses; the
//!   module decodes streams under a byte budget, runs content streams and decodes
//!   fonts: `decode`, `content`, `font`, `encoding`).
//! - `chunking`: [`chunk`], token-aware chunks on paragraph and sentence boundaries,
//!   with overlap.
//!
//! # Example
//!
//! ```
//! use troupe_text::{Kind, chunk, extract};
//!
//! let kind = Kind::from_name("notes.md").unwrap();
//! let doc = extract(kind, b"# Notes\n\nFirst point. Second point.").unwrap();
//! assert_eq!(doc.title.as_deref(), Some("Notes"));
//! // Without the model's token offsets, words count as tokens.
//! let chunks = chunk(&doc.text, &[], 3, 0);
//! assert_eq!(chunks[0].text, "Notes\n\nFirst point.");
//! assert_eq!(chunks[1].text, "Second point.");
//! ```

mod chunking;
mod extract;
mod html;
mod kind;
mod markdown;
mod pdf;

pub use chunking::{Chunk, chunk};
pub use extract::{ExtractError, Extracted, Result, extract};
pub use kind::Kind;
