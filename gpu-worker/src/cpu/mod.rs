//! all-MiniLM-L6-v2 on the CPU without padding: the inputs of a batch are packed into
//! one `tokens × hidden` matrix, so every dense layer is a single GEMM over real tokens
//! only, and attention runs per (input, head) over that input's own tokens — no mask,
//! no wasted rows. GEMMs use the `gemm` crate across rayon's threads (bf16 tiles on AMX,
//! [`amx`]; products of a few rows from panel-packed weights, [`narrow`]); the
//! element-wise steps are fused into passes over rows ([`kernels`]) and spread over the
//! same threads. A batch runs as groups of a few hundred tokens side by side, each with
//! its own matrices ([`CpuBert::embed`]), so no step waits on a thread another part of
//! the process has pre-empted.
//!
//! Numerically this is the same computation as [`crate::model::Bert`] (the candle
//! encoder, used on CUDA) and as sentence-transformers.

mod amx;
pub mod gemm;
mod kernels;
mod narrow;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use self::gemm::{View, matmul};
use crate::{Error, Result};

/// Whether this process runs the encoder's dense layers in bf16 on AMX tiles (CPUs
/// that have them, unless `TROUPE_CPU_BF16=0`); otherwise everything is f32.
pub fn bf16_dense_layers() -> bool {
    amx::available()
}

/// Rows of a matrix each rayon task takes in element-wise passes.
const ROWS_PER_TASK: usize = 32;
/// Tokens encoded together at most: larger batches run as groups of about this size,
/// whose activations (~14 KB a token) stay in a core's L2 between one step and the
/// next (2,048 when groups ran one after the other on a 32 MB L3; with a group per
/// thread, 512 was 10–20 % faster on batches of 32 long inputs: BENCHMARKS.md).
const GROUP_TOKENS: usize = 512;
/// Tokens of a group at least, when a batch is split so that every inference thread
/// has groups of its own ([`CpuBert::embed`]); smaller batches run as one group.
const MIN_GROUP_TOKENS: usize = 384;
/// Groups a batch is cut into per inference thread, where it has the tokens
/// (BENCHMARKS.md, "Keeping the model busy": 2, 3 and 4 measured; 3 was best).
const GROUPS_PER_THREAD: usize = 3;
/// Groups up to this many tokens keep their intermediate matrices (~14 KB a token)
/// for the next batch; larger ones (none, with groups of at most [`GROUP_TOKENS`] and
/// inputs of at most 512 tokens) would free theirs after.
const KEPT_SCRATCH_TOKENS: usize = 4096;
/// Below this many multiply-adds a GEMM stays on the calling thread.
const THREADED_GEMM_MACS: usize = 1 << 21;

/// `y = x·W + b` with `W` stored `[in, out]` row-major.
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// `w` packed for AMX bf16 tiles, where the CPU has them ([`amx`]).
    tiles: Option<amx::Packed>,
    /// `w` packed in column panels for products of few rows in f32, where there are
    /// no tiles (a second copy of the weights: ~42 MB for this model).
    panels: Option<narrow::Panels>,
}

impl Dense {
    /// Packs the weights for AMX when this process uses it.
    fn tiled(mut self) -> Self {
        if amx::available() {
            self.tiles = amx::Packed::new(&self.w, self.inputs, self.outputs);
        }
        if self.tiles.is_none() {
            self.panels = narrow::Panels::new(&self.w, self.inputs, self.outputs);
        }
        self
    }

