//! One shard's vectors as int8 codes, and the scan that finds every row that can be
//! in the exact top k.
//!
//! A row is kept as int8 codes with a per-row scale (a quarter of its f32 size); the
//! f32 vector stays in SQLite. A search scores every row from the codes, together
//! with a bound on how far that approximate score can be from the exact one, and
//! keeps the rows whose best possible score reaches the k-th best worst possible
//! score: the exact top k is among them (the caller rescores them from the f32
//! vectors, best bound first, and stops once no bound left can beat its k-th).
//!
//! The bound: with `v̂ = s_v·c_v` and `q̂ = s_q·c_q` the quantized vectors,
//! `|q·v − q̂·v̂| ≤ ‖q‖·‖v − v̂‖ + ‖q − q̂‖·‖v̂‖`; both norms of residuals are computed
//! when a row is added and once per query.
//!
//! Rows live in segments of at most [`SEGMENT_ROWS`], shared (`Arc`) with the scans
//! running on them: an append copies at most the last segment, and only while a scan
//! holds it. A deleted row is marked in its segment's bitmap, which scans read; a
//! segment whose dead rows pass a quarter is rewritten without them.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::kernel;

/// Rows per segment: small enough that copying one is cheap, large enough that the
/// per-segment work vanishes next to the scan.
pub(crate) const SEGMENT_ROWS: usize = 8192;

/// Shards with fewer live rows are scanned on the calling thread.
const PARALLEL_ROWS: usize = 16_384;

/// Added to every bound: f32 rounding in the approximate score and in the exact
/// score the caller computes (≤ 384 · 2⁻²⁴ for unit vectors of 384 dimensions).
const MARGIN: f32 = 1e-4;

/// Rows scored per call of the kernel.
const BLOCK: usize = 256;

/// A run of rows, in id order.
#[derive(Debug)]
pub(crate) struct Segment {
    ids: Vec<i64>,
    /// `ids.len() × dims` int8 codes, offset by 128 (what [`kernel::dots`] takes).
    codes: Vec<u8>,
    /// Per row: the code scale (`v ≈ scale · code`).
    scales: Vec<f32>,
    /// Per row: `‖v − v̂‖`.
    residuals: Vec<f32>,
    /// Per row: `‖v̂‖`.
    norms: Vec<f32>,
    /// One bit per row, set when it is deleted; atomic because scans read it while
    /// the catch-up marks rows.
    dead: Vec<AtomicU64>,
    /// Bits set in `dead`.
    dead_rows: AtomicUsize,
}

impl Clone for Segment {
    fn clone(&self) -> Self {
        Self {
            ids: self.ids.clone(),
            codes: self.codes.clone(),
            scales: self.scales.clone(),
            residuals: self.residuals.clone(),
            norms: self.norms.clone(),
            dead: self
                .dead
                .iter()
                .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
                .collect(),
            dead_rows: AtomicUsize::new(self.dead_rows.load(Ordering::Relaxed)),
        }
    }
}

impl Segment {
    fn new() -> Self {
        Self {
            ids: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            residuals: Vec::new(),
            norms: Vec::new(),
            dead: Vec::new(),
            dead_rows: AtomicUsize::new(0),
        }
    }

    fn is_dead(&self, i: usize) -> bool {
        self.dead[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }

    fn live(&self) -> usize {
        self.ids.len() - self.dead_rows.load(Ordering::Relaxed)
    }

    fn push(&mut self, id: i64, codes: &[u8], (scale, residual, norm): (f32, f32, f32)) {
        if self.ids.len().is_multiple_of(64) {
            self.dead.push(AtomicU64::new(0));
        }
        self.ids.push(id);
        self.codes.extend_from_slice(codes);
        self.scales.push(scale);
        self.residuals.push(residual);
        self.norms.push(norm);
    }

    /// The segment without its dead rows.
    fn compacted(&self, dims: usize) -> Self {
        let mut out = Self::new();
        for i in (0..self.ids.len()).filter(|&i| !self.is_dead(i)) {
            let q = (self.scales[i], self.residuals[i], self.norms[i]);
            out.push(self.ids[i], &self.codes[i * dims..(i + 1) * dims], q);
        }
        out
    }
}

/// `v` as int8 codes (each stored as `code(c)`) with a scale; (scale, ‖v − v̂‖, ‖v̂‖).
fn quantize<T>(v: &[f32], codes: &mut Vec<T>, code: impl Fn(i8) -> T) -> (f32, f32, f32) {
    codes.clear();
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let (mut residual, mut norm) = (0.0f32, 0.0f32);
    for x in v {
        // In -127..=127 by construction of `scale`.
        let c = (x / scale).round().clamp(-127.0, 127.0) as i8;
        let back = f32::from(c) * scale;
        residual += (x - back) * (x - back);
        norm += back * back;
        codes.push(code(c));
    }
    (scale, residual.sqrt(), norm.sqrt())
}

/// f32 dot product in eight lanes the compiler vectorises.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A row that may be in the top k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// The row id.
    pub(crate) id: i64,
    /// The best score the row can have.
    pub(crate) upper: f32,
}

