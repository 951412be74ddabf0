//! Causal multi-head self-attention straight from the fused projection `qkv` `[B, T, 3d]`
//! (each position's `q | k | v`, head `h` at columns `h·hd..(h+1)·hd` of each) and its bias
//! `[3d]` to the merged heads `y` `[B, T', d]`: no head split or merge copies, no mask tensor,
//! and no key block entirely in the future is touched. The queries are the last `T' = T - past`
//! positions (all of them in training; the new ones when generation keeps the earlier
//! positions' `qkv` as its cache).
//!
//! For one sequence and head, with `s = 1/√hd` and query position `i >= past`:
//! ```text
//! S_ij = s · q_i·k_j  (j <= i)      P_i = softmax(S_i)      y_i = Σ_j P_ij v_j
//! ```
//! The forward goes through the keys in blocks of 64 with a running maximum and sum (an online
//! softmax, as FlashAttention does) and keeps only each query's log-sum-exp
//! `lse_i = log Σ_j e^{S_ij}`, not `P`: at context 1024 a sequence's `P` is 4 MiB per head. The
//! backward recomputes `P_ij = e^{S_ij - lse_i}` block by block:
//! ```text
//! D_i = dy_i·y_i    dP_ij = dy_i·v_j    dS_ij = P_ij (dP_ij - D_i)
//! dq_i = s Σ_j dS_ij k_j    dk_j = s Σ_i dS_ij q_i    dv_j = Σ_i P_ij dy_i
//! ```
//! The projection's bias is added here, where attention copies what it reads anyway (the scaled
//! queries, the transposed keys and values), rather than by the projection in a pass over all of
//! `qkv`; its gradient is summed from the per-head gradients while they are in cache, rather than
//! in a pass over `dqkv`. Where a product reads `qkv` in place the bias enters by algebra: the
//! values' bias adds to `y` unchanged (each row of `P` sums to 1), and the keys' bias adds
//! `s·q_i·b_k` to every score of query `i`, which the softmax cancels, and `s·b_k Σ_j dS_ij = 0`
//! to `dq_i`, which is left out.
//!
//! Each block's products (`S`, `P·V`, `dY·Vᵀ`, `dS·K`, `dSᵀ·Q`, `Pᵀ·dY`) are small matrix
//! products ([`small_matmul`], register-blocked: at these sizes a library's per-call work costs
//! more than the product) on the task's own thread; the tasks are the sequences of the batch,
//! heads in turn, so every task writes its own rows of the outputs and every sum is taken in one
//! fixed order.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::Float;
use crate::cpu::simd::vectorized;
use crate::cpu::vector::{Lhs, Sink, add_rows, dot, max, put_all, small_matmul, sum, sum_parts};

/// Positions per step of [`Head::transpose`]: eight rows' cache lines read, each column's eight
/// values written together.
const POSITIONS: usize = 8;

/// Keys per block: a block's scores, `queries × BLOCK`, and its operands stay in cache.
const BLOCK: usize = 64;

/// Queries per block, from the head size alone (so that the sums, which the backward takes a
/// query block at a time, are the same on every instruction set). Fewer than [`BLOCK`]: the
/// block on the diagonal is computed whole and masked, so its wasted upper triangle shrinks with
/// the query block (at context 64, blocks of 32 queries do 75% of one 64-query block's products,
/// blocks of 16 63%; the causal half is 51%). Measured (a timer of `causal_attention` and its
/// backward, 3 interleaved rounds): 32 made context 64 25-40% faster than 64 on AVX2; with the
/// register tiles' bounds checks gone, 16 is faster again at head sizes 16 and 32 (the tiny,
/// small and medium presets: forward and backward 2-15% on AVX2, 1-6% on AVX-512) but 3-6%
/// slower at GPT-2's 64 on AVX-512, which keeps 32.
fn queries_per_block(head_dim: usize) -> usize {
    if head_dim <= 32 { 16 } else { 32 }
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

    /// Checks the lengths of `qkv`, its bias, `y` (or `dy`) and `lse` against the shape.
    fn check<E>(&self, qkv: Qkv<'_, E>, y: usize, lse: usize) {
        let (b, t, tq, d) = (self.batch, self.time, self.queries(), self.d_model);
        assert!(self.past <= t && d.is_multiple_of(self.heads));
        assert_eq!(qkv.values.len(), b * t * 3 * d);
        assert!(qkv.bias.is_none_or(|bias| bias.len() == 3 * d));
        assert_eq!(y, b * tq * d);
        assert_eq!(lse, b * self.heads * tq);
    }
}

