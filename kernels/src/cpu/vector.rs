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

/// `out[c] = Σ_r w[r] · m[r·stride + c]` for every column `c < out.len()`: the row vector `w`
/// times the matrix of `w.len()` rows that starts at `m[0]`, rows `stride` apart.
///
/// The accumulators of a block of columns stay in registers over all rows and are stored once:
/// summing into `out` row by row would put a store and a load on every addition's critical
/// path. Blocks of 64 columns run four independent accumulator chains.
#[inline(always)]
pub fn vec_mat<E: Float, O: Sink<E>>(out: &mut [O], w: &[E], m: &[E], stride: usize) {
    let n = out.len();
    let mut c = 0;
    while c + 4 * LANES <= n {
        columns::<E, O, 4>(out, c, w, m, stride);
        c += 4 * LANES;
    }
    while c + 2 * LANES <= n {
        columns::<E, O, 2>(out, c, w, m, stride);
        c += 2 * LANES;
    }
    while c + LANES <= n {
        columns::<E, O, 1>(out, c, w, m, stride);
        c += LANES;
    }
    for (c, o) in out.iter_mut().enumerate().skip(c) {
        o.put(
            w.iter()
                .enumerate()
                .fold(E::ZERO, |acc, (r, &wr)| wr.mul_add(m[r * stride + c], acc)),
        );
    }
}

/// [`vec_mat`] for the `B` blocks of 16 columns from column `c0`.
#[inline(always)]
fn columns<E: Float, O: Sink<E>, const B: usize>(
    out: &mut [O],
    c0: usize,
    w: &[E],
    m: &[E],
    stride: usize,
) {
    let mut acc = [[E::ZERO; LANES]; B];
    for (r, &wr) in w.iter().enumerate() {
        let start = r * stride + c0;
        let (row, _) = m[start..start + B * LANES].as_chunks::<LANES>();
        for b in 0..B {
            for l in 0..LANES {
                acc[b][l] = wr.mul_add(row[b][l], acc[b][l]);
            }
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        put_all(&mut out[c0 + b * LANES..c0 + (b + 1) * LANES], acc);
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
    fn vec_mat_equals_the_plain_product() {
        // Column counts that exercise every block size and the scalar tail.
        for (rows, cols) in [(3, 5), (7, 16), (4, 33), (5, 64), (2, 100), (9, 130)] {
            let stride = cols + 3;
            let m: Vec<f64> = (0..rows * stride).map(|i| (i as f64 * 0.3).sin()).collect();
            let w: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.7).cos()).collect();
            let mut out = vec![f64::NAN; cols];
            vec_mat(&mut out, &w, &m, stride);
            for (c, o) in out.iter().enumerate() {
                let want: f64 = (0..rows).map(|r| w[r] * m[r * stride + c]).sum();
                assert!(
                    (o - want).abs() < 1e-12,
                    "{rows}x{cols} column {c}: {o} vs {want}"
                );
            }
        }
    }
}
