//! Dense-layer products in bf16 on Intel AMX (Sapphire Rapids and later), with f32
//! accumulation: `out += x·W` where `W` was packed once at load.
//!
//! AMX multiplies 16×32 bf16 tiles at several times the f32 FMA rate. Both operands
//! are rounded to bf16 (8 significant bits); sums stay f32. The encoder uses it for
//! its dense layers only (attention stays f32), where the embeddings keep cosine
//! ≥ 0.9999 to sentence-transformers' f32 (the correctness tests run it wherever the
//! CPU has AMX). [`available`] asks Linux for the tile state once per process;
//! `TROUPE_CPU_BF16=0` keeps everything in f32.
//!
//! Layouts: `x` is converted to bf16 rows padded to a multiple of 32; `W` (K×N,
//! row-major) is packed per 16-column block as K/2 rows of 16 (k, k+1) pairs — the
//! "VNNI" layout a B tile wants. One task computes a 32-row × 32-column block of
//! `out` with four accumulator tiles, two A tiles and two B tiles.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use rayon::prelude::*;

/// Tile edge in rows, and in k per tile (32 bf16 = 64 bytes a row).
const ROWS: usize = 16;
const K_STEP: usize = 32;
/// A task's block: 2×2 tiles.
const BLOCK: usize = 2 * ROWS;

/// Whether the dense layers run on AMX in this process.
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        if std::env::var("TROUPE_CPU_BF16").is_ok_and(|v| v == "0") {
            return false;
        }
        let on = imp::request();
        tracing::debug!(amx = on, "bf16 tiles for the dense layers");
        on
    })
}

/// What [`Packed::matmul_acc`] works in: the bf16 copy of its input, the padded last
/// block of rows. Owned by the caller (one per group of inputs being encoded), not by
/// the thread: a thread that waits inside one product may meanwhile run a task of
/// another group's product.
#[derive(Default)]
pub struct Scratch {
    xs: Vec<u16>,
    tail: Vec<f32>,
}

/// A weight matrix packed for B tiles.
pub struct Packed {
    data: Vec<u16>,
    k: usize,
    n: usize,
}

impl Packed {
    /// Packs row-major `w` (`k × n`); `None` when a dimension is not a multiple of 32.
    pub fn new(w: &[f32], k: usize, n: usize) -> Option<Self> {
        if !k.is_multiple_of(K_STEP) || !n.is_multiple_of(BLOCK) || w.len() != k * n {
            return None;
        }
        let mut data = vec![0u16; k * n];
        for block in 0..n / ROWS {
            for pair in 0..k / 2 {
                for col in 0..ROWS {
                    let at = (block * (k / 2) + pair) * 2 * ROWS + 2 * col;
                    let j = block * ROWS + col;
                    data[at] = bf16(w[2 * pair * n + j]);
                    data[at + 1] = bf16(w[(2 * pair + 1) * n + j]);
                }
            }
        }
        Some(Self { data, k, n })
    }