/// What attention reads: the fused projection `qkv` `[B, T, 3d]` and, when the projection left
/// its bias to attention, that bias `[3d]`.
#[derive(Debug, Clone, Copy)]
pub struct Qkv<'a, E> {
    pub values: &'a [E],
    pub bias: Option<&'a [E]>,
}

impl<'a, E: Float> Qkv<'a, E> {
    /// The bias, or `3d` zeros (adding them changes nothing) when there is none.
    fn bias_or_zeros(&self, shape: AttentionShape) -> Cow<'a, [E]> {
        match self.bias {
            Some(bias) => Cow::Borrowed(bias),
            None => Cow::Owned(vec![E::ZERO; 3 * shape.d_model]),
        }
    }
}

/// One sequence and head: its queries, keys and values in the sequence's `qkv` `[T, 3d]`, the
/// bias of `qkv`'s columns, and its keys transposed with their bias (`[hd, T]`, each position's a
/// column), made once per head so that the score products read rows (the backward transposes the
/// values too).
struct Head<'a, E> {
    qkv: &'a [E],
    bias: &'a [E],
    shape: AttentionShape,
    head: usize,
    keys_t: &'a [E],
}

/// The columns of a head in a `qkv` row: queries, keys and values.
#[derive(Clone, Copy)]
enum Part {
    Queries = 0,
    Keys = 1,
    Values = 2,
}

impl Part {
    /// Head `head`'s columns of this part in a `qkv` row (and in its bias).
    #[inline(always)]
    fn columns(self, shape: AttentionShape, head: usize) -> Range<usize> {
        let hd = shape.head_dim();
        let first = self as usize * shape.d_model + head * hd;
        first..first + hd
    }
}

impl<'a, E: Float> Head<'a, E> {
    /// Transposes `part` of head `head` of the sequence's `qkv`, plus its bias, into `out`
    /// (`[hd, T]`).
    ///
    /// Never inlined, so that it is compiled for the baseline instruction set and not inside
    /// [`vectorized`]: there LLVM makes the strided reads AVX-512 or AVX2 gathers, which Intel's
    /// microcode fix for Gather Data Sampling (2023) made slower than plain loads. Measured on a
    /// Xeon with AVX-512 (`cargo bench --bench cpu -- attention`): the gathers were about a tenth
    /// of attention's backward at GPT-2's shape.
    #[inline(never)]
    fn transpose(
        (qkv, bias): (&[E], &[E]),
        shape: AttentionShape,
        head: usize,
        part: Part,
        out: &mut [E],
    ) {
        let (t, d) = (shape.time, shape.d_model);
        let columns = part.columns(shape, head);
        let out = &mut out[..shape.head_dim() * t];
        // [`POSITIONS`] rows at a time, column by column within them, then the rows left over.
        // Column by column over all `T` rows, each column's reads crossed every row of the
        // sequence (9 KiB apart at GPT-2's width): at GPT-2's 8 x 256 the forward took 8.6% and
        // the backward 4.7% longer (`cargo bench --bench cpu -- attention`, AVX-512, medians of
        // 4 interleaved rounds), at the small preset's shape 1-3%.
        let mut r0 = 0;
        while r0 + POSITIONS <= t {
            let rows: [&[E]; POSITIONS] =
                std::array::from_fn(|r| &qkv[(r0 + r) * 3 * d..][columns.clone()]);
            for (i, c) in columns.clone().enumerate() {
                let b = bias[c];
                let o = &mut out[i * t + r0..][..POSITIONS];
                for (o, row) in o.iter_mut().zip(&rows) {
                    *o = row[i] + b;
                }
            }
            r0 += POSITIONS;
        }
        for r in r0..t {
            let row = &qkv[r * 3 * d..][columns.clone()];
            for (i, c) in columns.clone().enumerate() {
                out[i * t + r] = row[i] + bias[c];
            }
        }
    }

