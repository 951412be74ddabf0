//! The output head and the loss in one pass over chunks of rows: `logits = x·W + b`, their mean
//! softmax cross-entropy, and (when asked) the gradients of that mean with respect to `x`, `W`
//! and `b`, without the `rows × vocab` logits ever existing whole.
//!
//! With GPT-2's 50,257 tokens the logits of a 16 × 256 batch are 823 MB in `f32`, and the
//! composed path keeps them (and their softmax) from the forward pass to the backward pass.
//! Here each chunk of [`chunk_rows`] rows is computed, scored, turned into its gradient
//! `dlogits = (softmax - onehot) / N` in place and folded into `dx = dlogits·Wᵀ`,
//! `dW += xᵀ·dlogits` (or `dlogitsᵀ·x` for a tied `[vocab, d]` weight) and
//! `db += Σ_rows dlogits` before the next: the memory is one chunk at any vocabulary (8 MiB at
//! small vocabularies, 196 MiB for GPT-2's 1,024 rows). Computing the gradients in the
//! forward pass (as Liger-Kernel's fused linear cross-entropy does) costs no extra product: the
//! loss is the last operation, so its upstream gradient is a scalar the backward pass multiplies
//! them by.
//!
//! The chunks depend on the vocabulary only, never on the thread count, so the results are the
//! same on any machine with the same engine.

use std::mem::MaybeUninit;

use crate::cpu::Float;
use crate::cpu::gemm::{Destination, View, matmul};
use crate::cpu::vector::{add_rows, put_all};
use crate::ops::cross_entropy::kernel::{mean, row_losses, softmax_minus_target_in_place};
use crate::ops::linear::kernel::start_output;

/// Logits per chunk at small vocabularies: 2^21 values, 8 MiB in `f32`.
const CHUNK_VALUES: usize = 1 << 21;
/// The fewest rows per chunk. The weight gradient's product has the chunk's rows as its inner
/// dimension and reads and writes the whole gradient once per chunk: with GPT-2's vocabulary,
/// chunks of 41 rows made a step of a d=256 model 20% slower than the unfused head, chunks of
/// 512 rows 15% faster (`ember bench`, 2-core EPYC, AVX2). At GPT-2 124M's batch 8 x context
/// 256, chunks of 1,024 rows made the step 2.0% faster than 512 (paired median of 6 interleaved
/// rounds, AVX-512 Xeon; the whole batch of 2,048 no faster), for 98 MiB more: one is 196 MiB.
const MIN_CHUNK_ROWS: usize = 1024;

/// Rows scored at once for a vocabulary of `vocab`.
pub fn chunk_rows(vocab: usize) -> usize {
    (CHUNK_VALUES / vocab.max(1)).max(MIN_CHUNK_ROWS)
}

/// How the head's weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadWeight {
    /// `[d, vocab]`: a Linear layer's own weight, as Burn stores it.
    InOut,
    /// `[vocab, d]`: the token embedding, read in place when the head is tied to it.
    Tied,
}

/// The sizes of one call: `rows` rows of `d` features scored over `vocab` classes.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    pub rows: usize,
    pub d: usize,
    pub vocab: usize,
    pub weight: HeadWeight,
}

/// Where the gradients go: `dx` `[rows, d]`, `dw` shaped as the weight, `db` `[vocab]` when
/// there is a bias. Every element is written; they may start uninitialized.
pub struct HeadGradients<'a, E> {
    pub dx: &'a mut [MaybeUninit<E>],
    pub dw: &'a mut [MaybeUninit<E>],
    pub db: Option<&'a mut [MaybeUninit<E>]>,
}

/// The mean cross-entropy of `x·W + b` against `targets`, and its gradients (for an upstream
/// gradient of 1) into `gradients` when given.
///
/// # Panics
/// If the slices do not match `shape`, or a target is not below `vocab`.
pub fn head_loss<E: Float>(
    x: &[E],
    w: &[E],
    bias: Option<&[E]>,
    targets: &[usize],
    shape: HeadShape,
    gradients: Option<HeadGradients<'_, E>>,
) -> E {
    head_loss_in_chunks(
        x,
        w,
        bias,
        targets,
        shape,
        gradients,
        chunk_rows(shape.vocab),
    )
}

