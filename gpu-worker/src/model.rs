//! all-MiniLM-L6-v2 (a 6-layer BERT encoder) written on candle-nn's building blocks,
//! followed by sentence-transformers' mean pooling and L2 normalisation.
//!
//! Inputs arrive grouped by length, so a batch carries little padding; when it has
//! none the attention mask is skipped altogether.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::{Error, Result};

/// The fields of `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width (384).
    pub hidden_size: usize,
    /// Encoder layers (6).
    pub num_hidden_layers: usize,
    /// Attention heads (12).
    pub num_attention_heads: usize,
    /// Feed-forward width (1536).
    pub intermediate_size: usize,
    /// Only `gelu` (erf) is supported.
    pub hidden_act: String,
    /// Positions the model knows.
    pub max_position_embeddings: usize,
    /// Token types (2).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

/// Reads and checks `config.json` in `dir`; returns it with the weights' path.
pub(crate) fn read_config(dir: &Path) -> Result<(Config, std::path::PathBuf)> {
    let config_path = dir.join("config.json");
    let weights_path = dir.join("model.safetensors");
    for p in [&config_path, &weights_path] {
        if !p.is_file() {
            return Err(Error::ModelMissing { path: p.clone() });
        }
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::ModelInvalid {
        path: config_path.clone(),
        why: e.to_string(),
    })?;
    let c: Config = serde_json::from_str(&text).map_err(|e| Error::ModelInvalid {
        path: config_path.clone(),
        why: e.to_string(),
    })?;
    if c.hidden_act != "gelu" {
        return Err(Error::ModelInvalid {
            path: config_path,
            why: format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                c.hidden_act
            ),
        });
    }
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(Error::ModelInvalid {
            path: config_path,
            why: "hidden_size must be a multiple of num_attention_heads".into(),
        });
    }
    Ok((c, weights_path))
}

/// A dense layer with its weight stored transposed and contiguous (`[in, out]`), so
/// each call is one plain row-major GEMM over all tokens of the batch.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn from_linears(parts: &[Linear]) -> Result<Self> {
        // Concatenating along the output dimension fuses e.g. Q, K and V into one GEMM.
        let ws: Vec<Tensor> = parts.iter().map(|l| l.weight().clone()).collect();
        let bs: Vec<Tensor> = parts
            .iter()
            .map(|l| {
                l.bias()
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg("dense layer without bias".into()))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            w: Tensor::cat(&ws, 0)?.t()?.contiguous()?,
            b: Tensor::cat(&bs, 0)?,
        })
    }

    /// Multiplies the first `n` outputs by `factor` (folds attention's 1/√d into Q).
    fn scale_leading(self, n: usize, factor: f64) -> Result<Self> {
        let (wn, bn) = (self.w.dim(1)?, self.b.dim(0)?);
        let w = Tensor::cat(
            &[
                (self.w.narrow(1, 0, n)? * factor)?,
                self.w.narrow(1, n, wn - n)?,
            ],
            1,
        )?
        .contiguous()?;
        let b = Tensor::cat(
            &[
                (self.b.narrow(0, 0, n)? * factor)?,
                self.b.narrow(0, n, bn - n)?,
            ],
            0,
        )?;
        Ok(Self { w, b })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let y = x
            .reshape((b * s, h))?
            .matmul(&self.w)?
            .broadcast_add(&self.b)?;
        Ok(y.reshape((b, s, ()))?)
    }
}

/// Score-matrix bytes one attention step may hold (see [`Bert::layer`]).
const ATTENTION_CHUNK_BYTES: usize = 4 << 20;

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    up: Dense,
    down: Dense,
    out_norm: LayerNorm,
}

/// The encoder with its pooling.
pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    /// Tokens the model accepts per input.
    pub max_positions: usize,
    /// Output width.
    pub dims: usize,
    device: Device,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("layers", &self.layers.len())
            .field("dims", &self.dims)
            .finish_non_exhaustive()
    }
}

fn linear(vb: &VarBuilder<'_>, name: &str, i: usize, o: usize) -> Result<Linear> {
    Ok(candle_nn::linear(i, o, vb.pp(name))?)
}