    /// Part `part` of the bias, this head's columns.
    #[inline(always)]
    fn bias(&self, part: Part) -> &'a [E] {
        &self.bias[part.columns(self.shape, self.head)]
    }

    /// `share[this head's columns of part] += Σ rows` (`hd` wide) when there is a share: the
    /// bias gradient summed from the head's gradients while they are in cache.
    #[inline(always)]
    fn add_to_share(&self, share: &mut Option<Vec<E>>, part: Part, rows: &[E]) {
        if let Some(share) = share {
            add_rows(&mut share[part.columns(self.shape, self.head)], rows);
        }
    }

    /// `part`'s rows from position `j0`, `3d` apart.
    #[inline(always)]
    fn rows(&self, part: Part, j0: usize) -> &'a [E] {
        let first = part.columns(self.shape, self.head).start;
        &self.qkv[j0 * 3 * self.shape.d_model + first..]
    }

    /// The scaled queries `s·(q + b_q)` of the `n` queries from `r0`, row by row into `out`
    /// (`n × hd`): the forward and the backward compute the same scores from them, and the
    /// backward the keys' gradient.
    #[inline(always)]
    fn scaled_queries(&self, r0: usize, n: usize, out: &mut [E]) {
        let (d, hd) = (self.shape.d_model, self.shape.head_dim());
        let scale = E::from_f64(1.0 / (hd as f64).sqrt());
        let (q, bias) = (
            self.rows(Part::Queries, self.shape.past + r0),
            self.bias(Part::Queries),
        );
        for (r, row) in out[..n * hd].chunks_exact_mut(hd).enumerate() {
            for ((o, &x), &b) in row.iter_mut().zip(&q[r * 3 * d..]).zip(bias) {
                *o = (x + b) * scale;
            }
        }
    }

    /// The scores `S = (s·Q)·Kᵀ` of `n` queries (whose scaled rows are `qs`) against the `nk`
    /// keys from `j0`, into `scores` (`n × nk`).
    #[inline(always)]
    fn scores(&self, qs: &[E], (n, j0, nk): (usize, usize, usize), scores: &mut [E]) {
        let (t, hd) = (self.shape.time, self.shape.head_dim());
        let q = Lhs::Rows(qs, hd);
        small_matmul((n, nk, hd), q, (&self.keys_t[j0..], t), (scores, nk), false);
    }

    /// How many of the `nk` keys from `j0` query `r` sees (causality).
    #[inline(always)]
    fn visible(&self, r: usize, j0: usize, nk: usize) -> usize {
        (self.shape.past + r + 1).saturating_sub(j0).min(nk)
    }
}

/// `row[j] = e^{row[j] - shift}` for the `seen` visible keys and 0 for the masked ones after
/// them, in one loop over the whole row (the masked entries' exponentials computed and dropped;
/// `exp` clamps its input, so they are finite). Over just the visible keys, whose number differs
/// from row to row on the diagonal block, each row ended in a narrower and a scalar remainder of
/// up to 15 `exp`s, and the zeroing was a `memset` call per row. The row's sum is unchanged: the
/// zeros add exactly in the lanes where the remainder went.
#[inline(always)]
fn exp_visible<E: Float>(row: &mut [E], shift: E, seen: usize) {
    for (j, v) in row.iter_mut().enumerate() {
        let e = (*v - shift).exp();
        *v = if j < seen { e } else { E::ZERO };
    }
}

/// The key blocks query block `(r0, n)` sees: `(j0, nk)`, up to its last query's position.
#[inline(always)]
fn key_blocks(past: usize, r0: usize, n: usize) -> impl Iterator<Item = (usize, usize)> {
    let keys = past + r0 + n;
    (0..keys)
        .step_by(BLOCK)
        .map(move |j0| (j0, BLOCK.min(keys - j0)))
}

