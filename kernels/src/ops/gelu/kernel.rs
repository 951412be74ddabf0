//! Exact GELU, `y = x·Φ(x)`, and its derivative `Φ(x) + x·φ(x)`: one pass each way over the
//! tensor, in parallel chunks, vectorized.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Sink, map, map2};
use crate::cpu::{Float, TASK_ELEMENTS};

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

/// `y = x·Φ(x)` element by element; writes every element of `y`.
pub fn gelu<E: Float, O: Sink<E>>(x: &[E], y: &mut [O]) {
    assert_eq!(x.len(), y.len());
    y.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS))
        .for_each(|(y, x)| {
            vectorized(
                #[inline(always)]
                || map(x, y, |x| x * cdf(x)),
            )
        });
}

/// `dx = dy · (Φ(x) + x·φ(x))` element by element; writes every element of `dx`.
pub fn gelu_backward<E: Float, O: Sink<E>>(x: &[E], dy: &[E], dx: &mut [O]) {
    assert_eq!(x.len(), dx.len());
    assert_eq!(dy.len(), dx.len());
    dx.par_chunks_mut(TASK_ELEMENTS)
        .zip(
            x.par_chunks(TASK_ELEMENTS)
                .zip(dy.par_chunks(TASK_ELEMENTS)),
        )
        .for_each(|(dx, (x, dy))| {
            vectorized(
                #[inline(always)]
                || map2(x, dy, dx, |x, dy| dy * x.mul_add(pdf(x), cdf(x))),
            )
        });
}
