//! The scan's inner loop: dot products of a block of rows' 4-bit codes with the
//! query's int8 codes, in the widest instructions the CPU has, picked at run time (the
//! build targets baseline x86-64).
//!
//! A row's int8 codes, offset by 128 (`u8`, code + 128), are stored as two planes of
//! nibbles, two dimensions a byte: dimension `2j` in the low nibble of byte `j`,
//! `2j + 1` in the high one. The query is split the same way into its even and odd
//! dimensions, so one byte of a row meets two query codes. A nibble is unsigned and a
//! query code signed, which is what AVX-512 VNNI's `vpdpbusd` multiplies, 64 bytes at
//! a time, with no correction. Without VNNI the portable loop runs, compiled again for
//! AVX2 where there is AVX2.

/// `out[r] = Σ_j (row_r[j] & 15)·even[j] + (row_r[j] >> 4)·odd[j]` for each row of
/// `even.len()` bytes in `rows` (`odd` is as long as `even`).
pub(crate) fn nibble_dots(rows: &[u8], even: &[i8], odd: &[i8], out: &mut [i32]) {
    debug_assert_eq!(even.len(), odd.len());
    if even.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked on the line above;
            // BW implies F).
            #[allow(unsafe_code)]
            unsafe {
                dots_vnni(rows, even, odd, out)
            };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked on the line above).
            #[allow(unsafe_code)]
            unsafe {
                dots_avx2(rows, even, odd, out)
            };
            return;
        }
    }
    dots_portable(rows, even, odd, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dots_vnni(rows: &[u8], even: &[i8], odd: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::{
        _mm512_and_si512, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_reduce_add_epi32,
        _mm512_set1_epi8, _mm512_setzero_si512, _mm512_srli_epi16,
    };
    let width = even.len();
    let full = width / 64 * 64;
    let mask = _mm512_set1_epi8(0x0f);
    for (row, o) in rows.chunks_exact(width).zip(out) {
        let mut acc = _mm512_setzero_si512();
        for i in (0..full).step_by(64) {
            let (r, e, d) = (&row[i..i + 64], &even[i..i + 64], &odd[i..i + 64]);
            // SAFETY: `r`, `e` and `d` are 64 bytes each; unaligned loads.
            #[allow(unsafe_code)]
            let (r, e, d) = unsafe {
                (
                    _mm512_loadu_si512(r.as_ptr().cast()),
                    _mm512_loadu_si512(e.as_ptr().cast()),
                    _mm512_loadu_si512(d.as_ptr().cast()),
                )
            };
            let low = _mm512_and_si512(r, mask);
            let high = _mm512_and_si512(_mm512_srli_epi16::<4>(r), mask);
            acc = _mm512_dpbusd_epi32(acc, low, e);
            acc = _mm512_dpbusd_epi32(acc, high, d);
        }
        *o = _mm512_reduce_add_epi32(acc) + dot(&row[full..], &even[full..], &odd[full..]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(rows: &[u8], even: &[i8], odd: &[i8], out: &mut [i32]) {
    dots_portable(rows, even, odd, out);
}

#[inline(always)]
fn dots_portable(rows: &[u8], even: &[i8], odd: &[i8], out: &mut [i32]) {
    for (row, o) in rows.chunks_exact(even.len()).zip(out) {
        *o = dot(row, even, odd);
    }
}

/// One row's nibbles with the query, widened to i32 in 32 lanes the compiler
/// vectorises.
#[inline(always)]
fn dot(row: &[u8], even: &[i8], odd: &[i8]) -> i32 {
    const LANES: usize = 32;
    let term =
        |x: u8, e: i8, d: i8| i32::from(x & 15) * i32::from(e) + i32::from(x >> 4) * i32::from(d);
    let mut acc = [0i32; LANES];
    let (cr, ce, cd) = (
        row.chunks_exact(LANES),
        even.chunks_exact(LANES),
        odd.chunks_exact(LANES),
    );
    let tail: i32 = cr
        .remainder()
        .iter()
        .zip(ce.remainder().iter().zip(cd.remainder()))
        .map(|(&x, (&e, &d))| term(x, e, d))
        .sum();
    for (x, (e, d)) in cr.zip(ce.zip(cd)) {
        for i in 0..LANES {
            acc[i] += term(x[i], e[i], d[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_agrees_with_plain_arithmetic() {
        for width in [1, 31, 63, 64, 77, 192, 200] {
            let rows: Vec<u8> = (0..width * 5).map(|i| (i * 37 % 256) as u8).collect();
            let even: Vec<i8> = (0..width)
                .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
                .collect();
            let odd: Vec<i8> = (0..width)
                .map(|i| ((i * 53 % 255) as i32 - 127) as i8)
                .collect();
            let want: Vec<i32> = rows
                .chunks_exact(width)
                .map(|r| {
                    r.iter()
                        .zip(even.iter().zip(&odd))
                        .map(|(&x, (&e, &d))| {
                            i32::from(x % 16) * i32::from(e) + i32::from(x / 16) * i32::from(d)
                        })
                        .sum()
                })
                .collect();
            let mut got = vec![0; 5];
            nibble_dots(&rows, &even, &odd, &mut got);
            assert_eq!(got, want, "{width}");
            let mut portable = vec![0; 5];
            dots_portable(&rows, &even, &odd, &mut portable);
            assert_eq!(portable, want, "{width}");
        }
    }
}
