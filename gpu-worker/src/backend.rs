//! The synchronous inference backend, owned by one OS thread.

use std::path::Path;

use candle_core::Device;

use crate::Result;
use crate::cpu::CpuBert;
use crate::model::Bert;

/// Embeds batches of token-id lists. Owned by the batcher's thread; never shared.
pub trait EmbeddingBackend: Send {
    /// One unit vector per input, in order.
    fn embed(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// Tokens one batch may hold: padded (longest × count) when the backend
    /// [`pads`](Self::pads), real ones when it packs.
    fn max_batch_tokens(&self) -> usize;
    /// Whether a batch is computed padded to its longest input (so the batcher keeps
    /// lengths together); `false` for a backend that packs inputs without padding.
    fn pads(&self) -> bool {
        true
    }
    /// Output width.
    fn dims(&self) -> usize;
    /// Runs a tiny input end to end.
    fn health(&mut self) -> Result<()> {
        self.embed(&[vec![101, 102]]).map(|_| ())
    }
}

/// all-MiniLM-L6-v2: Troupe's packed CPU encoder, or candle on CUDA when built with
/// `cuda` and a GPU is there.
#[derive(Debug)]
pub struct CandleBackend {
    model: Encoder,
    max_batch_tokens: usize,
}

/// Which implementation of the same encoder runs.
#[derive(Debug)]
enum Encoder {
    /// Packed, unpadded, on the CPU ([`crate::cpu`]).
    Cpu(CpuBert),
    /// candle tensors on `device` ([`crate::model`]).
    Candle(Bert),
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
        match &self.model {
            Encoder::Cpu(m) => m.max_positions,
            Encoder::Candle(m) => m.max_positions,
        }
    }

    /// Loads the model from `dir`: the packed CPU encoder for [`Device::Cpu`], candle's
    /// tensors on any other device.
    pub fn load(dir: &Path, device: &Device, max_batch_tokens: usize) -> Result<Self> {
        let model = match device {
            Device::Cpu => Encoder::Cpu(CpuBert::load(dir)?),
            _ => Encoder::Candle(Bert::load(dir, device)?),
        };
        Ok(Self {
            model,
            max_batch_tokens,
        })
    }

    /// Loads the model from `dir` as candle tensors on `device`, even on the CPU (the
    /// CUDA path's code, kept checked against the same reference on CPU-only builds).
    pub fn load_candle(dir: &Path, device: &Device, max_batch_tokens: usize) -> Result<Self> {
        Ok(Self {
            model: Encoder::Candle(Bert::load(dir, device)?),
            max_batch_tokens,
        })
    }
}

impl EmbeddingBackend for CandleBackend {
    fn embed(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match &mut self.model {
            Encoder::Cpu(m) => m.embed(batch),
            Encoder::Candle(m) => m.embed(batch),
        }
    }

    fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    fn pads(&self) -> bool {
        matches!(self.model, Encoder::Candle(_))
    }

    fn dims(&self) -> usize {
        match &self.model {
            Encoder::Cpu(m) => m.dims(),
            Encoder::Candle(m) => m.dims,
        }
    }
}
