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
use super::simd::Isa;

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

/// `out = Σ parts` element by element, the parts added in their order from zero: column sums
/// made by parallel tasks, combined the same way whatever the thread count.
pub fn sum_parts<E: Float>(parts: &[Vec<E>], out: &mut [MaybeUninit<E>]) {
    let mut total = vec![E::ZERO; out.len()];
    for part in parts {
        for (t, &p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    for (o, t) in out.iter_mut().zip(total) {
        o.write(t);
    }
}

/// `sums += Σ rows`, the rows of `rows` (each `sums.len()` wide) added in order: a column sum
/// that vectorizes across the columns.
#[inline(always)]
pub fn add_rows<E: Float>(sums: &mut [E], rows: &[E]) {
    for row in rows.chunks_exact(sums.len()) {
        for (s, &x) in sums.iter_mut().zip(row) {
            *s += x;
        }
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

/// The left operand of [`small_matmul`], `m × k`, read in place.
#[derive(Clone, Copy)]
pub enum Lhs<'a, E> {
    /// Row-major with rows `ld` apart: element `(i, p)` is `values[i·ld + p]`.
    Rows(&'a [E], usize),
    /// Transposed in memory, columns `ld` apart: element `(i, p)` is `values[p·ld + i]`.
    Columns(&'a [E], usize),
}

impl<E: Float> Lhs<'_, E> {
    #[inline(always)]
    fn at(&self, i: usize, p: usize) -> E {
        match *self {
            Lhs::Rows(values, ld) => values[i * ld + p],
            Lhs::Columns(values, ld) => values[p * ld + i],
        }
    }
}

/// `c = a·b` or `c += a·b` (`accumulate`) for `a` `m × k`, `b` `k × n` row-major with rows `ldb`
/// apart, and `c` `m × n` row-major with rows `ldc` apart: the small products of attention's
/// blocks (at most 64 on a side), where a library's per-call work costs more than the product.
///
/// Tiles of four rows of `c` by `C` groups of 16 columns, their accumulators in registers over
/// all of `k`: each row of `b` is loaded once for four rows of `a`, and each element of `a` is
/// one broadcast. A fused multiply-add takes four cycles and a core starts two a cycle, so eight
/// independent accumulators keep it busy: 4 × 16 columns on AVX2 (two registers a row), 4 × 32
/// on AVX-512 (4 × 16 is four registers there, half the rate; measured with `cargo bench
/// --bench cpu -- attention`, 4 × 64 and 8 × 32 spill and run slower than either). Every element
/// is the same sum in the same order whatever the tile, so the result does not depend on the
/// instruction set.
#[inline(always)]
pub fn small_matmul<E: Float>(
    mnk: (usize, usize, usize),
    a: Lhs<'_, E>,
    (b, ldb): (&[E], usize),
    (c, ldc): (&mut [E], usize),
    accumulate: bool,
) {
    let (m, n, k) = mnk;
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n);
    if k == 0 {
        // An empty sum (and no rows of `b` to walk).
        if !accumulate {
            c.chunks_mut(ldc)
                .take(m)
                .for_each(|row| row[..n].fill(E::ZERO));
        }
        return;
    }
    // Every row the tiles read is there: their loops walk `a` and `b` by rows and columns
    // without checking how many there are.
    let (a_len, a_needed) = match a {
        Lhs::Rows(values, ld) => (values.len(), (m - 1) * ld + k),
        Lhs::Columns(values, ld) => (values.len(), (k - 1) * ld + m),
    };
    assert!(a_len >= a_needed && b.len() >= (k - 1) * ldb + n);
    let (b, c) = ((b, ldb), (c, ldc));
    if Isa::active() == Isa::Avx512 {
        row_blocks::<E, 2>(mnk, a, b, c, accumulate);
    } else {
        row_blocks::<E, 1>(mnk, a, b, c, accumulate);
    }
}

/// [`small_matmul`] with tiles `C` groups of 16 columns wide.
#[inline(always)]
fn row_blocks<E: Float, const C: usize>(
    (m, n, k): (usize, usize, usize),
    a: Lhs<'_, E>,
    b: (&[E], usize),
    (c, ldc): (&mut [E], usize),
    accumulate: bool,
) {
    let mut i = 0;
    while i + 4 <= m {
        rows_block::<E, 4, C>((i, n, k), a, b, (c, ldc), accumulate);
        i += 4;
    }
    while i < m {
        rows_block::<E, 1, C>((i, n, k), a, b, (c, ldc), accumulate);
        i += 1;
    }
}

/// [`small_matmul`] for the `R` rows of `c` from row `i`: tiles `C` groups wide, then single
/// groups, then the columns after the last whole 16 one by one.
#[inline(always)]
fn rows_block<E: Float, const R: usize, const C: usize>(
    (i, n, k): (usize, usize, usize),
    a: Lhs<'_, E>,
    (b, ldb): (&[E], usize),
    (c, ldc): (&mut [E], usize),
    accumulate: bool,
) {
    let mut col = 0;
    while col + C * LANES <= n {
        let acc = tile::<E, R, C>(i, k, a, &b[col..], ldb);
        store(acc, &mut c[i * ldc + col..], ldc, accumulate);
        col += C * LANES;
    }
    while col + LANES <= n {
        let acc = tile::<E, R, 1>(i, k, a, &b[col..], ldb);
        store(acc, &mut c[i * ldc + col..], ldc, accumulate);
        col += LANES;
    }
    for r in 0..R {
        for j in col..n {
            let v = (0..k).fold(E::ZERO, |sum, p| {
                a.at(i + r, p).mul_add(b[p * ldb + j], sum)
            });
            let o = &mut c[(i + r) * ldc + j];
            *o = if accumulate { *o + v } else { v };
        }
    }
}

/// Rows `i..i + R` of `a` times the first `16·C` columns of `b`: the tile's accumulators.
///
/// The loop reads `a` and `b` through pointers, their bounds checked once here for the whole
/// tile: with a check per row of `b` and per element of `a` (a compare and a branch each, up to
/// 15 instructions around 8 multiply-adds a step) attention ran 5-9% slower on AVX-512 and
/// 10-15% slower on AVX2 (a timer of `causal_attention` and its backward at the small and
/// medium presets' shapes, medians of 15).
#[inline(always)]
fn tile<E: Float, const R: usize, const C: usize>(
    i: usize,
    k: usize,
    a: Lhs<'_, E>,
    b: &[E],
    ldb: usize,
) -> [[[E; LANES]; C]; R] {
    let mut acc = [[[E::ZERO; LANES]; C]; R];
    if k == 0 {
        return acc;
    }
    assert!(b.len() >= (k - 1) * ldb + C * LANES);
    // SAFETY: for `p < k`, `p·ldb + 16·C <= (k - 1)·ldb + 16·C <= b.len()` (asserted above), and
    // `[[E; LANES]; C]` has `E`'s alignment.
    let b_row = |p: usize| unsafe { &*b.as_ptr().add(p * ldb).cast::<[[E; LANES]; C]>() };
    match a {
        Lhs::Rows(values, ld) => {
            assert!(values.len() >= (i + R - 1) * ld + k);
            let a = values.as_ptr();
            for p in 0..k {
                // SAFETY: for `r < R` and `p < k`, `(i + r)·ld + p < (i + R - 1)·ld + k <=
                // values.len()` (asserted above).
                let column = std::array::from_fn(|r| unsafe { *a.add((i + r) * ld + p) });
                multiply_add(&mut acc, column, b_row(p));
            }
        }
        Lhs::Columns(values, ld) => {
            assert!(values.len() >= (k - 1) * ld + i + R);
            for p in 0..k {
                // SAFETY: for `p < k`, `p·ld + i + R <= values.len()` (asserted above).
                let column = unsafe { &*values.as_ptr().add(p * ld + i).cast::<[E; R]>() };
                multiply_add(&mut acc, *column, b_row(p));
            }
        }
    }
    acc
}

/// `acc[r] += a[r] · b_row` for the tile's `R` rows and `16·C` columns.
#[inline(always)]
fn multiply_add<E: Float, const R: usize, const C: usize>(
    acc: &mut [[[E; LANES]; C]; R],
    a: [E; R],
    b_row: &[[E; LANES]; C],
) {
    // Copied into an array first: indexing the slice group by group inside the loops made LLVM
    // keep the accumulators in memory (attention 2-6x slower at C = 2).
    let b_row: [[E; LANES]; C] = *b_row;
    for r in 0..R {
        for g in 0..C {
            for l in 0..LANES {
                acc[r][g][l] = a[r].mul_add(b_row[g][l], acc[r][g][l]);
            }
        }
    }
}

/// Writes (or adds) a tile's accumulators into `c`'s rows, `ldc` apart.
#[inline(always)]
fn store<E: Float, const R: usize, const C: usize>(
    acc: [[[E; LANES]; C]; R],
    c: &mut [E],
    ldc: usize,
    accumulate: bool,
) {
    for (r, acc) in acc.iter().enumerate() {
        let out = &mut c[r * ldc..][..C * LANES];
        for (o, &v) in out.iter_mut().zip(acc.as_flattened()) {
            *o = if accumulate { *o + v } else { v };
        }
    }
}

/// Elements per step of [`map`] and [`map2`]: four AVX-512 registers of `f32`, so that four
/// independent chains of a long formula (a polynomial, an `exp`) are in flight at once.
pub const BLOCK: usize = 4 * LANES;

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
        // Sizes that exercise the four-row blocks, the single rows after them, the wide tiles
        // (32 columns on AVX-512), whole 16-column blocks after them and the columns after
        // those; an empty sum; `a` row-major and transposed; overwrite and add.
        for (m, n, k) in [
            (1, 1, 1),
            (2, 48, 0),
            (5, 50, 3),
            (3, 5, 7),
            (4, 16, 9),
            (9, 33, 5),
            (64, 64, 32),
            (66, 40, 70),
        ] {
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.3).sin()).collect();
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let ldb = n + 3;
            // As short as the product allows: the last row of `b` ends at its `n`-th column.
            let b_len = (k * ldb).saturating_sub(ldb - n);
            let b: Vec<f64> = (0..b_len).map(|i| (i as f64 * 0.7).cos()).collect();
            let want =
                |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[p * ldb + j]).sum::<f64>();
            let views = [Lhs::Rows(&a, k), Lhs::Columns(&at, m)];
            for view in views {
                for accumulate in [false, true] {
                    let ldc = n + 1;
                    let mut c = vec![1.0; m * ldc];
                    small_matmul((m, n, k), view, (&b, ldb), (&mut c, ldc), accumulate);
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
