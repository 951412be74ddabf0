//! The Linear layer `y = x·W + b` (`W` `[in, out]` as Burn stores it) and its backward pass
//! `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ_rows dy`, with the bias folded into the product (the
//! output starts as the bias and the product is accumulated onto it). A residual branch's output
//! projection `r + x·W + b` is one call the same way: the output starts as `r + b`, which spares
//! the separate add (a pass over three `m × n` tensors on one thread, and an allocation) and its
//! bookkeeping; its gradient is `dy` itself. [`linear_stored`] is the same forward for a weight
//! stored `[out, in]` too (a tied head's table at generation). The products are
//! [`crate::cpu::gemm`]'s.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::gemm::{Destination, View, matmul};
use crate::cpu::vector::{add_rows, sum_parts};
use crate::cpu::{Float, rows_per_task};
use crate::ops::head_loss::kernel::HeadWeight;

/// `y` (`m × n`) `= onto + x·w + bias` for `x` `m × k`, `w` `k × n`, and `onto` (the residual
/// stream, `m × n`) and `bias` (`n`) where given. Writes every element of `y`, which may start
/// uninitialized.
pub fn linear<E: Float>(
    x: &[E],
    w: &[E],
    bias: Option<&[E]>,
    onto: Option<&[E]>,
    shape: (usize, usize, usize),
    y: &mut [MaybeUninit<E>],
) {
    linear_stored(x, (w, HeadWeight::InOut), bias, onto, shape, y);
}

/// [`linear`] with the weight stored either way: `[in, out]` ([`HeadWeight::InOut`]), or
/// `[out, in]` ([`HeadWeight::Tied`], a head tied to the token embedding), read in place as a
/// transposed view.
pub(crate) fn linear_stored<E: Float>(
    x: &[E],
    (w, layout): (&[E], HeadWeight),
    bias: Option<&[E]>,
    onto: Option<&[E]>,
    (m, k, n): (usize, usize, usize),
    y: &mut [MaybeUninit<E>],
) {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), k * n);
    assert_eq!(y.len(), m * n);
    assert!(
        onto.is_none_or(|r| r.len() == m * n),
        "a residual of another shape"
    );
    let w = match layout {
        HeadWeight::InOut => View::rows(w, n),
        HeadWeight::Tied => View::transposed(w, k),
    };
    let output = start_output(y, n, bias, onto);
    matmul((m, n, k), View::rows(x, k), w, y, output);
}

/// Starts a product's output `y` (rows `n` wide) as what the product is to be accumulated onto,
/// `onto + bias` in every row (either may be absent), on rayon's threads, and says how the
/// product goes into it: [`Destination::Accumulate`], or [`Destination::Overwrite`] with nothing
/// written when there is neither. The output head starts its logits this way too.
pub(crate) fn start_output<E: Float>(
    y: &mut [MaybeUninit<E>],
    n: usize,
    bias: Option<&[E]>,
    onto: Option<&[E]>,
) -> Destination {
    if bias.is_none() && onto.is_none() {
        return Destination::Overwrite;
    }
    let rows = rows_per_task(n);
    y.par_chunks_mut(n * rows)
        .enumerate()
        .for_each(|(task, block)| {
            let onto = onto.map(|r| &r[task * rows * n..][..block.len()]);
            start_rows(block, n, bias, onto);
        });
    Destination::Accumulate
}

/// What the product is accumulated onto: `onto + bias`, `onto`, or `bias` in every row.
fn start_rows<E: Float>(
    y: &mut [MaybeUninit<E>],
    n: usize,
    bias: Option<&[E]>,
    onto: Option<&[E]>,
) {
    match (bias, onto) {
        (Some(bias), Some(onto)) => {
            for (row, r) in y.chunks_exact_mut(n).zip(onto.chunks_exact(n)) {
                for ((y, &r), &b) in row.iter_mut().zip(r).zip(bias) {
                    y.write(r + b);
                }
            }
        }
        (None, Some(onto)) => {
            for (y, &r) in y.iter_mut().zip(onto) {
                y.write(r);
            }
        }
        (Some(bias), None) => {
            for row in y.chunks_exact_mut(n) {
                for (y, &b) in row.iter_mut().zip(bias) {
                    y.write(b);
                }
            }
        }
        (None, None) => unreachable!("the product overwrites"),
    }
}

/// Rows per block of the bias gradient's column sum: fixed, so that the sum is the same on any
/// thread count.
const BLOCK_ROWS: usize = 64;

/// The gradients of [`linear`] that are asked for: `dx` (`m × k`), `dw` (`k × n`), `db` (`n`).
/// Writes every element of each, which may start uninitialized.
pub fn linear_backward<E: Float>(
    x: &[E],
    w: &[E],
    dy: &[E],
    (m, k, n): (usize, usize, usize),
    dx: Option<&mut [MaybeUninit<E>]>,
    dw: Option<&mut [MaybeUninit<E>]>,
    db: Option<&mut [MaybeUninit<E>]>,
) {
    assert_eq!(dy.len(), m * n);
    let dy_view = View::rows(dy, n);
    if let Some(dx) = dx {
        let wt = View::transposed(w, n);
        matmul((m, k, n), dy_view, wt, dx, Destination::Overwrite);
    }
    if let Some(dw) = dw {
        let xt = View::transposed(x, k);
        matmul((k, n, m), xt, dy_view, dw, Destination::Overwrite);
    }
    if let Some(db) = db {
        let partial: Vec<Vec<E>> = dy
            .par_chunks(BLOCK_ROWS * n)
            .map(|rows| {
                let mut sum = vec![E::ZERO; n];
                add_rows(&mut sum, rows);
                sum
            })
            .collect();
        sum_parts(&partial, db);
    }
}