/// `y` `[B, T', d]` and each query's log-sum-exp `lse` `[B, H, T']` from `qkv` `[B, T, 3d]`
/// and its bias; writes every element of both.
pub fn causal_attention<E: Float, O: Sink<E>>(
    qkv: Qkv<'_, E>,
    shape: AttentionShape,
    y: &mut [O],
    lse: &mut [O],
) {
    shape.check(qkv, y.len(), lse.len());
    let (t, tq, h, d, hd) = (
        shape.time,
        shape.queries(),
        shape.heads,
        shape.d_model,
        shape.head_dim(),
    );
    let bias = &qkv.bias_or_zeros(shape)[..];
    y.par_chunks_mut(tq * d)
        .zip(lse.par_chunks_mut(h * tq))
        .zip(qkv.values.par_chunks(t * 3 * d))
        .for_each(|((y, lse), qkv)| {
            vectorized(
                #[inline(always)]
                || {
                    let queries = queries_per_block(hd);
                    let mut qs = vec![E::ZERO; queries * hd];
                    let mut scores = vec![E::ZERO; queries * BLOCK];
                    let mut acc = vec![E::ZERO; queries * hd];
                    let (mut m, mut l) = (vec![E::ZERO; queries], vec![E::ZERO; queries]);
                    let mut keys_t = vec![E::ZERO; hd * t];
                    for head in 0..h {
                        Head::transpose((qkv, bias), shape, head, Part::Keys, &mut keys_t);
                        let at = Head {
                            qkv,
                            bias,
                            shape,
                            head,
                            keys_t: &keys_t,
                        };
                        for r0 in (0..tq).step_by(queries) {
                            let n = queries.min(tq - r0);
                            at.scaled_queries(r0, n, &mut qs);
                            acc[..n * hd].fill(E::ZERO);
                            m[..n].fill(E::NEG_INFINITY);
                            l[..n].fill(E::ZERO);
                            for (j0, nk) in key_blocks(shape.past, r0, n) {
                                at.scores(&qs, (n, j0, nk), &mut scores);
                                for r in 0..n {
                                    let row = &mut scores[r * nk..(r + 1) * nk];
                                    let seen = at.visible(r0 + r, j0, nk);
                                    if seen == 0 {
                                        row.fill(E::ZERO);
                                        continue;
                                    }
                                    // The running softmax: rescale what the earlier blocks
                                    // added by e^{old max - new max}.
                                    let new_max = m[r].max(max(&row[..seen]));
                                    let rescale = (m[r] - new_max).exp();
                                    // Two loops, not one with a running sum: a sum in
                                    // program order would keep `exp` from vectorizing.
                                    exp_visible(row, new_max, seen);
                                    l[r] = l[r] * rescale + sum(row);
                                    m[r] = new_max;
                                    acc[r * hd..(r + 1) * hd]
                                        .iter_mut()
                                        .for_each(|a| *a *= rescale);
                                }
                                // acc += P·V, the values read in place without their bias
                                let p = Lhs::Rows(&scores, nk);
                                let v = at.rows(Part::Values, j0);
                                small_matmul((n, hd, nk), p, (v, 3 * d), (&mut acc, hd), true);
                            }
                            // y = P·V / l + b_v: the normalised probabilities sum to 1.
                            let bias = at.bias(Part::Values);
                            for r in 0..n {
                                let inv = E::ONE / l[r];
                                let out = &mut y[(r0 + r) * d + head * hd..][..hd];
                                let acc = &acc[r * hd..(r + 1) * hd];
                                for ((o, &a), &b) in out.iter_mut().zip(acc).zip(bias) {
                                    o.put(a * inv + b);
                                }
                                lse[head * tq + r0 + r].put(m[r] + l[r].ln());
                            }
                        }
                    }
                },
            )
        });
}

