//! Causal multi-head self-attention straight from the fused projection `qkv` `[B, T, 3d]`
//! (each position's `q | k | v`, head `h` at columns `h·hd..(h+1)·hd` of each) to the merged
//! heads `y` `[B, T', d]`: no head split or merge copies, no mask tensor, and the masked half of
//! the scores is never computed. The queries are the last `T' = T - past` positions (all of them
//! in training; the new ones when generation keeps the earlier positions' `qkv` as its cache).
//!
//! For one sequence and head, with `s = 1/√hd` and query position `i >= past`:
//! ```text
//! S_ij = s · q_i·k_j  (j <= i)      P_i = softmax(S_i)      y_i = Σ_j P_ij v_j
//! ```
//! `P` `[B, H, T', T]` is kept for the backward pass (zero above the diagonal): at this model's
//! context a head's `P` is a few KiB, cheaper to keep than to recompute flash-attention style.
//! Backward, from `dy`:
//! ```text
//! dP_ij = dy_i·v_j    D_i = Σ_j P_ij dP_ij    dS_ij = P_ij (dP_ij - D_i)
//! dq_i = s Σ_j dS_ij k_j    dk_j = s Σ_i dS_ij q_i    dv_j = Σ_i P_ij dy_i
//! ```
//! Work is split by sequence (one task per batch row, heads in turn), so every task writes its
//! own rows of the outputs. The inner loops run over `j` or over the head dimension, both
//! contiguous, so they vectorize.

use rayon::prelude::*;

use crate::cpu::Float;
use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Sink, dot, max, put_all, sum, vec_mat};

/// `n` rounded up to a whole number of 16-float vectors, at most `limit`.
#[inline(always)]
fn padded(n: usize, limit: usize) -> usize {
    n.next_multiple_of(16).min(limit)
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    /// Positions in `qkv` (`T`).
    pub time: usize,
    /// Positions before the first query (0 in training).
    pub past: usize,
    pub heads: usize,
    /// Model width `d` (`heads × head_dim`).
    pub d_model: usize,
}

impl AttentionShape {
    fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// Query positions, `T'`.
    pub fn queries(&self) -> usize {
        self.time - self.past
    }

    fn scale<E: Float>(&self) -> E {
        E::from_f64(1.0 / (self.head_dim() as f64).sqrt())
    }

    /// Checks the lengths of `qkv`, `y` (or `dy`) and `probs` against the shape; returns the
    /// sizes the loops use, `(T, T', past, H, d)`.
    fn check<E>(&self, qkv: &[E], y: usize, probs: usize) -> (usize, usize, usize, usize, usize) {
        let (b, t, tq, d) = (self.batch, self.time, self.queries(), self.d_model);
        assert!(self.past <= t && d.is_multiple_of(self.heads));
        assert_eq!(qkv.len(), b * t * 3 * d);
        assert_eq!(y, b * tq * d);
        assert_eq!(probs, b * self.heads * tq * t);
        (t, tq, self.past, self.heads, d)
    }
}

/// `y` `[B, T', d]` and `probs` `[B, H, T', T]` from `qkv` `[B, T, 3d]`; writes every element
/// of both.
pub fn causal_attention<E: Float, O: Sink<E>>(
    qkv: &[E],
    shape: AttentionShape,
    y: &mut [O],
    probs: &mut [O],
) {
    let (t, tq, past, h, d) = shape.check(qkv, y.len(), probs.len());
    let (hd, scale) = (shape.head_dim(), shape.scale::<E>());
    y.par_chunks_mut(tq * d)
        .zip(probs.par_chunks_mut(h * tq * t))
        .zip(qkv.par_chunks(t * 3 * d))
        .for_each(|((y, probs), qkv)| {
            vectorized(
                #[inline(always)]
                || {
                    // Keys of one head transposed, `[hd, T]`: a row of scores is then the
                    // query times this matrix.
                    let mut keys_t = vec![E::ZERO; hd * t];
                    let mut q = vec![E::ZERO; hd];
                    let mut p = vec![E::ZERO; t];
                    for head in 0..h {
                        let (q0, k0, v0) = (head * hd, d + head * hd, 2 * d + head * hd);
                        transpose_into(&mut keys_t, &qkv[k0..], 3 * d, t, hd);
                        let probs = &mut probs[head * tq * t..(head + 1) * tq * t];
                        for (r, i) in (past..t).enumerate() {
                            for (q, &x) in q.iter_mut().zip(&qkv[i * 3 * d + q0..]) {
                                *q = x * scale;
                            }
                            // Scores up to a whole number of vectors past the diagonal (where
                            // keys exist): no scalar tail; the extra ones are overwritten.
                            vec_mat(&mut p[..padded(i + 1, t)], &q, &keys_t, t);
                            softmax_in_place(&mut p[..=i]);
                            p[i + 1..].fill(E::ZERO);
                            put_all(&mut probs[r * t..(r + 1) * t], &p);
                            let out = &mut y[r * d + head * hd..r * d + (head + 1) * hd];
                            vec_mat(out, &p[..=i], &qkv[v0..], 3 * d);
                        }
                    }
                },
            )
        });
}

