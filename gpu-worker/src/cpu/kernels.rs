//! The element-wise parts of the encoder — LayerNorm, erf-GELU, softmax, pooling —
//! written as plain loops over rows that the compiler vectorises. Each public kernel
//! runs its loop through [`pulp`]'s dispatch, which compiles it for the widest
//! instruction set the CPU has (AVX-512 or AVX2 + FMA on x86-64; the workspace turns
//! on pulp's `x86-v4`); the loops are `#[inline(always)]` so that they are compiled
//! inside that context.
//!
//! `exp` and `erf` are branch-free polynomial approximations (so they vectorise),
//! accurate to a few units in the last place of `f32` over the ranges used here.

/// `pub(crate) fn $name(args)` running `$kernel(args)` compiled for the best SIMD level
/// this CPU supports. (A plain struct implements `WithSimd` so that the kernel is
/// inlined into pulp's target-feature function; a closure there is not reliably.)
macro_rules! vectorised {
    ($(#[$doc:meta])* fn $name:ident => $kernel:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub(crate) fn $name<'a>($($arg: $ty),*) {
            struct Op<'a> {
                $($arg: $ty,)*
                _life: std::marker::PhantomData<&'a ()>,
            }
            impl pulp::WithSimd for Op<'_> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) {
                    $kernel($(self.$arg),*)
                }
            }
            pulp::Arch::new().dispatch(Op {
                $($arg,)*
                _life: std::marker::PhantomData,
            })
        }
    };
}

vectorised!(
    /// BERT's GELU, `x·Φ(x)` with the exact (erf) normal CDF, in place.
    fn gelu => gelu_loop(xs: &'a mut [f32])
);
vectorised!(
    /// Sets every `bias.len()`-wide row of `xs` to `bias`.
    fn fill_rows => fill_rows_loop(xs: &'a mut [f32], bias: &'a [f32])
);
vectorised!(
    /// Sets each `bias.len()`-wide row of `xs` to that row of `ys` plus `bias`.
    fn sum_rows => sum_rows_loop(xs: &'a mut [f32], ys: &'a [f32], bias: &'a [f32])
);
vectorised!(
    /// LayerNorm of each `gamma.len()`-wide row of `xs`, in place.
    fn layer_norm => layer_norm_loop(xs: &'a mut [f32], gamma: &'a [f32], beta: &'a [f32], eps: f32)
);
vectorised!(
    /// Softmax of each `width`-wide row of `xs`, in place.
    fn softmax_rows => softmax_rows_loop(xs: &'a mut [f32], width: usize)
);
vectorised!(
    /// `dst[i]` = `src[i]` rounded to the nearest bf16 (ties to even; NaN stays NaN).
    fn to_bf16 => to_bf16_loop(src: &'a [f32], dst: &'a mut [u16])
);

/// `e^x` for `x ≤ 88`; inputs below -87 give a tiny positive number instead of a
/// denormal (softmax only ever asks for `x ≤ 0`).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r for |r| ≤ ln2/2: relative error below 2e-7.
    let p = 1.0f32 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n built from its exponent bits: n + 127 + 2^23 holds n + 127 in its low
    // mantissa bits (integer arithmetic only, so this stays vectorised).
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xff;
    p * f32::from_bits(biased << 23)
}

/// The error function: a rational approximation `x·P(x²)/Q(x²)` on [-4, 4] (beyond
/// that erf is ±1 in `f32`), absolute error below 1e-6.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 + -2.101_024e-6;
    let p = p * x2 + -5.692_506_4e-5;
    let p = p * x2 + -7.349_906e-4;
    let p = p * x2 + -2.954_6e-3;
    let p = p * x2 + -1.609_603_3e-2;
    let q = -1.456_607_2e-5f32;
    let q = q * x2 + -2.133_740_6e-4;
    let q = q * x2 + -1.682_827e-3;
    let q = q * x2 + -7.373_329e-3;
    let q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// BERT's GELU, `x·Φ(x)` with the exact (erf) normal CDF, in place.
#[inline(always)]
fn gelu_loop(xs: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * FRAC_1_SQRT_2));
    }
}

