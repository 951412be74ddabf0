//! Matrix products on the `gemm` crate (what burn-flex uses), with its AVX-512 and AVX2 kernels
//! chosen at run time from the processor, on rayon's threads.
//!
//! Measured on the model's shapes (BENCHMARKS.md), it beat OpenBLAS both with its own threads and
//! split across rayon, and it does not depend on OpenBLAS recognising the processor: OpenBLAS
//! 0.3.21 runs its generic SSE3 kernels on processors newer than it, at a fifth of the speed.

use std::mem::MaybeUninit;

use gemm_common::Parallelism;

use super::Float;

/// What runs the products on this processor, for the start-up banner.
pub fn engine() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "gemm crate, AVX-512";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "gemm crate, AVX2";
        }
    }
    "gemm crate"
}

/// Products below this many multiply-adds run on the calling thread: handing them out costs
/// more than it gains.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A row-major matrix read in place: `rows × cols` values of `values`, `ld` apart from row to
/// row, or its transpose when `transposed`.
#[derive(Clone, Copy)]
pub struct View<'a, E> {
    pub values: &'a [E],
    pub ld: usize,
    pub transposed: bool,
}

impl<'a, E> View<'a, E> {
    /// The matrix stored row-major in `values` with rows `ld` apart.
    pub fn rows(values: &'a [E], ld: usize) -> Self {
        Self {
            values,
            ld,
            transposed: false,
        }
    }

    /// The transpose of the matrix stored row-major in `values` with rows `ld` apart.
    pub fn transposed(values: &'a [E], ld: usize) -> Self {
        Self {
            values,
            ld,
            transposed: true,
        }
    }

    /// Column and row strides of the logical (possibly transposed) matrix.
    fn strides(&self) -> (isize, isize) {
        let ld = self.ld as isize;
        if self.transposed { (ld, 1) } else { (1, ld) }
    }

    /// Checks that the logical `rows × cols` matrix lies inside `values`.
    fn check(&self, rows: usize, cols: usize) {
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        if rows > 0 && cols > 0 {
            assert!(self.ld >= stored_cols);
            assert!(self.values.len() >= (stored_rows - 1) * self.ld + stored_cols);
        }
    }
}

/// How a product treats its output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destination {
    /// `c = a·b`: `c` may be uninitialized; every element is written.
    Overwrite,
    /// `c += a·b`: `c` must be initialized.
    Accumulate,
}

/// `c` (`m × n`, row-major, contiguous) `= a·b` or `+= a·b`, for `a` `m × k` and `b` `k × n`.
///
/// With [`Destination::Overwrite`] every element of `c` is written and none is read, so `c` may start
/// uninitialized: the gemm crate zeroes `alpha` when `read_dst` is false (gemm-common 0.19
/// `gemm_basic_generic`), writes zeros for `k = 0`, and its microkernels do not load the
/// destination when `alpha` is zero. That is its code, not its documented contract (which says
/// only `dst := alpha·dst + beta·lhs·rhs`), so `tests::overwrite_writes_every_element_and_reads_none`
/// pins it for the shapes the model uses.
pub fn matmul<E: Float>(
    (m, n, k): (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    into: Destination,
) {
    a.check(m, k);
    b.check(k, n);
    assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if m * n * k >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let ((a_cs, a_rs), (b_cs, b_rs)) = (a.strides(), b.strides());
    // gemm's kernels want a column-major destination; `c` is row-major, so they compute
    // `cᵀ = bᵀ·aᵀ` (what the `gemm` facade crate does before calling them).
    // SAFETY: `check` bounds both operands inside their slices, `c` is exactly `m × n`, and
    // `c` does not alias `a` or `b` (it is borrowed mutably). With `read_dst` false gemm writes
    // every element of `c` without reading it (see above), so `c` may start uninitialized;
    // with it true the caller initialized `c`.
    unsafe {
        E::gemm()(
            n,
            m,
            k,
            c.as_mut_ptr().cast::<E>(),
            n as isize,
            1,
            into == Destination::Accumulate,
            b.values.as_ptr(),
            b_rs,
            b_cs,
            a.values.as_ptr(),
            a_rs,
            a_cs,
            E::ONE,
            E::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + seed) * 0.61).sin()).collect()
    }

    /// `a·b` in plain loops.
    fn reference((m, n, k): (usize, usize, usize), a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// The gemm behaviour `matmul`'s SAFETY comment relies on: with `Overwrite`, a destination
    /// full of NaN comes out holding exactly the product (NaN would survive or spread if gemm
    /// read it), for the small-product path (m·n <= 16·16), the blocked one, the parallel one
    /// (m·n·k >= 2^18 on rayon's pool), odd sizes, and k = 0 (zeros).
    #[test]
    fn overwrite_writes_every_element_and_reads_none() {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (16, 16, 4),
            (17, 33, 9),
            (64, 128, 0),
            (130, 70, 65),
            (300, 257, 129),
            (2048, 128, 64),
        ];
        for shape @ (m, n, k) in shapes {
            let (a, b) = (values(m * k, 1.0), values(k * n, 2.0));
            let want = reference(shape, &a, &b);
            for (got, tolerance, what) in [
                (overwrite::<f32>(shape, &a, &b), 1e-4, "f32"),
                (overwrite::<f64>(shape, &a, &b), 1e-10, "f64"),
            ] {
                let tolerance = tolerance * (k as f64).max(1.0);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= tolerance,
                        "{shape:?} {what}: element {i} is {g}, the product is {w}"
                    );
                }
            }
        }
    }

    /// `a·b` by [`matmul`] in `E` with [`Destination::Overwrite`] into a destination full of NaN.
    fn overwrite<E: Float>(shape: (usize, usize, usize), a: &[f64], b: &[f64]) -> Vec<f64> {
        let (m, n, k) = shape;
        let to_e = |v: &[f64]| -> Vec<E> { v.iter().map(|&x| E::from_f64(x)).collect() };
        let (a, b) = (to_e(a), to_e(b));
        let mut c = vec![MaybeUninit::new(E::from_f64(f64::NAN)); m * n];
        matmul(
            shape,
            View::rows(&a, k),
            View::rows(&b, n),
            &mut c,
            Destination::Overwrite,
        );
        // SAFETY: initialized above (with NaN).
        c.iter()
            .map(|v| unsafe { v.assume_init() }.to_f64())
            .collect()
    }

    #[test]
    fn accumulate_adds_to_the_destination_and_transposed_views_read_in_place() {
        let (m, n, k) = (37, 45, 19);
        let (a, b) = (values(m * k, 3.0), values(k * n, 4.0));
        // aᵀ stored as k × m, bᵀ as n × k.
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c: Vec<MaybeUninit<f64>> = (0..m * n).map(|i| MaybeUninit::new(i as f64)).collect();
        let views = (View::transposed(&at, m), View::transposed(&bt, k));
        matmul((m, n, k), views.0, views.1, &mut c, Destination::Accumulate);
        let want = reference((m, n, k), &a, &b);
        for (i, (c, w)) in c.iter().zip(&want).enumerate() {
            // SAFETY: initialized above.
            let c = unsafe { c.assume_init() };
            assert!((c - (w + i as f64)).abs() < 1e-10, "element {i}");
        }
    }
}
