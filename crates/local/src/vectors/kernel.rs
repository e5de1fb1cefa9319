//! The scan's inner loop: int8 dot products of a block of rows with the query, in
//! the widest instructions the CPU has, picked at run time (the build targets
//! baseline x86-64).
//!
//! Rows are stored offset by 128 (`u8`, code + 128) because AVX-512 VNNI's
//! `vpdpbusd` multiplies unsigned by signed bytes, 64 at a time; `Σ (c+128)·q =
//! c·q + 128·Σq`, so one correction per query gives the signed product back. Without
//! VNNI the portable loop runs, compiled again for AVX2 where there is AVX2.

/// `out[r] = (rows[r] − 128) · query` for each row of `query.len()` codes.
pub(crate) fn dots(rows: &[u8], query: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked on the line above;
            // BW implies F).
            #[allow(unsafe_code)]
            unsafe {
                dots_vnni(rows, query, out)
            };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked on the line above).
            #[allow(unsafe_code)]
            unsafe {
                dots_avx2(rows, query, out)
            };
            return;
        }
    }
    dots_portable(rows, query, out);
}

/// `128 · Σ query`, what the offset adds to every product.
fn bias(query: &[i8]) -> i32 {
    128 * query.iter().map(|&x| i32::from(x)).sum::<i32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dots_vnni(rows: &[u8], query: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::{
        _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_reduce_add_epi32, _mm512_setzero_si512,
    };
    let dims = query.len();
    if dims == 0 {
        return;
    }
    let full = dims / 64 * 64;
    let bias = bias(query);
    for (row, o) in rows.chunks_exact(dims).zip(out) {
        let mut acc = _mm512_setzero_si512();
        for i in (0..full).step_by(64) {
            let (r, q) = (&row[i..i + 64], &query[i..i + 64]);
            // SAFETY: `r` and `q` are 64 bytes each; unaligned loads.
            #[allow(unsafe_code)]
            let (r, q) = unsafe {
                (
                    _mm512_loadu_si512(r.as_ptr().cast()),
                    _mm512_loadu_si512(q.as_ptr().cast()),
                )
            };
            acc = _mm512_dpbusd_epi32(acc, r, q);
        }
        let tail: i32 = row[full..]
            .iter()
            .zip(&query[full..])
            .map(|(&r, &q)| i32::from(r) * i32::from(q))
            .sum();
        *o = _mm512_reduce_add_epi32(acc) + tail - bias;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(rows: &[u8], query: &[i8], out: &mut [i32]) {
    dots_portable(rows, query, out);
}

#[inline(always)]
fn dots_portable(rows: &[u8], query: &[i8], out: &mut [i32]) {
    if query.is_empty() {
        return;
    }
    let bias = bias(query);
    for (row, o) in rows.chunks_exact(query.len()).zip(out) {
        *o = dot(row, query) - bias;
    }
}

/// `Σ row·query`, widened to i32 in 32 lanes the compiler vectorises.
#[inline(always)]
fn dot(a: &[u8], b: &[i8]) -> i32 {
    const LANES: usize = 32;
    let mut acc = [0i32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_agrees_with_plain_arithmetic() {
        for dims in [1, 63, 64, 77, 384] {
            let codes: Vec<i8> = (0..dims * 5)
                .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
                .collect();
            let rows: Vec<u8> = codes.iter().map(|&c| (i32::from(c) + 128) as u8).collect();
            let query: Vec<i8> = (0..dims)
                .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
                .collect();
            let want: Vec<i32> = codes
                .chunks_exact(dims)
                .map(|r| {
                    r.iter()
                        .zip(&query)
                        .map(|(a, b)| i32::from(*a) * i32::from(*b))
                        .sum()
                })
                .collect();
            let mut got = vec![0; 5];
            dots(&rows, &query, &mut got);
            assert_eq!(got, want, "{dims}");
            let mut portable = vec![0; 5];
            dots_portable(&rows, &query, &mut portable);
            assert_eq!(portable, want, "{dims}");
        }
    }
}