    /// `out[r] += x[r]·W` for `rows` rows of `x` (`rows × k`) into `out` (`rows × n`).
    pub fn matmul_acc(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch) {
        let Scratch {
            xs,
            tail: tail_block,
        } = scratch;
        let (k, n) = (self.k, self.n);
        assert!(
            x.len() >= rows * k && out.len() >= rows * n,
            "operand out of bounds"
        );
        let padded = rows.div_ceil(BLOCK) * BLOCK;
        xs.clear();
        xs.resize(padded * k, 0);
        xs[..rows * k]
            .par_chunks_mut(k * BLOCK)
            .zip(x[..rows * k].par_chunks(k * BLOCK))
            .for_each(|(d, s)| super::kernels::to_bf16(s, d));
        let full = rows / BLOCK;
        let col_blocks = n / BLOCK;
        // A task: one 32-row block, half its column blocks (two tasks a row block
        // keep both cores busy when the rows are few).
        let halves = [0..col_blocks / 2, col_blocks / 2..col_blocks];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let a = &xs[..];
        (0..full * 2).into_par_iter().for_each(|task| {
            let rb = task / 2;
            let half = halves[task % 2].clone();
            // SAFETY: row block rb of `out` lies inside `rows × n` (asserted above);
            // the two tasks of a row block write disjoint column halves of it.
            unsafe {
                let c = out_ptr.get().add(rb * BLOCK * n);
                imp::blocks(&a[rb * BLOCK * k..], k, &self.data, half, c, n);
            }
        });
        let tail = rows - full * BLOCK;
        if tail > 0 {
            // The last rows through a padded block, so tiles never read past `out`.
            let scratch = tail_block;
            scratch.clear();
            scratch.resize(BLOCK * n, 0.0);
            scratch[..tail * n].copy_from_slice(&out[full * BLOCK * n..rows * n]);
            let c = SendPtr(scratch.as_mut_ptr());
            halves.par_iter().for_each(|half| {
                // SAFETY: the scratch holds 32 rows × n; the halves' columns are disjoint.
                unsafe {
                    imp::blocks(
                        &a[full * BLOCK * k..],
                        k,
                        &self.data,
                        half.clone(),
                        c.get(),
                        n,
                    )
                };
            });
            out[full * BLOCK * n..rows * n].copy_from_slice(&scratch[..tail * n]);
        }
    }
}

