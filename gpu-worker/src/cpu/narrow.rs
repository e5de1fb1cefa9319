//! `out += x·W` in f32 for products of few rows (one short input, or a few), with
//! AVX-512 FMAs from weights packed once at load into panels of 64 output columns
//! (`k × 64` each, contiguous). At a handful of rows a product is bound by reading the
//! weights, not by multiplying them: each step of a task reads 256 consecutive bytes
//! of its panel, fetched 16 steps ahead, and six rows × 64 columns of sums stay in
//! registers. At ~18 rows the encoder runs 1.6× the `gemm` crate's rate (which packs
//! the weights on every call and reads them a row of `W` apart); from ~48 rows on the
//! `gemm` crate is as fast or faster (BENCHMARKS.md, "Against the CPU peers, run 3").
#![allow(unsafe_code)]

use std::sync::OnceLock;

use rayon::prelude::*;

use super::gemm::SendPtr;

/// Output columns of a panel: four 16-wide registers.
const COLS: usize = 64;
/// Rows up to which the encoder multiplies through [`Panels`].
pub const MAX_ROWS: usize = 48;

/// Whether this CPU runs [`Panels`].
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(imp::detect)
}

/// A weight matrix packed in column panels.
pub struct Panels {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Panels {
    /// Packs row-major `w` (`k × n`); `None` when the CPU lacks AVX-512 or `n` is not
    /// a multiple of 64.
    pub fn new(w: &[f32], k: usize, n: usize) -> Option<Self> {
        if !available() || n == 0 || !n.is_multiple_of(COLS) || w.len() != k * n {
            return None;
        }
        let mut data = Vec::with_capacity(k * n);
        for panel in 0..n / COLS {
            for row in w.chunks_exact(n) {
                data.extend_from_slice(&row[panel * COLS..(panel + 1) * COLS]);
            }
        }
        Some(Self { data, k, n })
    }

    /// `out[r] += x[r]·W` for `rows` rows of `x` (`rows × k`) into `out` (`rows × n`),
    /// the panels spread over rayon's threads.
    pub fn matmul_acc(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        assert!(
            x.len() >= rows * k && out.len() >= rows * n,
            "operand out of bounds"
        );
        let out = SendPtr(out.as_mut_ptr());
        (0..n / COLS).into_par_iter().for_each(|panel| {
            let w = &self.data[panel * k * COLS..(panel + 1) * k * COLS];
            // SAFETY: `new` checked the CPU; the extents are asserted above; each
            // task writes only its own 64 columns of `out`.
            unsafe { imp::panel(x, rows, k, w, n, panel * COLS, out.get()) };
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// Panel rows fetched ahead of the one being multiplied.
    const AHEAD: usize = 16;

    pub fn detect() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Columns `c0..c0 + 64` of `out` for every row, six rows at a time, from the
    /// panel `w` (`k × 64`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `rows × k`, `w` `k × 64`; `out` points at
    /// `rows × n` f32 whose columns `c0..c0 + 64` nothing else touches meanwhile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn panel(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[f32],
        n: usize,
        c0: usize,
        out: *mut f32,
    ) {
        assert!(
            w.len() >= k * 64 && x.len() >= rows * k,
            "panel out of bounds"
        );
        let mut r = 0;
        while r < rows {
            // SAFETY: as the caller promises, for rows r.. of the panel.
            unsafe {
                match rows - r {
                    1 => tile::<1>(x, r, k, w, n, c0, out),
                    2 => tile::<2>(x, r, k, w, n, c0, out),
                    3 => tile::<3>(x, r, k, w, n, c0, out),
                    4 => tile::<4>(x, r, k, w, n, c0, out),
                    5 => tile::<5>(x, r, k, w, n, c0, out),
                    _ => tile::<6>(x, r, k, w, n, c0, out),
                }
            }
            r += 6;
        }
    }

    /// Rows `r..r + H`: 4·H sums in registers over all of `k`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const H: usize>(
        x: &[f32],
        r: usize,
        k: usize,
        w: &[f32],
        n: usize,
        c0: usize,
        out: *mut f32,
    ) {
        let mut acc: [[__m512; 4]; H] = [[_mm512_setzero_ps(); 4]; H];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for kk in 0..k {
            // SAFETY: kk < k, so the panel's row kk (64 f32) lies in `w`; row r + i <
            // rows, so x[(r + i)·k + kk] lies in `x` (asserted by `panel`).
            unsafe {
                let row = wp.add(kk * 64);
                if kk + AHEAD < k {
                    let next = row.add(AHEAD * 64).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(next);
                    _mm_prefetch::<_MM_HINT_T0>(next.add(64));
                    _mm_prefetch::<_MM_HINT_T0>(next.add(128));
                    _mm_prefetch::<_MM_HINT_T0>(next.add(192));
                }
                let ws = [
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.add(16)),
                    _mm512_loadu_ps(row.add(32)),
                    _mm512_loadu_ps(row.add(48)),
                ];
                for (i, sums) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xp.add((r + i) * k + kk));
                    for (s, wv) in sums.iter_mut().zip(ws) {
                        *s = _mm512_fmadd_ps(xv, wv, *s);
                    }
                }
            }
        }
        for (i, sums) in acc.iter().enumerate() {
            for (j, s) in sums.iter().enumerate() {
                // SAFETY: row r + i, columns c0 + 16j.. of `out`, as promised.
                unsafe {
                    let o = out.add((r + i) * n + c0 + 16 * j);
                    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), *s));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub fn detect() -> bool {
        false
    }

    pub unsafe fn panel(_: &[f32], _: usize, _: usize, _: &[f32], _: usize, _: usize, _: *mut f32) {
        unreachable!("Panels::new refuses every matrix here")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 product, for row counts around a tile of six and widths of one
    /// and several panels, accumulating onto what `out` held.
    #[test]
    fn panel_products_match_the_definition() {
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 25.0;
        assert!(Panels::new(&[0.0; 5 * 48], 5, 48).is_none(), "48 columns");
        for (k, n) in [(5, 64), (48, 192)] {
            let w: Vec<f32> = (0..k * n).map(|i| value(i + 7)).collect();
            let Some(panels) = Panels::new(&w, k, n) else {
                eprintln!("no AVX-512 on this CPU: the gemm crate takes every product");
                return;
            };
            for rows in [1, 2, 5, 6, 7, 13] {
                let x: Vec<f32> = (0..rows * k).map(value).collect();
                let start: Vec<f32> = (0..rows * n).map(|i| value(i + 3)).collect();
                let mut out = start.clone();
                panels.matmul_acc(&x, rows, &mut out);
                for r in 0..rows {
                    for c in 0..n {
                        let want = f64::from(start[r * n + c])
                            + (0..k)
                                .map(|p| f64::from(x[r * k + p]) * f64::from(w[p * n + c]))
                                .sum::<f64>();
                        let got = f64::from(out[r * n + c]);
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{rows}×{k}×{n} ({r}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