    /// `out = x·W + b (+ residual)`, over `rows` rows.
    fn apply(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        scratch: &mut amx::Scratch,
    ) {
        let width = self.outputs;
        let out = &mut out[..rows * width];
        // The bias (plus the residual) first, in one pass; the GEMM accumulates onto it.
        match residual {
            None => par_rows(out, width, |chunk| kernels::fill_rows(chunk, &self.b)),
            Some(res) => {
                let piece = width * ROWS_PER_TASK;
                out.par_chunks_mut(piece)
                    .zip(res[..rows * width].par_chunks(piece))
                    .for_each(|(o, r)| kernels::sum_rows(o, r, &self.b));
            }
        }
        if let Some(tiles) = &self.tiles {
            let x = &x[..rows * self.inputs];
            tiles.matmul_acc(x, rows, out, scratch);
            return;
        }
        if let Some(panels) = &self.panels
            && rows <= narrow::MAX_ROWS
        {
            panels.matmul_acc(&x[..rows * self.inputs], rows, out);
            return;
        }
        let w = View::dense(&self.w, self.inputs, self.outputs);
        matmul(
            out,
            width,
            View::dense(&x[..rows * self.inputs], rows, self.inputs),
            w,
            true,
            rows * self.inputs * self.outputs >= THREADED_GEMM_MACS,
        );
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn apply(&self, xs: &mut [f32]) {
        par_rows(xs, self.gamma.len(), |chunk| {
            kernels::layer_norm(chunk, &self.gamma, &self.beta, self.eps);
        });
    }
}

struct Layer {
    /// Q, K and V in one `[h, 3h]` product; Q's part carries attention's 1/√d.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// The encoder with its pooling, on the CPU.
pub struct CpuBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    /// Tokens the model accepts per input.
    pub max_positions: usize,
    /// Intermediate matrices kept for the next batch, a set per group that ran at
    /// once (at most one per thread).
    kept: Vec<Scratch>,
    /// Where every parallel step runs.
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for CpuBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBert")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

/// Cuts a batch (inputs sorted by length, as the batcher sends them) into runs of
/// consecutive inputs to encode as groups: [`GROUPS_PER_THREAD`] per thread where the
/// batch has the tokens, each of [`MIN_GROUP_TOKENS`]..=[`GROUP_TOKENS`] tokens (an
/// input longer than that alone); a small batch is one group.
fn groups(ids: &[Vec<u32>], threads: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = ids.iter().map(|v| v.len().max(1)).sum();
    let target = total
        .div_ceil(threads.max(1) * GROUPS_PER_THREAD)
        .clamp(MIN_GROUP_TOKENS, GROUP_TOKENS);
    let mut out = Vec::new();
    let mut start = 0;
    while start < ids.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < ids.len() && (end == start || tokens + ids[end].len().max(1) <= target) {
            tokens += ids[end].len().max(1);
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Runs `f` on `rows_per_task`-row pieces of `xs` (rows `width` wide) in parallel.
fn par_rows(xs: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let piece = width * ROWS_PER_TASK;
    if xs.len() <= piece {
        f(xs);
    } else {
        xs.par_chunks_mut(piece).for_each(f);
    }
}

/// Named tensors of a safetensors file, read as flat `f32` arrays.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> candle_core::Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{full}` is missing")))?;
        if t.dims() != shape {
            return Err(candle_core::Error::Msg(format!(
                "tensor `{full}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        t.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()
    }

    /// Linear layers `[out, in]` fused along the output and stored `[in, Σout]`.
    fn dense(&self, names: &[&str], inputs: usize, outputs: usize) -> candle_core::Result<Dense> {
        let mut w = vec![0.0; inputs * outputs * names.len()];
        let mut b = Vec::with_capacity(outputs * names.len());
        let width = outputs * names.len();
        for (part, name) in names.iter().enumerate() {
            let wp = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
            for o in 0..outputs {
                for i in 0..inputs {
                    w[i * width + part * outputs + o] = wp[o * inputs + i];
                }
            }
            b.extend(self.get(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Dense {
            w,
            b,
            inputs,
            outputs: width,
            tiles: None,
            panels: None,
        })
    }

    fn norm(&self, name: &str, h: usize, eps: f64) -> candle_core::Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[h])?,
            beta: self.get(&format!("{name}.bias"), &[h])?,
            eps: eps as f32,
        })
    }
}

impl CpuBert {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        // The model's own threads, named so that a profile or
        // `/proc/<pid>/task/*/comm` tells inference from the rest of the process
        // (BENCHMARKS.md's CPU split), one per core as rayon's global pool would be.
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("troupe-infer-{i}"))
            .build()
            .map_err(|e| Error::Backend(format!("starting the inference threads: {e}")))?;
        let (c, weights_path) = crate::model::read_config(dir)?;
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
            Error::ModelInvalid {
                path: weights_path.clone(),
                why: e.to_string(),
            }
        })?;
        // Some exports prefix every name with `bert.`.
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let w = Weights { tensors, prefix };
        let h = c.hidden_size;
        let loaded = (|| -> candle_core::Result<Self> {
            let mut layers = Vec::with_capacity(c.num_hidden_layers);
            for i in 0..c.num_hidden_layers {
                let l = |n: &str| format!("encoder.layer.{i}.{n}");
                let mut qkv = w.dense(
                    &[
                        &l("attention.self.query"),
                        &l("attention.self.key"),
                        &l("attention.self.value"),
                    ],
                    h,
                    h,
                )?;
                let scale = 1.0 / ((h / c.num_attention_heads) as f32).sqrt();
                for row in qkv.w.chunks_exact_mut(3 * h) {
                    row[..h].iter_mut().for_each(|x| *x *= scale);
                }
                qkv.b[..h].iter_mut().for_each(|x| *x *= scale);
                layers.push(Layer {
                    qkv: qkv.tiled(),
                    attn_out: w.dense(&[&l("attention.output.dense")], h, h)?.tiled(),
                    attn_norm: w.norm(&l("attention.output.LayerNorm"), h, c.layer_norm_eps)?,
                    up: w
                        .dense(&[&l("intermediate.dense")], h, c.intermediate_size)?
                        .tiled(),
                    down: w
                        .dense(&[&l("output.dense")], c.intermediate_size, h)?
                        .tiled(),
                    out_norm: w.norm(&l("output.LayerNorm"), h, c.layer_norm_eps)?,
                });
            }
            Ok(Self {
                word: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
                position: w.get(
                    "embeddings.position_embeddings.weight",
                    &[c.max_position_embeddings, h],
                )?,
                token_type: w.get(
                    "embeddings.token_type_embeddings.weight",
                    &[c.type_vocab_size, h],
                )?,
                embed_norm: w.norm("embeddings.LayerNorm", h, c.layer_norm_eps)?,
                layers,
                hidden: h,
                heads: c.num_attention_heads,
                intermediate: c.intermediate_size,
                vocab: c.vocab_size,
                max_positions: c.max_position_embeddings,
                pool: Arc::new(pool),
                kept: Vec::new(),
            })
        })();
        loaded.map_err(|e| Error::ModelInvalid {
            path: weights_path,
            why: e.to_string(),
        })
    }

