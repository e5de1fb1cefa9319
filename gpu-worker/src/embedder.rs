//! The async front of the worker: tokenizes, admits (or refuses with `Overloaded`),
//! hands texts to the batcher thread and collects each caller's vectors in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::backend::EmbeddingBackend;
use crate::batcher::{self, Item, Observer};
use crate::tokenize::Tokens;
use crate::{Error, Result};

/// Settings of an [`Embedder`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Texts admitted and not yet answered, at most; beyond it callers get
    /// [`Error::Overloaded`].
    pub max_queued_texts: usize,
    /// The model's name in responses and vector keys.
    pub model: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_queued_texts: 4096,
            model: "all-MiniLM-L6-v2".into(),
        }
    }
}

/// Longest text [`troupe_core::Embeddings::token_spans`] takes in one call: callers
/// tokenize a long document window by window, so no single call holds the host.
pub const MAX_SPANS_TEXT: usize = 1 << 20;

/// Characters of an input kept before tokenizing: far beyond what 256 word pieces
/// (each at most ~100 characters) can span.
const CLIP_CHARS: usize = 32 * 1024;

fn clip(text: &str) -> &str {
    match text.char_indices().nth(CLIP_CHARS) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Vectors for one call.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One unit vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens consumed (after truncation), for `usage.prompt_tokens`.
    pub tokens: usize,
}

/// Cheap to clone; every clone feeds the same backend thread.
#[derive(Clone)]
pub struct Embedder {
    tx: mpsc::Sender<Vec<Item>>,
    tokens: Tokens,
    admission: Arc<Semaphore>,
    options: Options,
    dims: usize,
    /// Texts the batcher thread has taken off the channel so far.
    taken: Arc<AtomicU64>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.options.model)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Starts the backend's thread.
    pub fn start(
        backend: Box<dyn EmbeddingBackend>,
        tokens: Tokens,
        options: Options,
        observe: Option<Observer>,
    ) -> Result<Self> {
        let dims = backend.dims();
        let taken = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("troupe-embed".into())
            .spawn({
                let taken = taken.clone();
                move || batcher::run(backend, rx, observe, taken)
            })
            .map_err(|e| Error::Backend(format!("starting the inference thread: {e}")))?;
        Ok(Self {
            tx,
            tokens,
            admission: Arc::new(Semaphore::new(options.max_queued_texts)),
            options,
            dims,
            taken,
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.options.model
    }

    /// Texts the inference thread has taken so far (admitted texts not yet taken are
    /// waiting in the channel).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Output width.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Embeds `texts`; vectors come back in input order. Refuses at once with
    /// [`Error::Overloaded`] when admission is full (HTTP callers get 429).
    pub async fn embed(&self, texts: &[String]) -> Result<Embedded> {
        let limit = self.options.max_queued_texts;
        let n = u32::try_from(texts.len())
            .ok()
            .filter(|n| (*n as usize) <= limit)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} inputs in one request; send at most {limit}",
                    texts.len()
                ))
            })?;
        let permit = self
            .admission
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Error::Overloaded {
                queued: limit - self.admission.available_permits(),
                limit,
            })?;
        self.run(texts, permit).await
    }

    /// Like [`Self::embed`], but waits for admission instead of refusing, and splits
    /// inputs beyond the admission limit into several rounds: for queue work, which
    /// has nowhere better to wait.
    pub async fn embed_waiting(&self, texts: &[String]) -> Result<Embedded> {
        let limit = self.options.max_queued_texts.max(1);
        let mut out = Embedded {
            vectors: Vec::with_capacity(texts.len()),
            tokens: 0,
        };
        for part in texts.chunks(limit) {
            let n = u32::try_from(part.len()).unwrap_or(u32::MAX);
            let permit = self
                .admission
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(|_| Error::Stopped)?;
            let got = self.run(part, permit).await?;
            out.vectors.extend(got.vectors);
            out.tokens += got.tokens;
        }
        Ok(out)
    }

    /// Whether the inference thread is alive.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    async fn run(
        &self,
        texts: &[String],
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Embedded> {
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                tokens: 0,
            });
        }
        // Tokenizing thousands of texts is CPU work: keep it off the async workers.
        // Texts are cut first to a length no 256-token prefix reaches, so a huge input
        // costs no more than a long one.
        let tokenizer = self.tokens.clone();
        let owned: Vec<String> = texts.iter().map(|t| clip(t).to_owned()).collect();
        let encoded = tokio::task::spawn_blocking(move || {
            owned
                .iter()
                .map(|t| tokenizer.encode(t))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Backend(format!("tokenizer task: {e}")))??;
        let mut items = Vec::with_capacity(texts.len());
        let mut replies = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        let now = Instant::now();
        for ids in encoded {
            tokens += ids.len();
            let (reply, rx) = oneshot::channel();
            items.push(Item {
                ids,
                reply,
                enqueued: now,
            });
            replies.push(rx);
        }
        self.tx.send(items).await.map_err(|_| Error::Stopped)?;
        let mut vectors = Vec::with_capacity(replies.len());
        for rx in replies {
            // A dropped reply: the inference thread has ended.
            vectors.push(rx.await.map_err(|_| Error::Stopped)??);
        }
        Ok(Embedded { vectors, tokens })
    }
}

impl From<Error> for troupe_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(why) => troupe_core::Error::invalid("texts", why),
            other => troupe_core::Error::backend("embeddings", other),
        }
    }
}

/// The functions' view of the model: query vectors (admission applies: a full queue
/// is an `unavailable` error they can retry) and token boundaries for chunking.
#[async_trait::async_trait]
impl troupe_core::Embeddings for Embedder {
    fn info(&self) -> troupe_core::ModelInfo {
        troupe_core::ModelInfo {
            name: self.options.model.clone(),
            dims: self.dims,
            max_tokens: self.tokens.max_tokens(),
        }
    }

    async fn embed(&self, texts: Vec<String>) -> troupe_core::Result<Vec<Vec<f32>>> {
        Ok(Embedder::embed(self, &texts).await?.vectors)
    }

    async fn token_spans(&self, text: String) -> troupe_core::Result<Vec<(u32, u32)>> {
        if text.len() > MAX_SPANS_TEXT {
            return Err(troupe_core::Error::invalid(
                "text",
                format!(
                    "{} bytes is over the {} bytes token-spans takes in one call; call it on consecutive windows of the text",
                    text.len(),
                    MAX_SPANS_TEXT
                ),
            ));
        }
        /// Tells the blocking tokenizer to stop once the caller's future is dropped
        /// (the guest timed out or trapped).
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let tokens = self.tokens.clone();
        tokio::task::spawn_blocking(move || tokens.spans(&text, &cancelled))
            .await
            .map_err(|e| troupe_core::Error::backend("embeddings", e))?
            .map_err(Into::into)
    }
}
