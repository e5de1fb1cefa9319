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
//! The scan reads half the codes for most rows: each code (offset by 128) is split
//! into its high and low nibble, kept in two planes ([`kernel`]). The high nibbles
//! alone say `v̌ = s_v·(16·h + 7.5 − 128)`, a 4-bit vector with its own two norms,
//! so the same bound holds for `q̂·v̌` (wider, ~0.13 for unit vectors of 384
//! dimensions); only a row whose 4-bit best possible score reaches the floor has its
//! low nibbles read, for the int8 score and its tight bound. A search streams half
//! the memory (the scan is bound by memory, BENCHMARKS.md); the candidates are the
//! same.
//!
//! Rows live in segments of at most [`SEGMENT_ROWS`], shared (`Arc`) with the scans
//! running on them: an append copies at most the last segment, and only while a scan
//! holds it. A deleted row is marked in its segment's bitmap, which scans read; a
//! segment whose dead rows pass a quarter is rewritten without them.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

/// What bounds a row's scores, besides its codes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    /// The code scale (`v ≈ scale · code`).
    scale: f32,
    /// `‖v − v̂‖`, of the int8 codes.
    residual: f32,
    /// `‖v̂‖`.
    norm: f32,
    /// `‖v − v̌‖`, of the high nibbles.
    coarse_residual: f32,
    /// `‖v̌‖`.
    coarse_norm: f32,
}

/// A run of rows, in id order.
#[derive(Debug)]
pub(crate) struct Segment {
    ids: Vec<i64>,
    /// `ids.len() × ⌈dims / 2⌉` bytes: the high nibbles of the codes (offset by 128),
    /// two dimensions a byte (see [`kernel`]); every scan reads them.
    high: Vec<u8>,
    /// The low nibbles, laid out the same; read only for the rows the high nibbles
    /// cannot rule out.
    low: Vec<u8>,
    /// Per row, as [`Bounds`], one vector a field so the scan's loops vectorise.
    scales: Vec<f32>,
    residuals: Vec<f32>,
    norms: Vec<f32>,
    coarse_residuals: Vec<f32>,
    coarse_norms: Vec<f32>,
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
            high: self.high.clone(),
            low: self.low.clone(),
            scales: self.scales.clone(),
            residuals: self.residuals.clone(),
            norms: self.norms.clone(),
            coarse_residuals: self.coarse_residuals.clone(),
            coarse_norms: self.coarse_norms.clone(),
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
            high: Vec::new(),
            low: Vec::new(),
            scales: Vec::new(),
            residuals: Vec::new(),
            norms: Vec::new(),
            coarse_residuals: Vec::new(),
            coarse_norms: Vec::new(),
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

    /// Row `i`'s bounds.
    fn bounds(&self, i: usize) -> Bounds {
        Bounds {
            scale: self.scales[i],
            residual: self.residuals[i],
            norm: self.norms[i],
            coarse_residual: self.coarse_residuals[i],
            coarse_norm: self.coarse_norms[i],
        }
    }

    /// Row `i`'s (high, low) nibble planes, `width` bytes each.
    fn planes(&self, i: usize, width: usize) -> (&[u8], &[u8]) {
        let at = i * width..(i + 1) * width;
        (&self.high[at.clone()], &self.low[at])
    }

    fn push(&mut self, id: i64, (high, low): (&[u8], &[u8]), b: Bounds) {
        if self.ids.len().is_multiple_of(64) {
            self.dead.push(AtomicU64::new(0));
        }
        self.ids.push(id);
        self.high.extend_from_slice(high);
        self.low.extend_from_slice(low);
        self.scales.push(b.scale);
        self.residuals.push(b.residual);
        self.norms.push(b.norm);
        self.coarse_residuals.push(b.coarse_residual);
        self.coarse_norms.push(b.coarse_norm);
    }