/// See [`to_bf16`]: branch-free, so it vectorises.
#[inline(always)]
fn to_bf16_loop(src: &[f32], dst: &mut [u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = bf16(x);
    }
}

/// `x` rounded to the nearest bf16 (ties to even); NaN stays a (quiet) NaN.
#[inline(always)]
pub(crate) fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let nan = (bits & 0x7FFF_FFFF) > 0x7F80_0000;
    (if nan { (bits >> 16) | 0x40 } else { rounded }) as u16
}

/// Lanes a reduction keeps apart so it vectorises (floating-point sums are not
/// reassociated by the compiler on its own).
const LANES: usize = 16;

/// The sum of `xs`.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder().iter().sum::<f32>();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The sum of `(x - mean)²` over `xs`.
#[inline(always)]
fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum::<f32>();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += (x - mean) * (x - mean);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The largest of `xs` (-∞ when empty).
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter().fold(rest, |m, &x| m.max(x))
}

#[inline(always)]
fn fill_rows_loop(xs: &mut [f32], bias: &[f32]) {
    for row in xs.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

#[inline(always)]
fn sum_rows_loop(xs: &mut [f32], ys: &[f32], bias: &[f32]) {
    let h = bias.len();
    for (row, src) in xs.chunks_exact_mut(h).zip(ys.chunks_exact(h)) {
        for ((x, y), b) in row.iter_mut().zip(src).zip(bias) {
            *x = y + b;
        }
    }
}

/// LayerNorm of each `gamma.len()`-wide row of `xs`, in place.
#[inline(always)]
fn layer_norm_loop(xs: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    for row in xs.chunks_exact_mut(h) {
        let mean = sum(row) / h as f32;
        let var = sum_sq_dev(row, mean) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// Softmax of each `width`-wide row of `xs`, in place.
#[inline(always)]
fn softmax_rows_loop(xs: &mut [f32], width: usize) {
    for row in xs.chunks_exact_mut(width) {
        let max = max(row);
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// The mean of `rows` (each `out.len()` wide), scaled to unit length, into `out`.
pub(crate) fn mean_unit(rows: &[f32], out: &mut [f32]) {
    let h = out.len();
    out.fill(0.0);
    let n = rows.len() / h;
    for row in rows.chunks_exact(h) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    let n = n.max(1) as f32;
    for o in out.iter_mut() {
        *o /= n;
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for o in out.iter_mut() {
        *o /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 from its Maclaurin series (exact enough for |x| ≤ 4).
    fn erf64(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_1e_6_everywhere() {
        let mut worst: f64 = 0.0;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let want = if x.abs() > 5.0 {
                x.signum() as f64
            } else {
                erf64(x as f64)
            };
            worst = worst.max((erf(x) as f64 - want).abs());
        }
        assert!(worst < 1e-6, "max |error| {worst}");
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst: f64 = 0.0;
        for i in -87_000..=20_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
    }

    #[test]
    fn softmax_and_layer_norm_match_their_definitions() {
        let mut xs = vec![1.0, 2.0, 3.0, -1000.0, 0.5, 0.5, 0.5, 0.5];
        softmax_rows(&mut xs, 4);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f64 = e.iter().sum();
        for (g, w) in xs.iter().zip(e.iter().map(|x| x / s)) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!(xs[3] < 1e-30, "{}", xs[3]);
        assert!(xs[4..].iter().all(|&x| (x - 0.25).abs() < 1e-7));

        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm_loop(&mut row, &[1.0, 1.0, 2.0, 2.0], &[0.0, 0.0, 0.0, 1.0], 0.0);
        let inv = 1.0 / 1.25f32.sqrt();
        let want = [
            -1.5 * inv,
            -0.5 * inv,
            2.0 * 0.5 * inv,
            2.0 * 1.5 * inv + 1.0,
        ];
        for (g, w) in row.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
