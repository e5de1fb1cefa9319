//! The element-wise parts of the encoder — LayerNorm, erf-GELU, softmax, pooling —
//! written as plain loops over rows that the compiler vectorises; [`simd`] compiles
//! them for the widest instruction set the CPU has (AVX2 + FMA on x86-64 where present).
//!
//! `exp` and `erf` are branch-free polynomial approximations (so they vectorise),
//! accurate to a few units in the last place of `f32` over the ranges used here.

/// Runs `f` compiled for the best SIMD level this CPU supports.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || f(),
    )
}

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
    let p = p.mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// The error function: a rational approximation `x·P(x²)/Q(x²)` on [-4, 4] (beyond
/// that erf is ±1 in `f32`), absolute error below 1e-6.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p.mul_add(x2, 2.770_681_4e-8);
    let p = p.mul_add(x2, -2.101_024e-6);
    let p = p.mul_add(x2, -5.692_506_4e-5);
    let p = p.mul_add(x2, -7.349_906e-4);
    let p = p.mul_add(x2, -2.954_6e-3);
    let p = p.mul_add(x2, -1.609_603_3e-2);
    let q = -1.456_607_2e-5f32;
    let q = q.mul_add(x2, -2.133_740_6e-4);
    let q = q.mul_add(x2, -1.682_827e-3);
    let q = q.mul_add(x2, -7.373_329e-3);
    let q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

/// BERT's GELU, `x·Φ(x)` with the exact (erf) normal CDF, in place.
#[inline(always)]
pub(crate) fn gelu(xs: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * FRAC_1_SQRT_2));
    }
}

/// Adds `bias` to every `bias.len()`-wide row of `xs`.
#[inline(always)]
pub(crate) fn add_bias(xs: &mut [f32], bias: &[f32]) {
    for row in xs.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

/// LayerNorm of each `gamma.len()`-wide row of `xs`, in place.
#[inline(always)]
pub(crate) fn layer_norm(xs: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    for row in xs.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// Softmax of each `width`-wide row of `xs`, in place.
#[inline(always)]
pub(crate) fn softmax_rows(xs: &mut [f32], width: usize) {
    for row in xs.chunks_exact_mut(width) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = exp(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
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
            let want = if x.abs() > 5.0 { x.signum() as f64 } else { erf64(x as f64) };
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
        simd(|| softmax_rows(&mut xs, 4));
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f64 = e.iter().sum();
        for (g, w) in xs.iter().zip(e.iter().map(|x| x / s)) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!(xs[3] < 1e-30, "{}", xs[3]);
        assert!(xs[4..].iter().all(|&x| (x - 0.25).abs() < 1e-7));

        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut row, &[1.0, 1.0, 2.0, 2.0], &[0.0, 0.0, 0.0, 1.0], 0.0);
        let inv = 1.0 / 1.25f32.sqrt();
        let want = [-1.5 * inv, -0.5 * inv, 2.0 * 0.5 * inv, 2.0 * 1.5 * inv + 1.0];
        for (g, w) in row.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