/// [`head_loss`] with `chunk` rows at a time (the tests cross chunk edges at small shapes).
pub fn head_loss_in_chunks<E: Float>(
    x: &[E],
    w: &[E],
    bias: Option<&[E]>,
    targets: &[usize],
    HeadShape {
        rows: n,
        d,
        vocab: v,
        weight,
    }: HeadShape,
    mut gradients: Option<HeadGradients<'_, E>>,
    chunk: usize,
) -> E {
    assert!(n > 0 && chunk > 0, "head_loss: no rows");
    assert_eq!(x.len(), n * d, "head_loss: x");
    assert_eq!(w.len(), d * v, "head_loss: weight");
    assert_eq!(targets.len(), n, "head_loss: targets");
    assert!(bias.is_none_or(|b| b.len() == v), "head_loss: bias");
    // The weight as the `d × vocab` matrix of the product, and its transpose.
    let (w_dv, w_vd) = match weight {
        HeadWeight::InOut => (View::rows(w, v), View::transposed(w, v)),
        HeadWeight::Tied => (View::transposed(w, d), View::rows(w, d)),
    };
    let chunk = chunk.min(n);
    // Uninitialized: each chunk's logits are written (the product overwriting them, or the bias
    // laid down for it to add onto, as a Linear layer's output starts) before anything reads
    // them. Zeroed, the allocator's reused block (196 MiB at GPT-2's 8 x 256) was cleared on one
    // thread every step.
    let mut logits = Box::new_uninit_slice(chunk * v);
    let mut db = bias.map(|_| vec![E::ZERO; v]);
    let mut lse = vec![E::ZERO; chunk];
    let mut losses = vec![E::ZERO; n];
    let scale = E::ONE / E::from_f64(n as f64);
    for start in (0..n).step_by(chunk) {
        let m = chunk.min(n - start);
        let rows = start..start + m;
        let xs = &x[start * d..(start + m) * d];
        let (logits, lse, targets) = (&mut logits[..m * v], &mut lse[..m], &targets[rows.clone()]);
        let into = start_output(logits, v, bias, None);
        matmul((m, v, d), View::rows(xs, d), w_dv, logits, into);
        // SAFETY: the product wrote every element (`Overwrite`) or added onto the bias
        // `start_output` wrote into every element, and `MaybeUninit<E>` has `E`'s layout.
        let logits = unsafe { &mut *(std::ptr::from_mut(logits) as *mut [E]) };
        row_losses(logits, targets, lse, &mut losses[rows]);
        let Some(grads) = gradients.as_mut() else {
            continue;
        };
        // The logits become their gradient: the losses above were their last reader.
        softmax_minus_target_in_place(logits, targets, lse, scale);
        let dlogits = &*logits;
        let dl = View::rows(dlogits, v);
        let dx = &mut grads.dx[start * d..(start + m) * d];
        matmul((m, d, v), dl, w_vd, dx, Destination::Overwrite);
        let into = match start {
            0 => Destination::Overwrite,
            _ => Destination::Accumulate,
        };
        match weight {
            HeadWeight::InOut => {
                matmul((d, v, m), View::transposed(xs, d), dl, grads.dw, into);
            }
            HeadWeight::Tied => {
                matmul(
                    (v, d, m),
                    View::transposed(dlogits, v),
                    View::rows(xs, d),
                    grads.dw,
                    into,
                );
            }
        }
        if let Some(db) = &mut db {
            add_rows(db, dlogits);
        }
    }
    if let (Some(HeadGradients { db: Some(out), .. }), Some(db)) = (gradients, &db) {
        put_all(out, db);
    }
    mean(&losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The logits, their loss and its gradients in plain loops, in `f64`.
    fn reference(
        x: &[f64],
        w: &[f64],
        bias: Option<&[f64]>,
        targets: &[usize],
        shape: HeadShape,
    ) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let HeadShape {
            rows: n,
            d,
            vocab: v,
            weight,
        } = shape;
        let at = |i: usize, j: usize| match weight {
            HeadWeight::InOut => i * v + j,
            HeadWeight::Tied => j * d + i,
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; n * d], vec![0.0; d * v], vec![0.0; v]);
        let mut loss = 0.0;
        for r in 0..n {
            let logits: Vec<f64> = (0..v)
                .map(|j| {
                    bias.map_or(0.0, |b| b[j])
                        + (0..d).map(|i| x[r * d + i] * w[at(i, j)]).sum::<f64>()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            loss += lse - logits[targets[r]];
            for j in 0..v {
                let g = ((logits[j] - lse).exp() - f64::from(u8::from(j == targets[r]))) / n as f64;
                db[j] += g;
                for i in 0..d {
                    dx[r * d + i] += g * w[at(i, j)];
                    dw[at(i, j)] += g * x[r * d + i];
                }
            }
        }
        (loss / n as f64, dx, dw, db)
    }

    fn close(a: &[f64], b: &[f64]) {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "element {i}: {a} against {b}"
            );
        }
    }

    #[test]
    fn chunks_at_a_large_vocabulary_give_the_one_chunk_results() {
        // 2,100 rows in chunks of 1,024: two whole chunks and a short one.
        let (n, d, v) = (2100, 3, 5003);
        assert_eq!(chunk_rows(v), 1024);
        let wave = |len: usize, k: f64| (0..len).map(|i| (i as f64 * k).sin()).collect::<Vec<_>>();
        let (x, w) = (wave(n * d, 0.37), wave(d * v, 1.1));
        let targets: Vec<usize> = (0..n).map(|i| (i * 7919) % v).collect();
        let shape = HeadShape {
            rows: n,
            d,
            vocab: v,
            weight: HeadWeight::Tied,
        };
        let run = |chunk: usize| {
            let (mut dx, mut dw) = (
                vec![MaybeUninit::uninit(); n * d],
                vec![MaybeUninit::uninit(); d * v],
            );
            let grads = HeadGradients {
                dx: &mut dx,
                dw: &mut dw,
                db: None,
            };
            let loss = head_loss_in_chunks(&x, &w, None, &targets, shape, Some(grads), chunk);
            // SAFETY: head_loss writes every element of the gradients it is given.
            let read = |v: &[MaybeUninit<f64>]| {
                v.iter()
                    .map(|v| unsafe { v.assume_init() })
                    .collect::<Vec<_>>()
            };
            (loss, read(&dx), read(&dw))
        };
        let (chunked, whole) = (run(chunk_rows(v)), run(n));
        assert!((chunked.0 - whole.0).abs() <= 1e-12 * whole.0.abs());
        close(&chunked.1, &whole.1);
        close(&chunked.2, &whole.2);
    }

    #[test]
    fn every_chunking_gives_the_plain_loops_results() {
        let (n, d, v) = (7, 5, 11);
        let wave = |len: usize, k: f64| (0..len).map(|i| (i as f64 * k).sin()).collect::<Vec<_>>();
        let (x, w, b) = (wave(n * d, 0.7), wave(d * v, 1.3), wave(v, 2.1));
        let targets: Vec<usize> = (0..n).map(|i| (i * 4 + 1) % v).collect();
        for weight in [HeadWeight::InOut, HeadWeight::Tied] {
            for bias in [Some(&b[..]), None] {
                let shape = HeadShape {
                    rows: n,
                    d,
                    vocab: v,
                    weight,
                };
                let (loss, rdx, rdw, rdb) = reference(&x, &w, bias, &targets, shape);
                // One row at a time, chunks that do not divide the rows, and all at once.
                for chunk in [1, 3, n, 64] {
                    let mut dx = vec![MaybeUninit::uninit(); n * d];
                    let mut dw = vec![MaybeUninit::uninit(); d * v];
                    let mut db = vec![MaybeUninit::uninit(); v];
                    let grads = HeadGradients {
                        dx: &mut dx,
                        dw: &mut dw,
                        db: bias.map(|_| &mut db[..]),
                    };
                    let got =
                        head_loss_in_chunks(&x, &w, bias, &targets, shape, Some(grads), chunk);
                    let read = |v: &[MaybeUninit<f64>]| -> Vec<f64> {
                        // SAFETY: head_loss writes every element of the gradients it is given.
                        v.iter().map(|v| unsafe { v.assume_init() }).collect()
                    };
                    assert!(
                        (got - loss).abs() <= 1e-12,
                        "{weight:?} chunk {chunk}: {got} against {loss}"
                    );
                    close(&read(&dx), &rdx);
                    close(&read(&dw), &rdw);
                    if bias.is_some() {
                        close(&read(&db), &rdb);
                    }
                    let alone = head_loss_in_chunks(&x, &w, bias, &targets, shape, None, chunk);
                    assert_eq!(alone, got, "the loss does not depend on the gradients");
                }
            }
        }
    }
}