/// `dqkv` `[B, T, 3d]` from the forward's `qkv` and `probs` and the gradient `dy` `[B, T', d]`;
/// writes every element of it.
pub fn causal_attention_backward<E: Float, O: Sink<E>>(
    qkv: &[E],
    probs: &[E],
    dy: &[E],
    shape: AttentionShape,
    dqkv: &mut [O],
) {
    let (t, tq, past, h, d) = shape.check(qkv, dy.len(), probs.len());
    assert_eq!(dqkv.len(), qkv.len());
    let (hd, scale) = (shape.head_dim(), shape.scale::<E>());
    dqkv.par_chunks_mut(t * 3 * d)
        .zip(qkv.par_chunks(t * 3 * d))
        .zip(probs.par_chunks(h * tq * t).zip(dy.par_chunks(tq * d)))
        .for_each(|((dqkv, qkv), (probs, dy))| {
            vectorized(
                #[inline(always)]
                || {
                    // Positions before the first query get no query gradient.
                    for row in dqkv[..past * 3 * d].chunks_exact_mut(3 * d) {
                        row[..d].iter_mut().for_each(|dq| dq.put(E::ZERO));
                    }
                    let mut values_t = vec![E::ZERO; hd * t];
                    // dS of one head, `[T', T]`, already scaled by s.
                    let mut ds = vec![E::ZERO; tq * t];
                    let (mut p_col, mut ds_col) = (vec![E::ZERO; tq], vec![E::ZERO; tq]);
                    for head in 0..h {
                        let (q0, k0, v0) = (head * hd, d + head * hd, 2 * d + head * hd);
                        let dy0 = head * hd;
                        transpose_into(&mut values_t, &qkv[v0..], 3 * d, t, hd);
                        let probs = &probs[head * tq * t..(head + 1) * tq * t];
                        // Query by query: dS_i from dP_i = dy_i·Vᵀ, then dq_i = dS_i·K.
                        for (r, i) in (past..t).enumerate() {
                            let p = &probs[r * t..r * t + i + 1];
                            let dy_i = &dy[r * d + dy0..r * d + dy0 + hd];
                            let ds_i = &mut ds[r * t..(r + 1) * t];
                            vec_mat(&mut ds_i[..padded(i + 1, t)], dy_i, &values_t, t);
                            let big_d = dot(p, &ds_i[..=i]);
                            for (ds, &p) in ds_i[..=i].iter_mut().zip(p) {
                                *ds = p * (*ds - big_d) * scale;
                            }
                            let dq = &mut dqkv[i * 3 * d + q0..i * 3 * d + q0 + hd];
                            vec_mat(dq, &ds_i[..=i], &qkv[k0..], 3 * d);
                        }
                        // Key by key, over the queries that see it: dk_j = dS_·jᵀ·Q and
                        // dv_j = P_·jᵀ·dY.
                        for j in 0..t {
                            let r0 = j.saturating_sub(past);
                            let n = tq - r0;
                            for (r, (pc, dc)) in (r0..tq).zip(p_col.iter_mut().zip(&mut ds_col)) {
                                (*pc, *dc) = (probs[r * t + j], ds[r * t + j]);
                            }
                            let row = j * 3 * d;
                            let first_q = (past + r0) * 3 * d + q0;
                            vec_mat(
                                &mut dqkv[row + k0..row + k0 + hd],
                                &ds_col[..n],
                                &qkv[first_q..],
                                3 * d,
                            );
                            let first_dy = r0 * d + dy0;
                            vec_mat(
                                &mut dqkv[row + v0..row + v0 + hd],
                                &p_col[..n],
                                &dy[first_dy..],
                                d,
                            );
                        }
                    }
                },
            )
        });
}

/// `out` `[cols, rows]` ← the `rows × cols` block of `m` that starts at `m[0]`, rows `stride`
/// apart.
#[inline(always)]
fn transpose_into<E: Float>(out: &mut [E], m: &[E], stride: usize, rows: usize, cols: usize) {
    for r in 0..rows {
        for (c, &v) in m[r * stride..r * stride + cols].iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
}

/// `x ← softmax(x)`.
#[inline(always)]
fn softmax_in_place<E: Float>(x: &mut [E]) {
    let m = max(x);
    for v in x.iter_mut() {
        *v = (*v - m).exp();
    }
    let inv = E::ONE / sum(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}