/// One tenant's vectors of one model, of one width.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Width; 0 until the first row.
    pub(crate) dims: usize,
    segments: Vec<Arc<Segment>>,
    /// Scratch for quantizing.
    codes: Vec<u8>,
}

impl Rows {
    /// No rows yet, of width `dims` (0: the first row's).
    pub(crate) fn with_dims(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    /// Adds a row, whose id must be above every id added before; a row of another
    /// width than the first is refused (false).
    pub(crate) fn push(&mut self, id: i64, v: &[f32]) -> bool {
        if self.dims == 0 {
            self.dims = v.len();
        }
        if v.len() != self.dims || v.is_empty() {
            return false;
        }
        let mut codes = std::mem::take(&mut self.codes);
        let q = quantize(v, &mut codes, |c| (c as u8) ^ 0x80);
        self.push_codes(id, &codes, q);
        self.codes = codes;
        true
    }

    fn push_codes(&mut self, id: i64, codes: &[u8], q: (f32, f32, f32)) {
        match self.segments.last_mut() {
            Some(last) if last.ids.len() < SEGMENT_ROWS => {
                // Copies the segment only if a scan holds it.
                Arc::make_mut(last).push(id, codes, q);
            }
            _ => {
                let mut segment = Segment::new();
                segment.push(id, codes, q);
                self.segments.push(Arc::new(segment));
            }
        }
    }

    /// Appends `other`'s rows with ids above `after` (both in id order).
    pub(crate) fn append(&mut self, other: &Rows, after: i64) {
        if other.dims == 0 {
            return;
        }
        if self.dims == 0 {
            self.dims = other.dims;
        }
        if other.dims != self.dims {
            return;
        }
        let dims = self.dims;
        for s in &other.segments {
            for i in (0..s.ids.len()).filter(|&i| s.ids[i] > after && !s.is_dead(i)) {
                let q = (s.scales[i], s.residuals[i], s.norms[i]);
                self.push_codes(s.ids[i], &s.codes[i * dims..(i + 1) * dims], q);
            }
        }
    }

    /// Marks row `id` deleted; false if it is not here (or already deleted).
    pub(crate) fn delete(&mut self, id: i64) -> bool {
        let at = self
            .segments
            .partition_point(|s| s.ids.last().is_some_and(|&l| l < id));
        let Some(segment) = self.segments.get_mut(at) else {
            return false;
        };
        let Ok(i) = segment.ids.binary_search(&id) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        if segment.dead[i / 64].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return false;
        }
        let dead = segment.dead_rows.fetch_add(1, Ordering::Relaxed) + 1;
        if dead * 4 > segment.ids.len() {
            // Scans holding the old segment finish on it.
            let compacted = segment.compacted(self.dims);
            if compacted.ids.is_empty() {
                self.segments.remove(at);
            } else {
                *segment = Arc::new(compacted);
            }
        }
        true
    }

    /// Rows that can be searched.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.segments.iter().map(|s| s.live()).sum()
    }

    /// The segments as they are now, for a scan without the index's lock.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            dims: self.dims,
            segments: self.segments.clone(),
        }
    }
}

/// The rows a scan reads, unchanged by later writes.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    dims: usize,
    segments: Vec<Arc<Segment>>,
}

/// A worst possible score with a total order, for the heap of the k best.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lower(f32);

impl Eq for Lower {}

impl PartialOrd for Lower {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Lower {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: the heap's top is the smallest of the k kept.
        other.0.total_cmp(&self.0)
    }
}

/// What one thread found: its k best worst possible scores and the rows that beat
/// its floor as it went.
struct Partial {
    lowers: BinaryHeap<Lower>,
    candidates: Vec<Candidate>,
}