/// `dqkv` `[B, T, 3d]` from the forward's `qkv` and bias, output `y` and `lse`, and the gradient
/// `dy` `[B, T', d]`, and the bias's gradient `db` `[3d]` when asked for; writes every element
/// of both.
pub fn causal_attention_backward<E: Float, O: Sink<E>>(
    qkv: Qkv<'_, E>,
    (y, lse): (&[E], &[E]),
    dy: &[E],
    shape: AttentionShape,
    dqkv: &mut [O],
    db: Option<&mut [MaybeUninit<E>]>,
) {
    shape.check(qkv, dy.len(), lse.len());
    assert_eq!(y.len(), dy.len());
    assert_eq!(dqkv.len(), qkv.values.len());
    assert!(db.as_ref().is_none_or(|db| db.len() == 3 * shape.d_model));
    let (t, tq, past, h, d, hd) = (
        shape.time,
        shape.queries(),
        shape.past,
        shape.heads,
        shape.d_model,
        shape.head_dim(),
    );
    let scale = E::from_f64(1.0 / (hd as f64).sqrt());
    let bias = &qkv.bias_or_zeros(shape)[..];
    let summing = db.is_some();
    // Each sequence's share of `db` (empty when it is not asked for), added in sequence order.
    let shares: Vec<Vec<E>> = dqkv
        .par_chunks_mut(t * 3 * d)
        .zip(qkv.values.par_chunks(t * 3 * d))
        .zip(y.par_chunks(tq * d).zip(dy.par_chunks(tq * d)))
        .zip(lse.par_chunks(h * tq))
        .map(|(((dqkv, qkv), (y, dy)), lse)| {
            vectorized(
                #[inline(always)]
                || {
                    let queries = queries_per_block(hd);
                    let mut qs = vec![E::ZERO; queries * hd];
                    let (mut p, mut ds) = (
                        vec![E::ZERO; queries * BLOCK],
                        vec![E::ZERO; queries * BLOCK],
                    );
                    let mut dq = vec![E::ZERO; queries * hd];
                    let (mut dk, mut dv) = (vec![E::ZERO; t * hd], vec![E::ZERO; t * hd]);
                    let (mut keys_t, mut values_t) = (vec![E::ZERO; hd * t], vec![E::ZERO; hd * t]);
                    let mut big_d = vec![E::ZERO; tq];
                    let mut share = summing.then(|| vec![E::ZERO; 3 * d]);
                    // Positions before the first query get no query gradient.
                    for row in dqkv[..past * 3 * d].chunks_exact_mut(3 * d) {
                        row[..d].iter_mut().for_each(|dq| dq.put(E::ZERO));
                    }
                    for head in 0..h {
                        Head::transpose((qkv, bias), shape, head, Part::Keys, &mut keys_t);
                        Head::transpose((qkv, bias), shape, head, Part::Values, &mut values_t);
                        let at = Head {
                            qkv,
                            bias,
                            shape,
                            head,
                            keys_t: &keys_t,
                        };
                        let lse = &lse[head * tq..(head + 1) * tq];
                        for (r, dr) in big_d.iter_mut().enumerate() {
                            let row = r * d + head * hd..r * d + (head + 1) * hd;
                            *dr = dot(&dy[row.clone()], &y[row]);
                        }
                        dk.fill(E::ZERO);
                        dv.fill(E::ZERO);
                        for r0 in (0..tq).step_by(queries) {
                            let n = queries.min(tq - r0);
                            at.scaled_queries(r0, n, &mut qs);
                            dq[..n * hd].fill(E::ZERO);
                            let dy_block = &dy[r0 * d + head * hd..];
                            for (j0, nk) in key_blocks(past, r0, n) {
                                at.scores(&qs, (n, j0, nk), &mut p);
                                for r in 0..n {
                                    let row = &mut p[r * nk..(r + 1) * nk];
                                    let seen = at.visible(r0 + r, j0, nk);
                                    exp_visible(row, lse[r0 + r], seen);
                                }
                                // dV += Pᵀ·dY
                                let p_t = Lhs::Columns(&p, nk);
                                let dv = &mut dv[j0 * hd..];
                                small_matmul((nk, hd, n), p_t, (dy_block, d), (dv, hd), true);
                                // dP = dY·Vᵀ, then dS/s = P∘(dP - D) in its place
                                let dy_rows = Lhs::Rows(dy_block, d);
                                small_matmul(
                                    (n, nk, hd),
                                    dy_rows,
                                    (&values_t[j0..], t),
                                    (&mut ds, nk),
                                    false,
                                );
                                for r in 0..n {
                                    let (pr, dr) = (&p[r * nk..(r + 1) * nk], big_d[r0 + r]);
                                    for (g, &pv) in ds[r * nk..(r + 1) * nk].iter_mut().zip(pr) {
                                        *g = pv * (*g - dr);
                                    }
                                }
                                // dQ/s += (dS/s)·K, the keys read in place without their bias
                                // (see the module's notes); dK += (dS/s)ᵀ·(s·Q), from the
                                // scaled queries with their bias.
                                let ds_rows = Lhs::Rows(&ds, nk);
                                let keys = at.rows(Part::Keys, j0);
                                small_matmul(
                                    (n, hd, nk),
                                    ds_rows,
                                    (keys, 3 * d),
                                    (&mut dq, hd),
                                    true,
                                );
                                let ds_t = Lhs::Columns(&ds, nk);
                                let dk = &mut dk[j0 * hd..];
                                small_matmul((nk, hd, n), ds_t, (&qs, hd), (dk, hd), true);
                            }
                            let dq = &mut dq[..n * hd];
                            dq.iter_mut().for_each(|g| *g *= scale);
                            for (r, dq) in dq.chunks_exact(hd).enumerate() {
                                let row = (past + r0 + r) * 3 * d + head * hd;
                                put_all(&mut dqkv[row..row + hd], dq);
                            }
                            at.add_to_share(&mut share, Part::Queries, dq);
                        }
                        for j in 0..t {
                            let row = j * 3 * d + head * hd;
                            put_all(&mut dqkv[row + d..row + d + hd], &dk[j * hd..(j + 1) * hd]);
                            put_all(
                                &mut dqkv[row + 2 * d..row + 2 * d + hd],
                                &dv[j * hd..(j + 1) * hd],
                            );
                        }
                        at.add_to_share(&mut share, Part::Keys, &dk);
                        at.add_to_share(&mut share, Part::Values, &dv);
                    }
                    share.unwrap_or_default()
                },
            )
        })
        .collect();
    if let Some(db) = db {
        sum_parts(&shares, db);
    }
}
