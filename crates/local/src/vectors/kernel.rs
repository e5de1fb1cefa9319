//! The scan's inner loop: int8 dot products of a block of rows with the query, in
//! the widest vector instructions the CPU has.
//!
//! The build targets baseline x86-64 (SSE2), where widening i8 products run at about
//! half what AVX2 does; the same portable loop is compiled again for AVX2 and picked
//! at run time. (AVX-512 was slower here: 56–70 ms against 40 ms per million rows on
//! one core of the machine in BENCHMARKS.md, whose memory delivers ~17 GB/s, i.e.
//! ~22 ms per million rows of 384 codes.)

/// `out[r] = rows[r] · query` for each row of `query.len()` codes.
pub(crate) fn dots(rows: &[i8], query: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(rows: &[i8], query: &[i8], out: &mut [i32]) {
    dots_portable(rows, query, out);
}

#[inline(always)]
fn dots_portable(rows: &[i8], query: &[i8], out: &mut [i32]) {
    if query.is_empty() {
        return;
    }
    for (row, o) in rows.chunks_exact(query.len()).zip(out) {
        *o = dot(row, query);
    }
}

/// int8 dot product, widened to i32 in 32 lanes the compiler vectorises.
#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
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
        let dims = 77;
        let rows: Vec<i8> = (0..dims * 5)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let query: Vec<i8> = (0..dims)
            .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
            .collect();
        let want: Vec<i32> = rows
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
        assert_eq!(got, want);
        let mut portable = vec![0; 5];
        dots_portable(&rows, &query, &mut portable);
        assert_eq!(portable, want);
    }
}