impl Snapshot {
    /// Every row that can be among the `k` best for `query`, best bound first.
    pub(crate) fn candidates(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        let live: usize = self.segments.iter().map(|s| s.live()).sum();
        let k = k.min(live);
        if k == 0 || query.len() != self.dims {
            return Vec::new();
        }
        let mut q_codes = Vec::with_capacity(self.dims);
        let (q_scale, q_residual, _) = quantize(query, &mut q_codes, |c| c);
        let q_norm = dot(query, query).sqrt();
        let query = Query {
            codes: &q_codes,
            scale: q_scale,
            residual: q_residual,
            norm: q_norm,
            dims: self.dims,
            k,
        };
        let threads = if live < PARALLEL_ROWS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |p| p.get().min(8))
        };
        let parts: Vec<Partial> = if threads == 1 {
            vec![query.scan(&self.segments)]
        } else {
            // Contiguous runs of segments with about as many rows each.
            let per = live.div_ceil(threads);
            let mut runs = Vec::with_capacity(threads);
            let (mut start, mut rows) = (0, 0);
            for (i, s) in self.segments.iter().enumerate() {
                rows += s.ids.len();
                if rows >= per {
                    runs.push(&self.segments[start..=i]);
                    (start, rows) = (i + 1, 0);
                }
            }
            if start < self.segments.len() {
                runs.push(&self.segments[start..]);
            }
            let query = &query;
            std::thread::scope(|s| {
                let handles: Vec<_> = runs
                    .into_iter()
                    .map(|run| s.spawn(move || query.scan(run)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        // The k-th best worst possible score over all rows: no row whose best possible
        // score is below it can be in the top k.
        let mut lowers: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.lowers.iter().map(|l| l.0))
            .collect();
        let (_, kth, _) = lowers.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let floor = *kth;
        let mut best: Vec<Candidate> = parts
            .into_iter()
            .flat_map(|p| p.candidates)
            .filter(|c| c.upper >= floor)
            .collect();
        best.sort_by(|a, b| b.upper.total_cmp(&a.upper).then(a.id.cmp(&b.id)));
        best
    }
}

/// The exact top `k` (score, row id), best first, ties by id: `candidates` (from
/// [`Snapshot::candidates`]) rescored by `exact`, best bound first, until no bound left
/// reaches the k-th score. `exact` gives `None` for a row that is gone.
pub(crate) fn rescore<E>(
    candidates: &[Candidate],
    k: usize,
    mut exact: impl FnMut(i64) -> Result<Option<f32>, E>,
) -> Result<Vec<(f32, i64)>, E> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut best: Vec<(f32, i64)> = Vec::with_capacity(k + 1);
    let order = |a: &(f32, i64), b: &(f32, i64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    for c in candidates {
        if best.len() == k && best.last().is_some_and(|kth| c.upper < kth.0) {
            break;
        }
        let Some(score) = exact(c.id)? else { continue };
        let at = best.partition_point(|b| order(b, &(score, c.id)).is_lt());
        best.insert(at, (score, c.id));
        best.truncate(k);
    }
    Ok(best)
}

/// A quantized query.
struct Query<'a> {
    codes: &'a [i8],
    scale: f32,
    residual: f32,
    norm: f32,
    dims: usize,
    k: usize,
}

impl Query<'_> {
    fn scan(&self, segments: &[Arc<Segment>]) -> Partial {
        let mut lowers = BinaryHeap::with_capacity(self.k + 1);
        let mut candidates = Vec::new();
        let mut floor = f32::NEG_INFINITY;
        let mut dots = [0i32; BLOCK];
        let mut upper = [0.0f32; BLOCK];
        for s in segments {
            for first in (0..s.ids.len()).step_by(BLOCK) {
                let n = BLOCK.min(s.ids.len() - first);
                let codes = &s.codes[first * self.dims..(first + n) * self.dims];
                kernel::dots(codes, self.codes, &mut dots[..n]);
                // Every row's best possible score in one loop the compiler vectorises;
                // the few that reach the floor take the branch below.
                let rows = first..first + n;
                let (scales, residuals, norms) = (
                    &s.scales[rows.clone()],
                    &s.residuals[rows.clone()],
                    &s.norms[rows],
                );
                let bounds = residuals.iter().zip(norms);
                for (((u, &d), &scale), (&r, &m)) in
                    upper.iter_mut().zip(&dots).zip(scales).zip(bounds)
                {
                    *u = d as f32 * scale * self.scale
                        + (self.norm * r + self.residual * m + MARGIN);
                }
                for (j, &up) in upper[..n].iter().enumerate() {
                    let i = first + j;
                    if up < floor || s.is_dead(i) {
                        continue;
                    }
                    candidates.push(Candidate {
                        id: s.ids[i],
                        upper: up,
                    });
                    let bound = self.norm * residuals[j] + self.residual * norms[j] + MARGIN;
                    let lower = up - 2.0 * bound;
                    if lowers.len() < self.k {
                        lowers.push(Lower(lower));
                    } else if lowers.peek().is_some_and(|top| lower > top.0) {
                        lowers.pop();
                        lowers.push(Lower(lower));
                    }
                    if lowers.len() == self.k {
                        floor = lowers.peek().map_or(floor, |top| top.0);
                    }
                }
                // Rows that fell below the risen floor go now, not at the end.
                if candidates.len() > 4096 {
                    candidates.retain(|c| c.upper >= floor);
                }
            }
        }
        candidates.retain(|c| c.upper >= floor);
        Partial { lowers, candidates }
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
