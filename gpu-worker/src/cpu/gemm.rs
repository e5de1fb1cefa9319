//! Row-major matrix products through the `gemm` crate, behind a safe interface that
//! checks every operand's extent before the raw call.
#![allow(unsafe_code)]

use gemm::Parallelism;

/// An output buffer's pointer handed to rayon tasks that each write a disjoint part
/// of it (a row block, a column panel): the callers' `SAFETY` comments say why theirs
/// are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only ever dereferenced by tasks writing disjoint parts of one live buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A row-major view of `rows × cols` elements of `data`, `stride` apart between rows
/// and `step` apart within a row (a transposed view swaps the two).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The elements (the view starts at the first).
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements between the starts of consecutive rows.
    pub stride: usize,
    /// Elements between consecutive columns of a row.
    pub step: usize,
}

impl<'a> View<'a> {
    /// A contiguous `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            stride: cols,
            step: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            stride: self.step,
            step: self.stride,
        }
    }

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.stride + (self.cols - 1) * self.step < self.data.len()
    }
}

/// `dst = (dst if accumulate) + a × b`, where `dst` is `a.rows × b.cols` with rows
/// `dst_stride` apart. Spreads over rayon's threads when `threads`.
///
/// # Panics
///
/// When the shapes disagree or a view reaches past its slice (a caller's bug).
pub fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(a.fits() && b.fits(), "operand out of bounds");
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_stride + n <= dst.len(),
        "destination out of bounds"
    );
    assert!(n <= dst_stride, "destination rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_stride..r * dst_stride + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if threads {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let s = |x: usize| x as isize;
    // SAFETY: the asserts above keep every index gemm computes, (r, c) ↦ r·rs + c·cs
    // for r < rows and c < cols, inside the slice behind each pointer; `dst` is a
    // unique borrow and cannot alias `a` or `b`, and its rows do not overlap.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(dst_stride),
            accumulate,
            a.data.as_ptr(),
            s(a.step),
            s(a.stride),
            b.data.as_ptr(),
            s(b.step),
            s(b.stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<'_>, b: View<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut acc = 0.0;
                for p in 0..a.cols {
                    acc += a.data[i * a.stride + p * a.step] * b.data[p * b.stride + j * b.step];
                }
                out[i * b.cols + j] = acc;
            }
        }
        out
    }

    #[test]
    fn strided_and_transposed_products_match_the_definition() {
        let data: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        // a: 7×5 rows 12 apart; b: the transpose of a 9×5 block rows 11 apart.
        let a = View {
            data: &data,
            rows: 7,
            cols: 5,
            stride: 12,
            step: 1,
        };
        let b = View {
            data: &data[100..],
            rows: 9,
            cols: 5,
            stride: 11,
            step: 1,
        }
        .t();
        let want = naive(a, b);
        for threads in [false, true] {
            let mut got = vec![1.0; 7 * 9];
            matmul(&mut got, 9, a, b, false, threads);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{g} vs {w}");
            }
            // Accumulating adds onto what is there.
            matmul(&mut got, 9, a, b, true, threads);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-4, "{g} vs {}", 2.0 * w);
            }
        }
    }

    #[test]
    #[should_panic(expected = "operand out of bounds")]
    fn a_view_past_its_slice_is_refused() {
        let data = vec![0.0; 10];
        let a = View::dense(&data, 3, 4);
        let mut dst = vec![0.0; 12];
        matmul(&mut dst, 4, a, View::dense(&data, 4, 1), false, false);
    }
}
