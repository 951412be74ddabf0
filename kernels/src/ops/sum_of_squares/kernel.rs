//! `Σ x²` of a tensor in one pass, in `f64`, in the same order on any thread count: the
//! building block of the global gradient norm that clipping needs.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::sum_sq;
use crate::cpu::{Float, TASK_ELEMENTS};

/// `Σ x²` in `f64`, over fixed blocks added in order (the same on any thread count).
pub fn sum_of_squares<E: Float>(x: &[E]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(TASK_ELEMENTS)
        .map(|block| {
            vectorized(
                #[inline(always)]
                || sum_sq(block).to_f64(),
            )
        })
        .collect();
    partial.iter().sum()
}
