//! LayerNorm over the last dimension, forward and backward, one pass over each row.
//!
//! Forward, per row `x` of `d` values: `μ = mean(x)`, `σ⁻¹ = 1/√(var(x) + ε)` (biased variance,
//! as PyTorch), `x̂ = (x - μ)·σ⁻¹`, `y = γ·x̂ + β`. `μ` and `σ⁻¹` are kept for the backward pass.
//!
//! Backward, with `g = dy·γ`: `dx = σ⁻¹·(g - mean(g) - x̂·mean(g·x̂))`, `dγ = Σ_rows dy·x̂`,
//! `dβ = Σ_rows dy`. The column sums are taken over fixed blocks of rows and the block sums added
//! in block order, so the result does not depend on how many threads ran.

use rayon::prelude::*;

use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Sink, dot, sum, sum_sq_dev};
use crate::cpu::{Float, rows_per_task};

/// Normalizes the rows of `x` (`rows × d`) into `y`; writes each row's mean and inverse standard
/// deviation. `beta` is `None` for a LayerNorm without bias. Writes every element of the outputs.
pub fn layer_norm<E: Float, O: Sink<E>>(
    x: &[E],
    gamma: &[E],
    beta: Option<&[E]>,
    eps: f64,
    y: &mut [O],
    mean: &mut [O],
    rstd: &mut [O],
) {
    let d = gamma.len();
    assert_eq!(x.len(), y.len());
    assert_eq!(x.len(), d * mean.len());
    assert_eq!(mean.len(), rstd.len());
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(x.par_chunks(rows * d))
        .zip(mean.par_chunks_mut(rows).zip(rstd.par_chunks_mut(rows)))
        .for_each(|((y, x), (mean, rstd))| {
            vectorized(
                #[inline(always)]
                || {
                    let rows = x.chunks_exact(d).zip(y.chunks_exact_mut(d));
                    for ((x, y), (m, r)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
                        let n = E::from_f64(d as f64);
                        let mu = sum(x) / n;
                        let inv = E::ONE / (sum_sq_dev(x, mu) / n + E::from_f64(eps)).sqrt();
                        match beta {
                            Some(beta) => {
                                for j in 0..d {
                                    y[j].put(((x[j] - mu) * inv).mul_add(gamma[j], beta[j]));
                                }
                            }
                            None => {
                                for j in 0..d {
                                    y[j].put((x[j] - mu) * inv * gamma[j]);
                                }
                            }
                        }
                        m.put(mu);
                        r.put(inv);
                    }
                },
            )
        });
}

/// Rows per block of the column sums: fixed, so that the sums are the same on any thread count.
const BLOCK_ROWS: usize = 32;

/// Gradients of [`layer_norm`]: `dx` (`rows × d`), and `dgamma` (and `dbeta` when the LayerNorm
/// has a bias), each `d`. With `onto` (`rows × d`: a gradient `x` already has from its other
/// reader, the residual stream's add), `dx` is that plus LayerNorm's share, summed as it is
/// written rather than in a separate pass.
#[allow(clippy::too_many_arguments)] // the forward's inputs and saved statistics, and three outputs
/// Writes every element of the outputs.
pub fn layer_norm_backward<E: Float, O: Sink<E>>(
    x: &[E],
    gamma: &[E],
    mean: &[E],
    rstd: &[E],
    dy: &[E],
    onto: Option<&[E]>,
    dx: &mut [O],
    dgamma: &mut [O],
    dbeta: Option<&mut [O]>,
) {
    let d = gamma.len();
    assert_eq!(x.len(), dy.len());
    assert_eq!(x.len(), dx.len());
    assert_eq!(x.len(), d * mean.len());
    assert!(
        onto.is_none_or(|o| o.len() == x.len()),
        "a gradient of another shape"
    );
    // Per block of rows: dx for those rows, and that block's sums of dy·x̂ and dy.
    let partial: Vec<(Vec<E>, Vec<E>)> = dx
        .par_chunks_mut(BLOCK_ROWS * d)
        .zip(
            x.par_chunks(BLOCK_ROWS * d)
                .zip(dy.par_chunks(BLOCK_ROWS * d)),
        )
        .zip(mean.par_chunks(BLOCK_ROWS).zip(rstd.par_chunks(BLOCK_ROWS)))
        .enumerate()
        .map(|(block, ((dx, (x, dy)), (mean, rstd)))| {
            let onto = onto.map(|o| &o[block * BLOCK_ROWS * d..][..dx.len()]);
            vectorized(
                #[inline(always)]
                || {
                    let (mut dg, mut db) = (vec![E::ZERO; d], vec![E::ZERO; d]);
                    let mut xhat = vec![E::ZERO; d];
                    let mut g = vec![E::ZERO; d];
                    let n = E::from_f64(d as f64);
                    for (i, (&mu, &inv)) in mean.iter().zip(rstd).enumerate() {
                        let span = i * d..(i + 1) * d;
                        let (x, dy, dx) = (&x[span.clone()], &dy[span.clone()], &mut dx[span]);
                        for j in 0..d {
                            xhat[j] = (x[j] - mu) * inv;
                            g[j] = dy[j] * gamma[j];
                            dg[j] += dy[j] * xhat[j];
                            db[j] += dy[j];
                        }
                        let mean_g = sum(&g) / n;
                        let mean_gx = dot(&g, &xhat) / n;
                        let own = |j: usize| inv * (g[j] - mean_g - xhat[j] * mean_gx);
                        match onto {
                            Some(onto) => {
                                let onto = &onto[i * d..(i + 1) * d];
                                for (j, (dx, &o)) in dx.iter_mut().zip(onto).enumerate() {
                                    dx.put(o + own(j));
                                }
                            }
                            None => {
                                for (j, dx) in dx.iter_mut().enumerate() {
                                    dx.put(own(j));
                                }
                            }
                        }
                    }
                    (dg, db)
                },
            )
        })
        .collect();
    for (j, dg) in dgamma.iter_mut().enumerate() {
        dg.put(
            partial
                .iter()
                .fold(E::ZERO, |sum, (block, _)| sum + block[j]),
        );
    }
    if let Some(dbeta) = dbeta {
        for (j, db) in dbeta.iter_mut().enumerate() {
            db.put(
                partial
                    .iter()
                    .fold(E::ZERO, |sum, (_, block)| sum + block[j]),
            );
        }
    }
}
