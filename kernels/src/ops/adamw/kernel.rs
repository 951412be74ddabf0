//! One AdamW update of a parameter tensor, in one pass over the parameter, its gradient and
//! both moments (Burn's AdamW makes about a dozen passes, one per tensor op):
//! ```text
//! m ← β1·m + (1-β1)·g        v ← β2·v + (1-β2)·g²
//! p ← p·(1 - lr·λ) - lr · (m / (1-β1ᵗ)) / (√(v / (1-β2ᵗ)) + ε)
//! ```
//! the same formula, in the same order, as `burn::optim::AdamW` (PyTorch's, with decoupled
//! weight decay λ). The gradient is first multiplied by the step's `grad_scale`, which is how
//! global-norm clipping reaches the update: a pass over every gradient to scale it (65 ms a step
//! at GPT-2's size, 5% of a step at batch 4 x 64) costs nothing inside this one.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::{Float, TASK_ELEMENTS};

/// The hyperparameters of one step; `time` counts the updates including this one (1 first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub time: i32,
    /// What the gradient is multiplied by first: clipping's factor, 1 when it does not clip.
    pub grad_scale: f64,
}

/// Updates the parameter and both moments in place; `m` and `v` are the moments before the step
/// (zeros before the first). In place because the optimizer owns them: at GPT-2's size a step
/// that wrote new tensors would fault in 1.5 GB of fresh pages (`mmap`ed by the allocator and
/// returned when freed) every step, which took longer than the update itself.
pub fn adamw<E: Float>(param: &mut [E], grad: &[E], m: &mut [E], v: &mut [E], step: AdamWStep) {
    let n = param.len();
    assert!([grad.len(), m.len(), v.len()].iter().all(|&len| len == n));
    let c = |x: f64| E::from_f64(x);
    let (b1, b2, eps, lr) = (c(step.beta1), c(step.beta2), c(step.eps), c(step.lr));
    let (f1, f2) = (c(1.0 - step.beta1), c(1.0 - step.beta2));
    // Burn computes these corrections and the decay factor in f32 from f32 betas.
    let correction1 = c(1.0 - step.beta1.powi(step.time));
    let correction2 = c(1.0 - step.beta2.powi(step.time));
    let decay = c(1.0 - step.lr * step.weight_decay);
    // Rounded to `E` first, as Burn's `mul_scalar` does, so a clipped gradient is the same
    // number whether scaled here or by a pass of its own.
    let scale = c(step.grad_scale);
    let state = param
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(m.par_chunks_mut(TASK_ELEMENTS))
        .zip(v.par_chunks_mut(TASK_ELEMENTS));
    state
        .zip(grad.par_chunks(TASK_ELEMENTS))
        .for_each(|(((p, m), v), g)| {
            vectorized(
                #[inline(always)]
                || {
                    for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        let gi = g * scale;
                        let mi = b1 * *m + f1 * gi;
                        let vi = b2 * *v + f2 * (gi * gi);
                        let delta = (mi / correction1) / ((vi / correction2).sqrt() + eps);
                        *p = *p * decay - delta * lr;
                        *m = mi;
                        *v = vi;
                    }
                },
            )
        });
}