use super::gemm::SendPtr;
use super::kernels::bf16;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;

    use super::{BLOCK, K_STEP, ROWS};

    /// Whether the CPU has AMX-TILE and AMX-BF16 and Linux grants this process the
    /// tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
    pub fn request() -> bool {
        // Leaf 7 (checked through leaf 0's maximum), EDX: AMX-BF16 and AMX-TILE.
        let cpu = std::arch::x86_64::__cpuid(0).eax >= 7 && {
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            edx & (1 << 22) != 0 && edx & (1 << 24) != 0
        };
        if !cpu {
            return false;
        }
        let ret: i64;
        // SAFETY: the arch_prctl system call (158) with ARCH_REQ_XCOMP_PERM (0x1023)
        // and XFEATURE_XTILEDATA (18) only changes this process's permitted state.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") 158i64 => ret,
                in("rdi") 0x1023u64,
                in("rsi") 18u64,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    /// The tile configuration: palette 1, eight 16-row × 64-byte tiles.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    fn config() -> Config {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = ROWS as u8;
        }
        Config(c)
    }

    /// `c[32 rows, column blocks cbs] += a[32×k]·B[k × those columns]`: `a` is bf16
    /// rows of `k` (= `lda`) elements, `b` the packed weights, `c` the block row's
    /// first f32 element, rows of `ldc` elements.
    ///
    /// # Safety
    /// `c` must point at 32 rows × `ldc` f32 that nothing else touches meanwhile.
    pub unsafe fn blocks(
        a: &[u16],
        lda: usize,
        b: &[u16],
        cbs: std::ops::Range<usize>,
        c: *mut f32,
        ldc: usize,
    ) {
        let k = lda;
        assert!(a.len() >= BLOCK * lda, "A block out of bounds");
        assert!(cbs.end * BLOCK <= ldc, "column block out of bounds");
        assert!(b.len() >= cbs.end * BLOCK * k, "B block out of bounds");
        let cfg = config();
        // SAFETY: ldtilecfg reads the 64-byte configuration; tilerelease after the
        // last block. Tile registers are not used by compiled code, so their state
        // persists between the asm blocks.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        }
        for cb in cbs {
            // SAFETY: the column block is inside the row (asserted above).
            block(a, lda, b, cb, k, unsafe { c.add(cb * BLOCK) }, ldc);
        }
        // SAFETY: releases this thread's tile state.
        unsafe {
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// One 32×32 block under the loaded configuration.
    #[inline(always)]
    fn block(a: &[u16], lda: usize, b: &[u16], cb: usize, k: usize, c: *mut f32, ldc: usize) {
        let b0 = 2 * cb * (k / 2) * 2 * ROWS;
        let b1 = b0 + (k / 2) * 2 * ROWS;
        let (a_stride, c_stride) = (lda * 2, ldc * 4);
        let a0 = a.as_ptr();
        // SAFETY: `blocks` bounds every A and B tile read (16 rows of 64 bytes at the
        // given strides) and gives `c` as a 32×32 block inside its buffer with row
        // stride `ldc`.
        unsafe {
            let a1 = a0.add(ROWS * lda);
            let (c00, c01) = (c, c.add(ROWS));
            let (c10, c11) = (c.add(ROWS * ldc), c.add(ROWS * ldc + ROWS));
            asm!(
                "tileloadd tmm0, [{c00} + {s}*1]",
                "tileloadd tmm1, [{c01} + {s}*1]",
                "tileloadd tmm2, [{c10} + {s}*1]",
                "tileloadd tmm3, [{c11} + {s}*1]",
                c00 = in(reg) c00, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                s = in(reg) c_stride,
                options(nostack, readonly),
            );
            let mut kk = 0;
            while kk < k {
                let pb0 = b.as_ptr().add(b0 + (kk / 2) * 2 * ROWS);
                let pb1 = b.as_ptr().add(b1 + (kk / 2) * 2 * ROWS);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(kk), a1 = in(reg) a1.add(kk),
                    b0 = in(reg) pb0, b1 = in(reg) pb1,
                    sa = in(reg) a_stride, sb = in(reg) 64usize,
                    options(nostack, readonly),
                );
                kk += K_STEP;
            }
            asm!(
                "tilestored [{c00} + {s}*1], tmm0",
                "tilestored [{c01} + {s}*1], tmm1",
                "tilestored [{c10} + {s}*1], tmm2",
                "tilestored [{c11} + {s}*1], tmm3",
                c00 = in(reg) c00, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                s = in(reg) c_stride,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub fn request() -> bool {
        false
    }

    pub unsafe fn blocks(
        _: &[u16],
        _: usize,
        _: &[u16],
        _: std::ops::Range<usize>,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AMX is never available here")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3F80);
        assert_eq!(bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
        assert_eq!(bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
        assert_eq!(bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert!(f32::from_bits(u32::from(bf16(f32::NAN)) << 16).is_nan());
    }

    #[test]
    fn packing_refuses_shapes_tiles_do_not_cover() {
        assert!(Packed::new(&[0.0; 48 * 64], 48, 64).is_none());
        assert!(Packed::new(&[0.0; 64 * 48], 64, 48).is_none());
        assert!(Packed::new(&[0.0; 64 * 64], 64, 64).is_some());
    }

    /// Against an f64 product of the bf16-rounded operands, with row counts that
    /// exercise full blocks and the padded tail. Runs only where the CPU has AMX.
    #[test]
    fn tile_products_match_a_reference_of_the_rounded_operands() {
        if !available() {
            eprintln!("no AMX on this CPU: the bf16 path is not used here");
            return;
        }
        let (k, n) = (96, 64);
        let w = values(k * n, 7);
        let packed = Packed::new(&w, k, n).expect("tile-aligned");
        let round = |v: f32| f32::from_bits(u32::from(bf16(v)) << 16);
        for rows in [1, 16, 32, 45, 64, 70] {
            let x = values(rows * k, rows as u32);
            let start = values(rows * n, 99);
            let mut out = start.clone();
            packed.matmul_acc(&x, rows, &mut out, &mut Scratch::default());
            for r in 0..rows {
                for j in 0..n {
                    let want: f64 = f64::from(start[r * n + j])
                        + (0..k)
                            .map(|p| {
                                f64::from(round(x[r * k + p])) * f64::from(round(w[p * n + j]))
                            })
                            .sum::<f64>();
                    let got = f64::from(out[r * n + j]);
                    assert!(
                        (got - want).abs() < 1e-4,
                        "rows {rows}, ({r}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
