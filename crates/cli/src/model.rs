//! The embedding model's command-line settings, and starting it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

/// The embedding model.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbeddingArgs {
    /// Folder with config.json, tokenizer.json and model.safetensors (Hugging Face
    /// layout); `make setup` fetches all-MiniLM-L6-v2 here.
    #[arg(
        long,
        env = "TROUPE_MODEL_DIR",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    pub model_dir: PathBuf,
    /// Tokens per inference batch: real tokens on the CPU encoder (it packs inputs
    /// without padding), padded tokens (longest input × inputs) on CUDA.
    #[arg(long, env = "TROUPE_MAX_BATCH_TOKENS", default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Texts admitted and not yet embedded; beyond it requests get 429.
    #[arg(long, env = "TROUPE_MAX_QUEUED_TEXTS", default_value_t = 4096)]
    pub max_queued_texts: usize,
}

impl EmbeddingArgs {
    /// Loads the model (CUDA when built with it and present) and starts its thread.
    pub fn start(
        &self,
    ) -> Result<(
        troupe_gpu_worker::Embedder,
        Arc<troupe_gpu_worker::metrics::Metrics>,
    )> {
        use troupe_gpu_worker::{CandleBackend, Embedder, Tokens, backend, embedder, metrics};
        if self.max_batch_tokens < troupe_gpu_worker::tokenize::MAX_TOKENS {
            anyhow::bail!(
                "--max-batch-tokens {} is below one full input ({} tokens); raise it",
                self.max_batch_tokens,
                troupe_gpu_worker::tokenize::MAX_TOKENS
            );
        }
        let device = backend::best_device();
        let model = CandleBackend::load(&self.model_dir, &device, self.max_batch_tokens)?;
        // Never more tokens than the model has positions (any --model-dir).
        let max_tokens = troupe_gpu_worker::tokenize::MAX_TOKENS.min(model.max_positions());
        let tokens = Tokens::load(&self.model_dir, max_tokens)?;
        let metrics = Arc::new(metrics::Metrics::default());
        let options = embedder::Options {
            max_queued_texts: self.max_queued_texts,
            ..Default::default()
        };
        let embedder = Embedder::start(
            Box::new(model),
            tokens,
            options,
            Some(metrics::Metrics::observer(metrics.clone(), None)),
        )?;
        tracing::info!(model_dir = %self.model_dir.display(), device = ?device, "embedding model loaded");
        Ok((embedder, metrics))
    }
}
