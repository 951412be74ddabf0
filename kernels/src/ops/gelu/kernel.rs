//! GELU, `y = x·Φ(x)`, exact or with GPT-2's tanh approximation of Φ, and its derivative: one
//! pass each way over the tensor, in parallel chunks, vectorized.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Sink, map, map2};
use crate::cpu::{Float, TASK_ELEMENTS};

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

/// `y = x·Φ(x)` element by element; writes every element of `y`.
pub fn gelu<E: Float, O: Sink<E>>(x: &[E], y: &mut [O], approximation: Approximation) {
    assert_eq!(x.len(), y.len());
    match approximation {
        Approximation::None => map_parallel(
            x,
            y,
            #[inline(always)]
            |x| x * cdf(x),
        ),
        Approximation::Tanh => map_parallel(
            x,
            y,
            #[inline(always)]
            |x| x * tanh_cdf(x).0,
        ),
    }
}

/// `dx = dy · dy/dx` element by element (`Φ(x) + x·φ(x)` exactly); writes every element of
/// `dx`.
pub fn gelu_backward<E: Float, O: Sink<E>>(
    x: &[E],
    dy: &[E],
    dx: &mut [O],
    approximation: Approximation,
) {
    assert_eq!(x.len(), dx.len());
    assert_eq!(dy.len(), dx.len());
    match approximation {
        Approximation::None => map2_parallel(
            x,
            dy,
            dx,
            #[inline(always)]
            |x, dy| dy * x.mul_add(pdf(x), cdf(x)),
        ),
        Approximation::Tanh => map2_parallel(
            x,
            dy,
            dx,
            #[inline(always)]
            |x, dy| {
                let (s, ds) = tanh_cdf(x);
                dy * x.mul_add(ds, s)
            },
        ),
    }
}

/// `y = f(x)` element by element, in parallel chunks, vectorized.
#[inline(always)]
fn map_parallel<E: Float, O: Sink<E>>(x: &[E], y: &mut [O], f: impl Fn(E) -> E + Copy + Sync) {
    y.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS))
        .for_each(|(y, x)| {
            vectorized(
                #[inline(always)]
                || map(x, y, f),
            )
        });
}

/// `z = f(x, y)` element by element, in parallel chunks, vectorized.
#[inline(always)]
fn map2_parallel<E: Float, O: Sink<E>>(
    x: &[E],
    y: &[E],
    z: &mut [O],
    f: impl Fn(E, E) -> E + Copy + Sync,
) {
    z.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS).zip(y.par_chunks(TASK_ELEMENTS)))
        .for_each(|(z, (x, y))| {
            vectorized(
                #[inline(always)]
                || map2(x, y, z, f),
            )
        });
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
        gelu(&x, &mut y, Approximation::Tanh);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut y32 = vec![0.0_f32; x.len()];
        gelu(&x32, &mut y32, Approximation::Tanh);
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
        gelu_backward(&x, &ones, &mut dx, Approximation::Tanh);
        for (&x, &dx) in x.iter().zip(&dx) {
            let h = 1e-6;
            let numeric = (gpt2_gelu(x + h) - gpt2_gelu(x - h)) / (2.0 * h);
            assert!((dx - numeric).abs() <= 1e-8, "at {x}: {dx} vs {numeric}");
        }
    }
}
