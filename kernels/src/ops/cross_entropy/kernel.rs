//! Mean softmax cross-entropy from the logits, forward and backward, one pass over each row.
//!
//! Per row `x` (`V` logits) with target `c`: `lse = m + ln Σ_j e^{x_j - m}` (`m = max x`), loss
//! `lse - x_c`; the mean over rows is the result. Backward: `dx_j = g/N · (e^{x_j - lse} - [j = c])`.
//! The row losses are added in row order, whatever the number of threads.
//!
//! The head's fused loss (`ops/head_loss`) runs the same two row passes on chunks of rows.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Sink, max, sum_exp};
use crate::cpu::{Float, rows_per_task};

/// Mean over rows of `lse - x[target]`; writes each row's log-sum-exp into (every element of)
/// `lse`.
///
/// # Panics
/// If a target is not below the number of classes.
pub fn cross_entropy<E: Float, O: Sink<E>>(logits: &[E], targets: &[usize], lse: &mut [O]) -> E {
    let n = targets.len();
    assert!(n > 0 && logits.len().is_multiple_of(n));
    let mut losses = vec![E::ZERO; n];
    row_losses(logits, targets, lse, &mut losses);
    mean(&losses)
}

/// The mean of `losses`, added in order in `f64`.
pub fn mean<E: Float>(losses: &[E]) -> E {
    let total: f64 = losses.iter().map(|l| l.to_f64()).sum();
    E::from_f64(total / losses.len() as f64)
}

/// Each row's log-sum-exp into `lse` and its loss `lse - x[target]` into `losses` (every
/// element of both), for the rows of `logits` (`targets.len()` rows).
///
/// # Panics
/// If a target is not below the number of classes.
pub fn row_losses<E: Float, O: Sink<E>>(
    logits: &[E],
    targets: &[usize],
    lse: &mut [O],
    losses: &mut [E],
) {
    let n = targets.len();
    assert!(lse.len() == n && losses.len() == n && logits.len() == n * classes(logits, n));
    let v = classes(logits, n);
    if let Some(bad) = targets.iter().find(|&&c| c >= v) {
        panic!("cross_entropy: target {bad} is not below the number of classes ({v})");
    }
    let rows = rows_per_task(v);
    losses
        .par_chunks_mut(rows)
        .zip(lse.par_chunks_mut(rows))
        .zip(logits.par_chunks(rows * v).zip(targets.par_chunks(rows)))
        .for_each(|((losses, lse), (logits, targets))| {
            vectorized(
                #[inline(always)]
                || {
                    for (i, x) in logits.chunks_exact(v).enumerate() {
                        let m = max(x);
                        let row_lse = m + sum_exp(x, m).ln();
                        lse[i].put(row_lse);
                        losses[i] = row_lse - x[targets[i]];
                    }
                },
            )
        });
}

fn classes<E>(logits: &[E], rows: usize) -> usize {
    logits.len() / rows.max(1)
}

/// `dlogits` from the forward's `logits`, `targets` and `lse`, for an upstream gradient `grad`
/// of the mean loss. Writes every element of `dlogits`.
pub fn cross_entropy_backward<E: Float, O: Sink<E>>(
    logits: &[E],
    targets: &[usize],
    lse: &[E],
    grad: E,
    dlogits: &mut [O],
) {
    let scale = grad / E::from_f64(targets.len() as f64);
    softmax_minus_target(logits, targets, lse, scale, dlogits);
}

/// `dlogits = scale · (softmax(logits) - onehot(targets))` row by row, the softmax from the
/// rows' log-sum-exps `lse`. Writes every element of `dlogits`.
pub fn softmax_minus_target<E: Float, O: Sink<E>>(
    logits: &[E],
    targets: &[usize],
    lse: &[E],
    scale: E,
    dlogits: &mut [O],
) {
    let n = targets.len();
    assert_eq!(logits.len(), dlogits.len());
    assert_eq!(lse.len(), n);
    let v = classes(logits, n);
    let rows = rows_per_task(v);
    dlogits
        .par_chunks_mut(rows * v)
        .zip(logits.par_chunks(rows * v))
        .zip(lse.par_chunks(rows).zip(targets.par_chunks(rows)))
        .for_each(|((dx, x), (lse, targets))| {
            vectorized(
                #[inline(always)]
                || {
                    let rows = dx.chunks_exact_mut(v).zip(x.chunks_exact(v));
                    for ((dx, x), (&lse, &c)) in rows.zip(lse.iter().zip(targets)) {
                        for (j, (dx, &x)) in dx.iter_mut().zip(x).enumerate() {
                            dx.put(logit_gradient(x, lse, scale, j == c));
                        }
                    }
                },
            )
        });
}

/// [`softmax_minus_target`] written over the logits themselves: the head's fused loss needs
/// no logits once their gradient exists, and one buffer of `rows × vocab` is 100 MiB less at
/// GPT-2's vocabulary.
pub fn softmax_minus_target_in_place<E: Float>(
    logits: &mut [E],
    targets: &[usize],
    lse: &[E],
    scale: E,
) {
    let n = targets.len();
    assert_eq!(lse.len(), n);
    let v = classes(logits, n);
    let rows = rows_per_task(v);
    logits
        .par_chunks_mut(rows * v)
        .zip(lse.par_chunks(rows).zip(targets.par_chunks(rows)))
        .for_each(|(x, (lse, targets))| {
            vectorized(
                #[inline(always)]
                || {
                    for (x, (&lse, &c)) in x.chunks_exact_mut(v).zip(lse.iter().zip(targets)) {
                        for (j, x) in x.iter_mut().enumerate() {
                            *x = logit_gradient(*x, lse, scale, j == c);
                        }
                    }
                },
            )
        });
}

/// One logit's gradient `scale · (e^{x - lse} - [hit])`, `hit` when it is the target's.
#[inline(always)]
fn logit_gradient<E: Float>(x: E, lse: E, scale: E, hit: bool) -> E {
    let target = if hit { scale } else { E::ZERO };
    scale * (x - lse).exp() - target
}
