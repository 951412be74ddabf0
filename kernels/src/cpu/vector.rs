//! The vector loops the kernels are built from, in 16-lane steps (one AVX-512 register of
//! `f32`): sums, dot products and maxima in 16 independent lanes combined in a fixed order, and
//! the small matrix-vector products of attention with their accumulators kept in registers.
//!
//! Rust keeps floating-point arithmetic in program order, so LLVM never vectorizes a plain
//! `for x in v { s += x }`: it would change the result. Sixteen running sums, each adding every
//! 16th element, is vector arithmetic as written; the result depends only on the slice, never
//! on the instruction set or thread count, which keeps runs bit-reproducible.

use std::mem::MaybeUninit;

use super::Float;

/// Where a kernel puts a value: a plain element, or an output element that starts
/// uninitialized (the kernels' outputs, so that no pass zeroes them first).
pub trait Sink<E>: Send {
    fn put(&mut self, value: E);
}

impl<E: Float> Sink<E> for E {
    #[inline(always)]
    fn put(&mut self, value: E) {
        *self = value;
    }
}

impl<E: Float> Sink<E> for MaybeUninit<E> {
    #[inline(always)]
    fn put(&mut self, value: E) {
        self.write(value);
    }
}

/// `out ← values`.
#[inline(always)]
pub fn put_all<E: Float, O: Sink<E>>(out: &mut [O], values: &[E]) {
    for (o, &v) in out.iter_mut().zip(values) {
        o.put(v);
    }
}

const LANES: usize = 16;

