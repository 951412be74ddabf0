//! GELU, `y = x·Φ(x)`, exact or with GPT-2's tanh approximation of Φ, and its derivative: one
//! pass each way over the tensor, in parallel chunks, vectorized.
//!
//! The MLP's first Linear layer hands GELU its product without the bias, and GELU adds the bias
//! in the pass that reads the product anyway (`gelu(x + b)`), where the backward also sums the
//! bias gradient: the Linear kernel would otherwise lay the bias down in a pass over the whole
//! output before the product accumulates onto it, and sum `db` in another pass over `dy`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::{BLOCK, Sink, map, map2, put_all, sum_parts};
use crate::cpu::{Float, TASK_ELEMENTS, rows_per_task};

/// How Φ, the standard normal CDF, is computed: PyTorch's `approximate='none' | 'tanh'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approximation {
    /// `Φ(x) = erfc(-x/√2) / 2` (PyTorch's `nn.GELU()`, nanoGPT).
    None,
    /// `Φ(x) ≈ (1 + tanh(√(2/π)·(x + 0.044715·x³))) / 2` (GPT-2's `gelu_new`, what OpenAI's
    /// weights were trained with).
    Tanh,
}

/// `Φ(x) = erfc(-x/√2) / 2`, the standard normal CDF.
#[inline(always)]
fn cdf<E: Float>(x: E) -> E {
    let half = E::from_f64(0.5);
    half * (-x * E::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erfc()
}

/// `φ(x) = e^{-x²/2} / √(2π)`, the standard normal density.
#[inline(always)]
fn pdf<E: Float>(x: E) -> E {
    let inv_sqrt_2pi = E::from_f64(0.398_942_280_401_432_7);
    inv_sqrt_2pi * (x * x * E::from_f64(-0.5)).exp()
}

/// `√(2/π)`, and the cubic term's weight, of the tanh approximation.
pub(crate) const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
pub(crate) const CUBIC: f64 = 0.044_715;

/// The tanh approximation of Φ and its derivative, `(s, ds/dx)`. `(1 + tanh u)/2` is written
/// as the logistic `1/(1 + e^{-2u})`: one `exp` that vectorizes, and no cancellation in
/// `1 + tanh u` far in the left tail, where PyTorch's form loses every digit.
#[inline(always)]
fn tanh_cdf<E: Float>(x: E) -> (E, E) {
    let x2 = x * x;
    let two_u = E::from_f64(2.0 * SQRT_2_OVER_PI) * x * x2.mul_add(E::from_f64(CUBIC), E::ONE);
    let s = E::ONE / (E::ONE + (-two_u).exp());
    let du = E::from_f64(2.0 * SQRT_2_OVER_PI) * x2.mul_add(E::from_f64(3.0 * CUBIC), E::ONE);
    (s, s * (E::ONE - s) * du)
}

/// `y = g(x + bias)`, `g(z) = z·Φ(z)`, element by element, the bias (when given) added to every
/// row of `x` (rows of `bias.len()`); writes every element of `y`.
///
/// # Panics
/// If `y` is not as long as `x`, or `x` is not whole rows of the bias.
pub fn gelu<E: Float, O: Sink<E>>(
    x: &[E],
    bias: Option<&[E]>,
    y: &mut [O],
    approximation: Approximation,
) {
    assert_eq!(x.len(), y.len());
    match approximation {
        Approximation::None => map_rows_parallel(
            x,
            bias,
            y,
            #[inline(always)]
            |z| z * cdf(z),
        ),
        Approximation::Tanh => map_rows_parallel(
            x,
            bias,
            y,
            #[inline(always)]
            |z| z * tanh_cdf(z).0,
        ),
    }
}

/// `dx = dy · g'(x + bias)` element by element (`g'(z) = Φ(z) + z·φ(z)` exactly), and the
/// bias gradient `db = Σ_rows dx` when `db` is given (it must be when the bias is); writes every
/// element of `dx` and `db`.
///
/// # Panics
/// If the lengths disagree, or `db` is given without the bias or the bias without `db`.
pub fn gelu_backward<E: Float, O: Sink<E>>(
    x: &[E],
    bias: Option<&[E]>,
    dy: &[E],
    dx: &mut [O],
    db: Option<&mut [MaybeUninit<E>]>,
    approximation: Approximation,
) {
    assert_eq!(x.len(), dx.len());
    assert_eq!(dy.len(), dx.len());
    match approximation {
        Approximation::None => backward_parallel(
            x,
            bias,
            dy,
            dx,
            db,
            #[inline(always)]
            |z, dy| dy * z.mul_add(pdf(z), cdf(z)),
        ),
        Approximation::Tanh => backward_parallel(
            x,
            bias,
            dy,
            dx,
            db,
            #[inline(always)]
            |z, dy| {
                let (s, ds) = tanh_cdf(z);
                dy * z.mul_add(ds, s)
            },
        ),
    }
}

/// `y = f(x + bias)` element by element, in parallel chunks, vectorized: chunks of whole rows
/// when there is a bias, so that each row meets it from its first column.
#[inline(always)]
fn map_rows_parallel<E: Float, O: Sink<E>>(
    x: &[E],
    bias: Option<&[E]>,
    y: &mut [O],
    f: impl Fn(E) -> E + Copy + Sync,
) {
    let Some(bias) = bias else {
        return y
            .par_chunks_mut(TASK_ELEMENTS)
            .zip(x.par_chunks(TASK_ELEMENTS))
            .for_each(|(y, x)| {
                vectorized(
                    #[inline(always)]
                    || map(x, y, f),
                )
            });
    };
    let width = rows_of(x.len(), bias);
    let chunk = rows_per_task(width) * width;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| {
            vectorized(
                #[inline(always)]
                || {
                    for (y, x) in y.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                        map2(
                            x,
                            bias,
                            y,
                            #[inline(always)]
                            |x, b| f(x + b),
                        );
                    }
                },
            )
        });
}

