//! Troupe's embedding worker, shaped like text-embeddings-inference: a synchronous
//! [`EmbeddingBackend`] owned by one OS thread, a token-budget batcher in front of it,
//! and an async [`Embedder`] that admits, tokenizes and collects replies.
//!
//! The model is all-MiniLM-L6-v2 (384 dimensions) — on the CPU Troupe's own packed
//! encoder ([`cpu`]), on CUDA (the `cuda` feature) candle ([`model`]) — matching
//! sentence-transformers' output (mean pooling, L2 normalisation, truncation at 256
//! tokens).
//!
//! # Layout
//!
//! - [`cpu`]: the encoder on the CPU, packed without padding (GEMMs via `gemm`).
//! - [`model`]: the BERT encoder on candle-nn building blocks, with pooling (CUDA).
//! - [`tokenize`]: the tokenizer with sentence-transformers' truncation.
//! - [`backend`]: the [`EmbeddingBackend`] trait and [`CandleBackend`].
//! - [`batcher`]: token-budget, length-grouped batching on the backend thread.
//! - [`consumer`]: embedding jobs from the queue → vectors + `embedding.completed`
//!   (payloads from `troupe-events`).
//! - [`embedder`]: the async front: admission, ordering, replies.
//! - [`openai`]: the OpenAI-compatible `POST /v1/embeddings` request and response.
//! - [`server`]: `troupe worker`'s listener (`/v1/embeddings`, `/health`, `/metrics`).
//! - [`metrics`]: batch sizes, queue wait, inference time, tokens.
//! - [`error`]: the worker's errors, and [`BatchError`], what a failed batch tells each
//!   of its callers.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> troupe_gpu_worker::Result<()> {
//! use troupe_gpu_worker::{CandleBackend, Embedder, Tokens, embedder::Options};
//! let dir = std::path::Path::new("models/all-MiniLM-L6-v2");
//! let backend = CandleBackend::load(dir, &troupe_gpu_worker::backend::best_device(), 16_384)?;
//! let embedder = Embedder::start(Box::new(backend), Tokens::load(dir, 256)?, Options::default(), None)?;
//! let out = embedder.embed(&["hello".to_owned()]).await?;
//! assert_eq!(out.vectors[0].len(), 384);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod batcher;
pub mod consumer;
pub mod cpu;
pub mod embedder;
pub mod error;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod server;
pub mod tokenize;

pub use backend::{CandleBackend, EmbeddingBackend};
pub use embedder::Embedder;
pub use error::{BatchError, Error, Result};
pub use tokenize::Tokens;
