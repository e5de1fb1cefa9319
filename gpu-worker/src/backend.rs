//! The synchronous inference backend, owned by one OS thread.

use std::path::Path;

use candle_core::Device;

use crate::Result;
use crate::model::Bert;

/// Embeds batches of token-id lists. Owned by the batcher's thread; never shared.
pub trait EmbeddingBackend: Send {
    /// One unit vector per input, in order.
    fn embed(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// Padded tokens (longest × count) one batch may hold.
    fn max_batch_tokens(&self) -> usize;
    /// Output width.
    fn dims(&self) -> usize;
    /// Runs a tiny input end to end.
    fn health(&mut self) -> Result<()> {
        self.embed(&[vec![101, 102]]).map(|_| ())
    }
}

/// all-MiniLM-L6-v2 on candle: CPU, or CUDA when built with `cuda` and a GPU is there.
#[derive(Debug)]
pub struct CandleBackend {
    model: Bert,
    max_batch_tokens: usize,
}

/// The device to run on: the first CUDA GPU when built with `cuda` and one is
/// present, else the CPU.
pub fn best_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

impl CandleBackend {
    /// Positions (tokens per input) the model accepts.
    pub fn max_positions(&self) -> usize {
        self.model.max_positions
    }

    /// Loads the model from `dir`.
    pub fn load(dir: &Path, device: &Device, max_batch_tokens: usize) -> Result<Self> {
        Ok(Self {
            model: Bert::load(dir, device)?,
            max_batch_tokens,
        })
    }
}

impl EmbeddingBackend for CandleBackend {
    fn embed(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.model.embed(batch)
    }

    fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    fn dims(&self) -> usize {
        self.model.dims
    }
}