fn norm(vb: &VarBuilder<'_>, name: &str, h: usize, eps: f64) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(h, eps, vb.pp(name))?)
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (c, weights_path) = read_config(dir)?;
        let tensors = candle_core::safetensors::load(&weights_path, device).map_err(|e| {
            Error::ModelInvalid {
                path: weights_path.clone(),
                why: e.to_string(),
            }
        })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        // Some exports prefix every name with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let loaded = (|| -> Result<Self> {
            let mut layers = Vec::with_capacity(c.num_hidden_layers);
            for i in 0..c.num_hidden_layers {
                let l = vb.pp(format!("encoder.layer.{i}"));
                layers.push(Layer {
                    qkv: Dense::from_linears(&[
                        linear(&l, "attention.self.query", h, h)?,
                        linear(&l, "attention.self.key", h, h)?,
                        linear(&l, "attention.self.value", h, h)?,
                    ])?
                    .scale_leading(h, 1.0 / ((h / c.num_attention_heads) as f64).sqrt())?,
                    attn_out: Dense::from_linears(&[linear(&l, "attention.output.dense", h, h)?])?,
                    attn_norm: norm(&l, "attention.output.LayerNorm", h, c.layer_norm_eps)?,
                    up: Dense::from_linears(&[linear(
                        &l,
                        "intermediate.dense",
                        h,
                        c.intermediate_size,
                    )?])?,
                    down: Dense::from_linears(&[linear(
                        &l,
                        "output.dense",
                        c.intermediate_size,
                        h,
                    )?])?,
                    out_norm: norm(&l, "output.LayerNorm", h, c.layer_norm_eps)?,
                });
            }
            Ok(Self {
                word: candle_nn::embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
                position: candle_nn::embedding(
                    c.max_position_embeddings,
                    h,
                    e.pp("position_embeddings"),
                )?,
                token_type: candle_nn::embedding(
                    c.type_vocab_size,
                    h,
                    e.pp("token_type_embeddings"),
                )?,
                embed_norm: norm(&e, "LayerNorm", h, c.layer_norm_eps)?,
                layers,
                heads: c.num_attention_heads,
                head_dim: h / c.num_attention_heads,
                max_positions: c.max_position_embeddings,
                dims: h,
                device: device.clone(),
            })
        })();
        loaded.map_err(|e| Error::ModelInvalid {
            path: weights_path,
            why: e.to_string(),
        })
    }

    /// Embeds `ids` (one token-id list per input, at most `max_positions` each):
    /// pads to the longest, encodes, mean-pools over real tokens, L2-normalises.
    pub fn embed(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let b = ids.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let s = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if s > self.max_positions {
            return Err(Error::Invalid(format!(
                "{s} tokens exceed the model's {} positions",
                self.max_positions
            )));
        }
        let padded = ids.iter().any(|v| v.len() != s);
        let mut flat = Vec::with_capacity(b * s);
        let mut mask = Vec::with_capacity(b * s);
        for v in ids {
            flat.extend_from_slice(v);
            flat.extend(std::iter::repeat_n(0u32, s - v.len()));
            mask.extend(std::iter::repeat_n(1f32, v.len()));
            mask.extend(std::iter::repeat_n(0f32, s - v.len()));
        }
        let input = Tensor::from_vec(flat, (b, s), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, s), &self.device)?;
        let hidden = self.encode(&input, padded.then_some(&mask))?;
        // Mean over real tokens, then unit length (sentence-transformers' Pooling +
        // Normalize modules).
        let m = mask.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2()?)
    }

    fn encode(&self, input: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s) = input.dims2()?;
        let positions = Tensor::arange(0u32, s as u32, &self.device)?;
        let types = Tensor::zeros((b, s), DType::U32, &self.device)?;
        let x = self
            .word
            .forward(input)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Padding gets a large negative score before the softmax.
        let bias = match mask {
            Some(m) => Some(((m.ones_like()? - m)? * -1e4f64)?.reshape((b, 1, 1, s))?),
            None => None,
        };
        for layer in &self.layers {
            x = self.layer(layer, &x, bias.as_ref())?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        // One GEMM for Q, K and V: [b, s, 3h] → three [b, heads, s, head_dim].
        let qkv = l
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.heads, self.head_dim))?;
        let head = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        // Attention a few sequences at a time, so the score matrices (heads × s × s
        // each) stay cache-sized instead of streaming hundreds of MB through memory.
        let per_seq = self.heads * s * s * std::mem::size_of::<f32>();
        let step = (ATTENTION_CHUNK_BYTES / per_seq.max(1)).clamp(1, b);
        let mut parts = Vec::with_capacity(b.div_ceil(step));
        for start in (0..b).step_by(step) {
            let n = step.min(b - start);
            let (q, k, v) = (
                q.narrow(0, start, n)?,
                k.narrow(0, start, n)?,
                v.narrow(0, start, n)?,
            );
            // Q already carries 1/√d (folded into its weights at load).
            let mut scores = q.matmul(&k.t()?.contiguous()?)?;
            if let Some(bias) = bias {
                scores = scores.broadcast_add(&bias.narrow(0, start, n)?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            parts.push(probs.matmul(&v)?);
        }
        let ctx = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 0)?
        };
        let ctx = ctx.transpose(1, 2)?.reshape((b, s, h))?;
        let attn = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let up = l.up.forward(&attn)?.gelu_erf()?;
        Ok(l.out_norm.forward(&(l.down.forward(&up)? + attn)?)?)
    }
}