    /// The segment without its dead rows.
    fn compacted(&self, width: usize) -> Self {
        let mut out = Self::new();
        for i in (0..self.ids.len()).filter(|&i| !self.is_dead(i)) {
            out.push(self.ids[i], self.planes(i, width), self.bounds(i));
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

/// `v`'s bounds and nibble planes (appended to `high` and `low`) from its codes
/// (offset by 128) and scale.
fn split(v: &[f32], codes: &[u8], scale: f32, high: &mut Vec<u8>, low: &mut Vec<u8>) -> (f32, f32) {
    let (mut residual, mut norm) = (0.0f32, 0.0f32);
    for (x, &c) in v.iter().zip(codes) {
        let back = (f32::from(c >> 4) * 16.0 + 7.5 - 128.0) * scale;
        residual += (x - back) * (x - back);
        norm += back * back;
    }
    for pair in codes.chunks(2) {
        let (even, odd) = (pair[0], pair.get(1).copied().unwrap_or(0));
        high.push((even >> 4) | (odd & 0xf0));
        low.push((even & 0x0f) | (odd << 4));
    }
    (residual.sqrt(), norm.sqrt())
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
    /// Scratch for quantizing: the codes and their two planes.
    scratch: (Vec<u8>, Vec<u8>, Vec<u8>),
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
        let (mut codes, mut high, mut low) = std::mem::take(&mut self.scratch);
        let (scale, residual, norm) = quantize(v, &mut codes, |c| (c as u8) ^ 0x80);
        high.clear();
        low.clear();
        let (coarse_residual, coarse_norm) = split(v, &codes, scale, &mut high, &mut low);
        let bounds = Bounds {
            scale,
            residual,
            norm,
            coarse_residual,
            coarse_norm,
        };
        self.push_planes(id, (&high, &low), bounds);
        self.scratch = (codes, high, low);
        true
    }

    fn push_planes(&mut self, id: i64, planes: (&[u8], &[u8]), bounds: Bounds) {
        match self.segments.last_mut() {
            Some(last) if last.ids.len() < SEGMENT_ROWS => {
                // Copies the segment only if a scan holds it.
                Arc::make_mut(last).push(id, planes, bounds);
            }
            _ => {
                let mut segment = Segment::new();
                segment.push(id, planes, bounds);
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
        let width = self.dims.div_ceil(2);
        for s in &other.segments {
            for i in (0..s.ids.len()).filter(|&i| s.ids[i] > after && !s.is_dead(i)) {
                self.push_planes(s.ids[i], s.planes(i, width), s.bounds(i));
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
            let compacted = segment.compacted(self.dims.div_ceil(2));
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
        // The query's even and odd dimensions, padded to the planes' width.
        let width = self.dims.div_ceil(2);
        let (mut even, mut odd) = (vec![0i8; width], vec![0i8; width]);
        for (j, pair) in q_codes.chunks(2).enumerate() {
            even[j] = pair[0];
            odd[j] = pair.get(1).copied().unwrap_or(0);
        }
        let sum: i32 = q_codes.iter().map(|&c| i32::from(c)).sum();
        let query = Query {
            even: &even,
            odd: &odd,
            sum,
            scale: q_scale,
            residual: q_residual,
            norm: q_norm,
            k,
            next: AtomicUsize::new(0),
            floor: AtomicU32::new(order_key(f32::NEG_INFINITY)),
        };
        let threads = if live < PARALLEL_ROWS {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |p| p.get().min(8))
                .min(self.segments.len())
        };
        let parts: Vec<Partial> = if threads == 1 {
            vec![query.scan(&self.segments)]
        } else {
            // The threads take segments one at a time, so one that is descheduled
            // holds up the search by one segment, not by its share.
            let (query, segments) = (&query, &self.segments);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || query.scan(segments)))
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

/// `x` as a `u32` in the same order (for an atomic maximum of floats).
fn order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// The float [`order_key`] came from.
fn from_order_key(key: u32) -> f32 {
    f32::from_bits(if key >> 31 == 1 {
        key & !(1 << 31)
    } else {
        !key
    })
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

/// A quantized query, and the state of its scan that the threads share.
struct Query<'a> {
    /// The codes of the even and of the odd dimensions.
    even: &'a [i8],
    odd: &'a [i8],
    /// `Σ codes`, for the offset of 128 in the rows' codes.
    sum: i32,
    scale: f32,
    residual: f32,
    norm: f32,
    k: usize,
    /// The next segment to scan.
    next: AtomicUsize,
    /// The best floor a thread has reached ([`order_key`]): each thread's k-th best
    /// worst possible score is one for every row, so the others prune with it.
    floor: AtomicU32,
}

impl Query<'_> {
    /// Scans segments taken from `next` until none is left.
    fn scan(&self, segments: &[Arc<Segment>]) -> Partial {
        let width = self.even.len();
        let mut lowers = BinaryHeap::with_capacity(self.k + 1);
        let mut candidates = Vec::new();
        let mut floor = f32::NEG_INFINITY;
        let mut highs = [0i32; BLOCK];
        let mut upper = [0.0f32; BLOCK];
        // What the high nibbles' centres (16·h + 7.5) and the codes' offset add.
        let coarse_bias = (7.5 - 128.0) * self.sum as f32;
        let mut low = [0i32; 1];
        while let Some(s) = segments.get(self.next.fetch_add(1, Ordering::Relaxed)) {
            for first in (0..s.ids.len()).step_by(BLOCK) {
                let n = BLOCK.min(s.ids.len() - first);
                let high = &s.high[first * width..(first + n) * width];
                kernel::nibble_dots(high, self.even, self.odd, &mut highs[..n]);
                // Every row's best possible score from its high nibbles in one loop
                // the compiler vectorises; the few that reach the floor take the
                // branch below.
                let rows = first..first + n;
                let (scales, residuals, norms) = (
                    &s.scales[rows.clone()],
                    &s.coarse_residuals[rows.clone()],
                    &s.coarse_norms[rows],
                );
                let bounds = residuals.iter().zip(norms);
                for (((u, &h), &scale), (&r, &m)) in
                    upper.iter_mut().zip(&highs).zip(scales).zip(bounds)
                {
                    *u = (h as f32 * 16.0 + coarse_bias) * scale * self.scale
                        + (self.norm * r + self.residual * m + MARGIN);
                }
                for (j, &coarse) in upper[..n].iter().enumerate() {
                    let i = first + j;
                    if coarse < floor || s.is_dead(i) {
                        continue;
                    }
                    // The int8 score: the low nibbles complete the codes.
                    let (_, row_low) = s.planes(i, width);
                    kernel::nibble_dots(row_low, self.even, self.odd, &mut low);
                    let d = 16 * highs[j] + low[0] - 128 * self.sum;
                    let bound = self.norm * s.residuals[i] + self.residual * s.norms[i] + MARGIN;
                    let up = d as f32 * s.scales[i] * self.scale + bound;
                    if up < floor {
                        continue;
                    }
                    candidates.push(Candidate {
                        id: s.ids[i],
                        upper: up,
                    });
                    let lower = up - 2.0 * bound;
                    if lowers.len() < self.k {
                        lowers.push(Lower(lower));
                    } else if lowers.peek().is_some_and(|top| lower > top.0) {
                        lowers.pop();
                        lowers.push(Lower(lower));
                    }
                    if lowers.len() == self.k {
                        floor = lowers.peek().map_or(floor, |top| floor.max(top.0));
                    }
                }
                if lowers.len() == self.k {
                    let key = self.floor.fetch_max(order_key(floor), Ordering::Relaxed);
                    floor = floor.max(from_order_key(key));
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