/// `dx = f(x + bias, dy)` element by element, in parallel chunks, vectorized, and `db` the column
/// sums of `dx`: each task sums its own rows, and the tasks' sums are added in task order. The
/// rows per task depend on the width alone, so the sums are the same on any thread count.
#[inline(always)]
fn backward_parallel<E: Float, O: Sink<E>>(
    x: &[E],
    bias: Option<&[E]>,
    dy: &[E],
    dx: &mut [O],
    db: Option<&mut [MaybeUninit<E>]>,
    f: impl Fn(E, E) -> E + Copy + Sync,
) {
    let (bias, db) = match (bias, db) {
        (None, None) => {
            return dx
                .par_chunks_mut(TASK_ELEMENTS)
                .zip(
                    x.par_chunks(TASK_ELEMENTS)
                        .zip(dy.par_chunks(TASK_ELEMENTS)),
                )
                .for_each(|(dx, (x, dy))| {
                    vectorized(
                        #[inline(always)]
                        || map2(x, dy, dx, f),
                    )
                });
        }
        (Some(bias), Some(db)) => (bias, db),
        _ => panic!("gelu_backward: a bias gradient needs the bias, and the bias its gradient"),
    };
    let width = rows_of(x.len(), bias);
    assert_eq!(db.len(), width, "gelu_backward: db");
    let chunk = rows_per_task(width) * width;
    let sums: Vec<Vec<E>> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
        .map(|(dx, (x, dy))| {
            let mut sums = vec![E::ZERO; width];
            vectorized(
                #[inline(always)]
                || {
                    let rows = dx.chunks_exact_mut(width);
                    for (dx, (x, dy)) in rows.zip(x.chunks_exact(width).zip(dy.chunks_exact(width)))
                    {
                        row_backward(x, bias, dy, dx, &mut sums, f);
                    }
                },
            );
            sums
        })
        .collect();
    sum_parts(&sums, db);
}

/// One row of [`backward_parallel`]: `dx = f(x + bias, dy)`, each value also added to `sums`.
#[inline(always)]
fn row_backward<E: Float, O: Sink<E>>(
    x: &[E],
    bias: &[E],
    dy: &[E],
    dx: &mut [O],
    sums: &mut [E],
    f: impl Fn(E, E) -> E,
) {
    let (xs, x_rest) = x.as_chunks::<BLOCK>();
    let (bs, b_rest) = bias.as_chunks::<BLOCK>();
    let (ds, d_rest) = dy.as_chunks::<BLOCK>();
    let (os, o_rest) = dx.as_chunks_mut::<BLOCK>();
    let (ss, s_rest) = sums.as_chunks_mut::<BLOCK>();
    for ((((x, b), dy), out), sum) in xs.iter().zip(bs).zip(ds).zip(os).zip(ss) {
        let values: [E; BLOCK] = std::array::from_fn(|l| f(x[l] + b[l], dy[l]));
        put_all(out, &values);
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
        }
    }
    let rest = x_rest
        .iter()
        .zip(b_rest)
        .zip(d_rest)
        .zip(o_rest)
        .zip(s_rest);
    for ((((&x, &b), &dy), out), sum) in rest {
        let value = f(x + b, dy);
        out.put(value);
        *sum += value;
    }
}

/// The width of `x`'s rows: the bias's length, which must divide `x`'s.
fn rows_of<E>(len: usize, bias: &[E]) -> usize {
    let width = bias.len();
    assert!(
        width > 0 && len.is_multiple_of(width),
        "gelu: {len} values are not whole rows of the bias's {width}"
    );
    width
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's own formula, `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))`, in f64.
    fn gpt2_gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + CUBIC * x * x * x)).tanh())
    }

    #[test]
    fn the_tanh_form_is_gpt2s_formula() {
        let x: Vec<f64> = (-1200..=1200).map(|i| f64::from(i) / 200.0).collect();
        let mut y = vec![0.0; x.len()];
        gelu(&x, None, &mut y, Approximation::Tanh);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut y32 = vec![0.0_f32; x.len()];
        gelu(&x32, None, &mut y32, Approximation::Tanh);
        for ((&x, &y), &y32) in x.iter().zip(&y).zip(&y32) {
            let want = gpt2_gelu(x);
            // Relative where the value is not tiny; PyTorch's own f32 form has no digits left
            // below -5 (`1 + tanh u` cancels), so absolute there.
            let scale = want.abs().max(0.1);
            assert!(
                (y - want).abs() <= 1e-14 * scale,
                "f64 at {x}: {y} vs {want}"
            );
            assert!(
                (f64::from(y32) - want).abs() <= 1e-6 * scale,
                "f32 at {x}: {y32} vs {want}"
            );
        }
    }

    #[test]
    fn the_tanh_derivative_is_the_formulas() {
        let x: Vec<f64> = (-800..=800).map(|i| f64::from(i) / 100.0).collect();
        let ones = vec![1.0; x.len()];
        let mut dx = vec![0.0; x.len()];
        gelu_backward(&x, None, &ones, &mut dx, None, Approximation::Tanh);
        for (&x, &dx) in x.iter().zip(&dx) {
            let h = 1e-6;
            let numeric = (gpt2_gelu(x + h) - gpt2_gelu(x - h)) / (2.0 * h);
            assert!((dx - numeric).abs() <= 1e-8, "at {x}: {dx} vs {numeric}");
        }
    }
}
