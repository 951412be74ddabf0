//! The Linear layer `y = x·W + b` (`W` `[in, out]` as Burn stores it) and its backward pass
//! `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ_rows dy`, with the bias folded into the product.
//!
//! The products run on the `gemm` crate with its AVX-512 kernels (`x86-v4`, chosen at run time)
//! and rayon's threads. Measured on the model's shapes (BENCHMARKS.md), it beat OpenBLAS both
//! with its own threads and split across rayon, and it does not depend on OpenBLAS recognising
//! the processor: OpenBLAS 0.3.21 runs its generic SSE3 kernels on processors newer than it,
//! at a fifth of the speed.

use std::mem::MaybeUninit;

use gemm_common::Parallelism;
use rayon::prelude::*;

use super::Float;

/// What runs the Linear products on this processor, for the start-up banner.
pub fn linear_engine() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "gemm crate, AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
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
struct View<'a, E> {
    values: &'a [E],
    ld: usize,
    transposed: bool,
}

impl<E> View<'_, E> {
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
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// `c = a·b`: `c` may be uninitialized; every element is written.
    Overwrite,
    /// `c += a·b`: `c` must be initialized.
    Accumulate,
}

/// `c` (`m × n`, row-major, contiguous) `= a·b` or `+= a·b`.
fn matmul<E: Float>(
    (m, n, k): (usize, usize, usize),
    a: View<'_, E>,
    b: View<'_, E>,
    c: &mut [MaybeUninit<E>],
    output: Output,
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
    // `c` does not alias `a` or `b` (it is borrowed mutably). With `read_dst` false, gemm
    // writes every element of `c` without reading it, so `c` may start uninitialized.
    unsafe {
        E::gemm()(
            n,
            m,
            k,
            c.as_mut_ptr().cast::<E>(),
            n as isize,
            1,
            output == Output::Accumulate,
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

/// `y` (`m × n`) `= x·w + bias` for `x` `m × k` and `w` `k × n`. Writes every element of `y`,
/// which may start uninitialized.
pub fn linear<E: Float>(
    x: &[E],
    w: &[E],
    bias: Option<&[E]>,
    (m, k, n): (usize, usize, usize),
    y: &mut [MaybeUninit<E>],
) {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), k * n);
    assert_eq!(y.len(), m * n);
    let output = match bias {
        Some(bias) => {
            y.par_chunks_mut(n * 256).for_each(|rows| {
                for row in rows.chunks_exact_mut(n) {
                    for (y, &b) in row.iter_mut().zip(bias) {
                        y.write(b);
                    }
                }
            });
            Output::Accumulate
        }
        None => Output::Overwrite,
    };
    let x = View {
        values: x,
        ld: k,
        transposed: false,
    };
    let w = View {
        values: w,
        ld: n,
        transposed: false,
    };
    matmul((m, n, k), x, w, y, output);
}

/// Rows per block of the bias gradient's column sum: fixed, so that the sum is the same on any
/// thread count.
const BLOCK_ROWS: usize = 64;

/// The gradients of [`linear`] that are asked for: `dx` (`m × k`), `dw` (`k × n`), `db` (`n`).
/// Writes every element of each, which may start uninitialized.
pub fn linear_backward<E: Float>(
    x: &[E],
    w: &[E],
    dy: &[E],
    (m, k, n): (usize, usize, usize),
    dx: Option<&mut [MaybeUninit<E>]>,
    dw: Option<&mut [MaybeUninit<E>]>,
    db: Option<&mut [MaybeUninit<E>]>,
) {
    assert_eq!(dy.len(), m * n);
    let dy_view = View {
        values: dy,
        ld: n,
        transposed: false,
    };
    if let Some(dx) = dx {
        let wt = View {
            values: w,
            ld: n,
            transposed: true,
        };
        matmul((m, k, n), dy_view, wt, dx, Output::Overwrite);
    }
    if let Some(dw) = dw {
        let xt = View {
            values: x,
            ld: k,
            transposed: true,
        };
        matmul((k, n, m), xt, dy_view, dw, Output::Overwrite);
    }
    if let Some(db) = db {
        let partial: Vec<Vec<E>> = dy
            .par_chunks(BLOCK_ROWS * n)
            .map(|rows| {
                let mut sum = vec![E::ZERO; n];
                for row in rows.chunks_exact(n) {
                    for (s, &g) in sum.iter_mut().zip(row) {
                        *s += g;
                    }
                }
                sum
            })
            .collect();
        for (c, d) in db.iter_mut().enumerate() {
            d.write(partial.iter().fold(E::ZERO, |sum, p| sum + p[c]));
        }
    }
}