    /// Output width.
    pub fn dims(&self) -> usize {
        self.hidden
    }

    /// Embeds `ids` (one token-id list per input, at most `max_positions` each):
    /// encodes, mean-pools over each input's tokens, L2-normalises.
    pub fn embed(&mut self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if let Some(n) = ids.iter().map(Vec::len).max()
            && n > self.max_positions
        {
            return Err(Error::Invalid(format!(
                "{n} tokens exceed the model's {} positions",
                self.max_positions
            )));
        }
        if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.vocab
            )));
        }
        let groups = groups(ids, self.pool.current_num_threads());
        let pool = self.pool.clone();
        let kept = Mutex::new(std::mem::take(&mut self.kept));
        let this = &*self;
        // Groups run side by side, each with its own matrices, and each one's steps
        // spread over the threads too. A thread that finishes its part of a step takes
        // another group's work instead of waiting for the rest of the step: when some
        // other thread of the process takes a core from an inference thread, the one
        // left keeps computing (with one group at a time, every step waited for the
        // pre-empted thread, and the core stood idle meanwhile).
        let encoded: Vec<Vec<Vec<f32>>> = pool.install(|| {
            groups
                .par_iter()
                .map(|range| {
                    let taken = kept.lock().map(|mut k| k.pop()).unwrap_or_default();
                    let mut scratch = taken.unwrap_or_default();
                    let vectors = this.embed_group(&ids[range.clone()], &mut scratch);
                    if scratch.tokens <= KEPT_SCRATCH_TOKENS
                        && let Ok(mut k) = kept.lock()
                    {
                        k.push(scratch);
                    }
                    vectors
                })
                .collect()
        });
        self.kept = kept.into_inner().unwrap_or_default();
        // About one set per thread runs at a time; more were for a burst of nesting.
        self.kept.truncate(self.pool.current_num_threads());
        Ok(encoded.into_iter().flatten().collect())
    }

    /// [`Self::embed`] for one group of checked inputs, in `scratch`.
    fn embed_group(&self, ids: &[Vec<u32>], scratch: &mut Scratch) -> Vec<Vec<f32>> {
        let h = self.hidden;
        // An empty input still has one position (sentence-transformers always adds
        // [CLS]/[SEP]; this only guards a caller that sends none).
        let lens: Vec<usize> = ids.iter().map(|v| v.len().max(1)).collect();
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |acc, &l| {
                let start = *acc;
                *acc += l;
                Some(start)
            })
            .collect();
        let tokens: usize = lens.iter().sum();
        let mut x = vec![0.0f32; tokens * h];
        for ((v, &off), &len) in ids.iter().zip(&offsets).zip(&lens) {
            for p in 0..len {
                let id = v.get(p).copied().unwrap_or(0) as usize;
                let row = &mut x[(off + p) * h..(off + p + 1) * h];
                let (w, pos, ty) = (
                    &self.word[id * h..(id + 1) * h],
                    &self.position[p * h..(p + 1) * h],
                    &self.token_type[..h],
                );
                for i in 0..h {
                    row[i] = w[i] + pos[i] + ty[i];
                }
            }
        }
        self.embed_norm.apply(&mut x);
        scratch.fit(tokens, h, self.intermediate);
        for layer in &self.layers {
            self.layer(layer, &mut x, &lens, &offsets, scratch);
        }
        offsets
            .iter()
            .zip(&lens)
            .map(|(&off, &len)| {
                let mut v = vec![0.0; h];
                kernels::mean_unit(&x[off * h..(off + len) * h], &mut v);
                v
            })
            .collect()
    }

    fn layer(&self, l: &Layer, x: &mut [f32], lens: &[usize], offsets: &[usize], s: &mut Scratch) {
        let h = self.hidden;
        let tokens = x.len() / h;
        l.qkv.apply(x, tokens, &mut s.qkv, None, &mut s.amx);
        self.attention(&s.qkv, lens, offsets, &mut s.ctx);
        // attn = LayerNorm(ctx·Wo + bo + x)
        l.attn_out
            .apply(&s.ctx, tokens, &mut s.attn, Some(&*x), &mut s.amx);
        l.attn_norm.apply(&mut s.attn);
        // x = LayerNorm(GELU(attn·W1 + b1)·W2 + b2 + attn)
        l.up.apply(&s.attn, tokens, &mut s.up, None, &mut s.amx);
        par_rows(&mut s.up, self.intermediate, kernels::gelu);
        l.down.apply(&s.up, tokens, x, Some(&s.attn), &mut s.amx);
        l.out_norm.apply(x);
    }

    /// Scaled dot-product attention of each input with itself, head by head, from the
    /// packed `[tokens, 3h]` Q|K|V rows into `ctx` (`[tokens, h]`).
    fn attention(&self, qkv: &[f32], lens: &[usize], offsets: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let tasks: Vec<(usize, usize)> = (0..lens.len())
            .flat_map(|i| (0..self.heads).map(move |head| (i, head)))
            .collect();
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(i, head)| {
                let (off, len) = (offsets[i], lens[i]);
                let rows = &qkv[off * 3 * h..(off + len) * 3 * h];
                let part = |which: usize| View {
                    data: &rows[which * h + head * d..],
                    rows: len,
                    cols: d,
                    stride: 3 * h,
                    step: 1,
                };
                let mut out = vec![0.0; len * d];
                SCORES.with_borrow_mut(|scores| {
                    scores.resize(len * len, 0.0);
                    matmul(scores, len, part(0), part(1).t(), false, false);
                    kernels::softmax_rows(scores, len);
                    matmul(
                        &mut out,
                        d,
                        View::dense(scores, len, len),
                        part(2),
                        false,
                        false,
                    );
                });
                out
            })
            .collect();
        for (&(i, head), out) in tasks.iter().zip(outs) {
            let off = offsets[i];
            for (r, src) in out.chunks_exact(d).enumerate() {
                let at = (off + r) * h + head * d;
                ctx[at..at + d].copy_from_slice(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{GROUP_TOKENS, GROUPS_PER_THREAD, MIN_GROUP_TOKENS, groups};

    fn batch(lens: &[usize]) -> Vec<Vec<u32>> {
        lens.iter().map(|&n| vec![101; n]).collect()
    }

    /// Every input lands in exactly one group, in order; small batches stay whole, large
    /// ones give each thread several groups within the size bounds.
    #[test]
    fn batches_are_cut_into_ordered_groups_for_every_thread() {
        let check = |ids: &[Vec<u32>], threads: usize| {
            let got = groups(ids, threads);
            let mut next = 0;
            for g in &got {
                assert_eq!(g.start, next, "groups {got:?} skip or repeat inputs");
                assert!(g.end > g.start, "an empty group in {got:?}");
                next = g.end;
            }
            assert_eq!(next, ids.len(), "groups {got:?} miss inputs");
            got
        };
        assert!(check(&[], 2).is_empty());
        // One document's two chunks: one group, its steps spread over the threads.
        assert_eq!(check(&batch(&[170, 180]), 2).len(), 1);
        // A batch of the pipeline's size: three groups a thread, none below the minimum.
        let ids = batch(&[177; 32]);
        let got = check(&ids, 2);
        assert!(
            got.len() >= 2 * GROUPS_PER_THREAD - 1,
            "{} groups for 2 threads",
            got.len()
        );
        for g in &got[..got.len() - 1] {
            let tokens = g.len() * 177;
            assert!(
                tokens + 177 > MIN_GROUP_TOKENS && tokens <= GROUP_TOKENS,
                "group of {tokens} tokens"
            );
        }
        // A large batch on few threads: groups at most GROUP_TOKENS, unless one input
        // is larger alone.
        let ids = batch(&[256; 200]);
        for g in check(&ids, 2) {
            assert!(g.len() * 256 <= GROUP_TOKENS);
        }
        assert_eq!(check(&batch(&[4000, 10]), 1).len(), 2);
    }
}

thread_local! {
    /// Each thread's attention score matrix, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A group's intermediate matrices, kept between batches for groups of up to
/// [`KEPT_SCRATCH_TOKENS`] tokens (so their pages are not faulted in again each time).
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attn: Vec<f32>,
    up: Vec<f32>,
    amx: amx::Scratch,
    /// Rows the matrices were last sized for.
    tokens: usize,
}

impl Scratch {
    /// Sizes every matrix for `tokens` rows.
    fn fit(&mut self, tokens: usize, h: usize, intermediate: usize) {
        self.tokens = tokens;
        self.qkv.resize(tokens * 3 * h, 0.0);
        self.ctx.resize(tokens * h, 0.0);
        self.attn.resize(tokens * h, 0.0);
        self.up.resize(tokens * intermediate, 0.0);
    }
}