/// Adds the lanes pairwise, always in the same order.
#[inline(always)]
fn combine<E: Float>(mut acc: [E; LANES]) -> E {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `Σ f(a_i, b_i)` over the common length of `a` and `b`.
#[inline(always)]
fn fold2<E: Float>(a: &[E], b: &[E], f: impl Fn(E, E) -> E) -> E {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [E::ZERO; LANES];
    let ((ca, ra), (cb, rb)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += f(*x, *y);
    }
    combine(acc)
}

/// `Σ x_i`.
#[inline(always)]
pub fn sum<E: Float>(x: &[E]) -> E {
    fold2(x, x, |a, _| a)
}

/// `Σ a_i b_i`.
#[inline(always)]
pub fn dot<E: Float>(a: &[E], b: &[E]) -> E {
    fold2(a, b, |x, y| x * y)
}

/// `Σ x_i²`.
#[inline(always)]
pub fn sum_sq<E: Float>(x: &[E]) -> E {
    fold2(x, x, |a, _| a * a)
}

/// `Σ (x_i - c)²`.
#[inline(always)]
pub fn sum_sq_dev<E: Float>(x: &[E], c: E) -> E {
    fold2(x, x, |a, _| (a - c) * (a - c))
}

/// `Σ e^{x_i - m}`, the softmax denominator.
#[inline(always)]
pub fn sum_exp<E: Float>(x: &[E], m: E) -> E {
    fold2(x, x, |a, _| (a - m).exp())
}

/// The largest element (`-inf` for an empty slice).
#[inline(always)]
pub fn max<E: Float>(x: &[E]) -> E {
    let mut acc = [E::NEG_INFINITY; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    for (l, v) in rest.iter().enumerate() {
        acc[l] = acc[l].max(*v);
    }
    acc.into_iter().fold(E::NEG_INFINITY, E::max)
}

/// A matrix read in place for [`small_matmul`]: element `(i, p)` is `values[i·row + p·col]`
/// (`col = 1` for a row-major matrix, `row = 1` for a transposed one).
#[derive(Clone, Copy)]
pub struct Strided<'a, E> {
    pub values: &'a [E],
    pub row: usize,
    pub col: usize,
}

/// `c = a·b` or `c += a·b` (`accumulate`) for `a` `m × k` read through its strides, `b` `k × n`
/// row-major with rows `ldb` apart, and `c` `m × n` row-major with rows `ldc` apart: the small
/// products of attention's blocks (at most 64 on a side), where a library's per-call work costs
/// more than the product.
///
/// Four rows of `c` and 16 of its columns at a time, their 64 accumulators in registers over all
/// of `k`: each row of `b` is loaded once for four rows of `a`, and each element of `a` is one
/// broadcast, so a step is eight fused multiply-adds (AVX2) for two loads of `b`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a product's three matrices and their layouts
pub fn small_matmul<E: Float>(
    (m, n, k): (usize, usize, usize),
    a: Strided<'_, E>,
    b: &[E],
    ldb: usize,
    c: &mut [E],
    ldc: usize,
    accumulate: bool,
) {
    let mut i = 0;
    while i + 4 <= m {
        rows_block::<E, 4>(i, (n, k), a, b, ldb, c, ldc, accumulate);
        i += 4;
    }
    while i < m {
        rows_block::<E, 1>(i, (n, k), a, b, ldb, c, ldc, accumulate);
        i += 1;
    }
}

/// [`small_matmul`] for the `R` rows of `c` from row `i`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_block<E: Float, const R: usize>(
    i: usize,
    (n, k): (usize, usize),
    a: Strided<'_, E>,
    b: &[E],
    ldb: usize,
    c: &mut [E],
    ldc: usize,
    accumulate: bool,
) {
    let a_at = |r: usize, p: usize| a.values[(i + r) * a.row + p * a.col];
    let mut col = 0;
    while col + LANES <= n {
        let mut acc = [[E::ZERO; LANES]; R];
        for p in 0..k {
            let b_row: &[E; LANES] = b[p * ldb + col..][..LANES].try_into().expect("LANES");
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = a_at(r, p);
                for l in 0..LANES {
                    acc[l] = ar.mul_add(b_row[l], acc[l]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut c[(i + r) * ldc + col..][..LANES];
            for (o, &v) in out.iter_mut().zip(acc) {
                *o = if accumulate { *o + v } else { v };
            }
        }
        col += LANES;
    }
    // The columns after the last whole 16.
    for r in 0..R {
        for j in col..n {
            let v = (0..k).fold(E::ZERO, |sum, p| a_at(r, p).mul_add(b[p * ldb + j], sum));
            let o = &mut c[(i + r) * ldc + j];
            *o = if accumulate { *o + v } else { v };
        }
    }
}

/// Elements per step of [`map`] and [`map2`]: four AVX-512 registers of `f32`, so that four
/// independent chains of a long formula (a polynomial, an `exp`) are in flight at once.
const BLOCK: usize = 4 * LANES;

/// `y_i = f(x_i)`.
#[inline(always)]
pub fn map<E: Float, O: Sink<E>>(x: &[E], y: &mut [O], f: impl Fn(E) -> E) {
    let ((xs, x_rest), (ys, y_rest)) = (x.as_chunks::<BLOCK>(), y.as_chunks_mut::<BLOCK>());
    for (x, y) in xs.iter().zip(ys) {
        let values: [E; BLOCK] = std::array::from_fn(|l| f(x[l]));
        put_all(y, &values);
    }
    for (x, y) in x_rest.iter().zip(y_rest) {
        y.put(f(*x));
    }
}

/// `z_i = f(x_i, y_i)`.
#[inline(always)]
pub fn map2<E: Float, O: Sink<E>>(x: &[E], y: &[E], z: &mut [O], f: impl Fn(E, E) -> E) {
    let (xs, x_rest) = x.as_chunks::<BLOCK>();
    let (ys, y_rest) = y.as_chunks::<BLOCK>();
    let (zs, z_rest) = z.as_chunks_mut::<BLOCK>();
    for ((x, y), z) in xs.iter().zip(ys).zip(zs) {
        let values: [E; BLOCK] = std::array::from_fn(|l| f(x[l], y[l]));
        put_all(z, &values);
    }
    for ((x, y), z) in x_rest.iter().zip(y_rest).zip(z_rest) {
        z.put(f(*x, *y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_equal_the_plain_ones() {
        for n in [0, 1, 5, 16, 17, 40, 333] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
            assert!(close(sum(&a), a.iter().sum()));
            assert!(close(
                dot(&a, &b),
                a.iter().zip(&b).map(|(x, y)| x * y).sum()
            ));
            assert!(close(
                sum_sq_dev(&a, 0.25),
                a.iter().map(|x| (x - 0.25) * (x - 0.25)).sum()
            ));
            assert_eq!(max(&a), a.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }

    #[test]
    fn small_matmul_equals_the_plain_product() {
        // Sizes that exercise the four-row blocks, the single rows after them, whole 16-column
        // blocks and the columns after them; `a` row-major and transposed; overwrite and add.
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 9),
            (9, 33, 5),
            (64, 64, 32),
            (66, 40, 70),
        ] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.3).sin()).collect();
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let ldb = n + 3;
            let b: Vec<f64> = (0..k * ldb).map(|i| (i as f64 * 0.7).cos()).collect();
            let want =
                |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[p * ldb + j]).sum::<f64>();
            let views = [
                Strided {
                    values: &a,
                    row: k,
                    col: 1,
                },
                Strided {
                    values: &at,
                    row: 1,
                    col: m,
                },
            ];
            for view in views {
                for accumulate in [false, true] {
                    let ldc = n + 1;
                    let mut c = vec![1.0; m * ldc];
                    small_matmul((m, n, k), view, &b, ldb, &mut c, ldc, accumulate);
                    for i in 0..m {
                        for j in 0..n {
                            let w = want(i, j) + if accumulate { 1.0 } else { 0.0 };
                            let got = c[i * ldc + j];
                            assert!(
                                (got - w).abs() < 1e-12,
                                "{m}x{n}x{k} ({i}, {j}): {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
