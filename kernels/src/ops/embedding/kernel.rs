//! The GPT's input, token plus position embeddings, and its backward pass, for `n` rows of
//! tokens cut into sequences of `t`, position `p` of a sequence holding the model's position
//! `past + p`:
//!
//! - forward: `x[r] = wte[token[r]] + wpe[past + r mod t]`;
//! - backward: `dwte[v] = Σ dx[r]` over the rows `r` (in order) whose token is `v`, and
//!   `dwpe[past + p] = Σ_s dx[s·t + p]` over the sequences `s` (in order); every other row of
//!   both is zero. When the token table is also the head's weight (tied), its gradient already
//!   holds the head's `[vocab, d]` product and the rows are added onto it instead
//!   ([`TokenGradient::Onto`]): the rows no token of the batch names are not touched at all,
//!   where a separate table would be zeroed and then added to the head's, two passes over
//!   GPT-2's 154 MB on one thread.
//!
//! Burn's composed form gathers each table (`select`), adds the two, and scatters the gradient
//! back row by row (`select_assign` into zeros) on one thread, while the other cores wait: at
//! the small preset that was 4% of a step. Here every pass is parallel, and each gradient
//! element is summed in the same order as Burn's, from zero, so the results are the same.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::{DisjointOutput, Float, rows_per_task};

/// `x` (`n × d`) `= wte[tokens] + wpe[past + row mod t]`, for `wte` `vocab × d` and `wpe`
/// `context × d`. Writes every element of `x`, which may start uninitialized.
pub fn embedding<E: Float>(
    tokens: &[usize],
    wte: &[E],
    wpe: &[E],
    (t, d): (usize, usize),
    past: usize,
    x: &mut [MaybeUninit<E>],
) {
    let n = tokens.len();
    assert_eq!(x.len(), n * d);
    assert!(
        n.is_multiple_of(t.max(1)),
        "{n} rows are not whole sequences of {t}"
    );
    assert!(past + t <= wpe.len() / d, "positions past the table");
    check_tokens(tokens, wte.len() / d);
    for_each_row(x, d, |r, row| {
        let token = &wte[tokens[r] * d..][..d];
        let position = &wpe[(past + r % t) * d..][..d];
        for ((x, &a), &b) in row.iter_mut().zip(token).zip(position) {
            x.write(a + b);
        }
    });
}

/// `f(r, row)` for each `d`-wide row `r` of `out`, in parallel tasks of [`rows_per_task`] rows.
fn for_each_row<E: Send>(
    out: &mut [MaybeUninit<E>],
    d: usize,
    f: impl Fn(usize, &mut [MaybeUninit<E>]) + Sync,
) {
    let rows = rows_per_task(d);
    out.par_chunks_mut(rows * d)
        .enumerate()
        .for_each(|(task, block)| {
            for (i, row) in block.chunks_exact_mut(d).enumerate() {
                f(task * rows + i, row);
            }
        });
}

/// Columns of one task of the token gradient's scatter when the table is too small to give
/// several tasks of whole rows (65 characters): its rows are cut into blocks this wide.
const COLUMNS: usize = 64;

/// The width of the blocks the token gradient's table is cut into: whole rows when that makes
/// at least 16 tasks (GPT-2's 50,257 tokens), else [`COLUMNS`].
fn block_width(vocab: usize, d: usize) -> usize {
    if vocab >= 16 * rows_per_task(d) {
        d
    } else {
        COLUMNS.min(d)
    }
}

/// Where the token table's gradient goes.
pub enum TokenGradient<'a, E> {
    /// A table of its own, which may start uninitialized: every element is written.
    Fresh(&'a mut [MaybeUninit<E>]),
    /// Added onto a gradient the table already has (the tied head's): `dwte[v] += Σ dx[r]`, row
    /// by row in order; rows of tokens not in the batch are left as they are.
    Onto(&'a mut [E]),
}

/// The gradients of [`embedding`] that are asked for: `dwte` (`vocab × d`) and `dwpe`
/// (`context × d`). Writes every element of `dwpe` and of a [`TokenGradient::Fresh`] `dwte`,
/// which may start uninitialized.
pub fn embedding_backward<E: Float>(
    tokens: &[usize],
    dx: &[E],
    (t, d): (usize, usize),
    past: usize,
    dwte: Option<TokenGradient<'_, E>>,
    dwpe: Option<&mut [MaybeUninit<E>]>,
) {
    let n = tokens.len();
    assert_eq!(dx.len(), n * d);
    if let Some(dwte) = dwte {
        let (dwte, fresh) = match dwte {
            TokenGradient::Fresh(values) => (values, true),
            // SAFETY: the values are initialized and only initialized values are written.
            TokenGradient::Onto(values) => (unsafe { as_uninit(values) }, false),
        };
        let vocab = dwte.len() / d;
        check_tokens(tokens, vocab);
        // The rows sorted by token (stable: in order within a token), so that each block of the
        // table finds its rows as one run.
        let mut by_token: Vec<usize> = (0..n).collect();
        by_token.sort_by_key(|&r| tokens[r]);
        let width = block_width(vocab, d);
        let rows = rows_per_task(width);
        let table = DisjointOutput::new(dwte);
        let blocks: Vec<(usize, usize)> = (0..vocab)
            .step_by(rows)
            .flat_map(|v0| (0..d).step_by(width).map(move |c0| (v0, c0)))
            .collect();
        blocks.into_par_iter().for_each(|(v0, c0)| {
            let (v1, c1) = ((v0 + rows).min(vocab), (c0 + width).min(d));
            // SAFETY: the blocks `[v0, v1) × [c0, c1)` do not overlap, so each element is
            // written by this task alone.
            let block = |v: usize| unsafe { table.part(v * d + c0, c1 - c0) };
            if fresh {
                for v in v0..v1 {
                    block(v).fill(MaybeUninit::new(E::ZERO));
                }
            }
            let start = by_token.partition_point(|&r| tokens[r] < v0);
            let end = by_token.partition_point(|&r| tokens[r] < v1);
            for &r in &by_token[start..end] {
                // SAFETY: every row of the block holds values: zeroed above, or given so.
                unsafe { add_to_written(block(tokens[r]), &dx[r * d + c0..r * d + c1]) };
            }
        });
    }
    if let Some(dwpe) = dwpe {
        let sequences = n / t.max(1);
        for_each_row(dwpe, d, |position, row| {
            row.fill(MaybeUninit::new(E::ZERO));
            if !(past..past + t).contains(&position) {
                return;
            }
            for s in 0..sequences {
                // SAFETY: zeroed above.
                unsafe { add_to_written(row, &dx[(s * t + position - past) * d..][..d]) };
            }
        });
    }
}

/// Initialized values seen as slots, so that one loop serves a fresh table and one that already
/// holds a gradient.
///
/// # Safety
/// Nothing may write an uninitialized value through the result.
unsafe fn as_uninit<E>(values: &mut [E]) -> &mut [MaybeUninit<E>] {
    // SAFETY: `MaybeUninit<E>` has `E`'s layout; the caller writes only initialized values.
    unsafe { &mut *(values as *mut [E] as *mut [MaybeUninit<E>]) }
}

/// `out += g`.
///
/// # Safety
/// Every element of `out` was written (zeroed, or added to since).
unsafe fn add_to_written<E: Float>(out: &mut [MaybeUninit<E>], g: &[E]) {
    for (o, &g) in out.iter_mut().zip(g) {
        // SAFETY: the caller's guarantee.
        o.write(unsafe { o.assume_init() } + g);
    }
}

/// Panics with the offending row if a token is not in the table.
fn check_tokens(tokens: &[usize], vocab: usize) {
    if let Some(r) = tokens.iter().position(|&token| token >= vocab) {
        panic!(
            "token {} at row {r} is not in the embedding table of {vocab}",
            tokens[r]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composed form, as Burn computes it: gathers, an add; scatters row by row into
    /// `dwte` (zeros, or the tied head's gradient) and into zeros for `dwpe`.
    fn reference(
        tokens: &[usize],
        (context, t, d, past): (usize, usize, usize, usize),
        [wte, wpe, dx]: [&[f32]; 3],
        mut dwte: Vec<f32>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut x = vec![];
        let mut dwpe = vec![0.0; context * d];
        for (r, &token) in tokens.iter().enumerate() {
            let p = past + r % t;
            for c in 0..d {
                x.push(wte[token * d + c] + wpe[p * d + c]);
                dwte[token * d + c] += dx[r * d + c];
                dwpe[p * d + c] += dx[r * d + c];
            }
        }
        (x, dwte, dwpe)
    }

    fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
        vec![MaybeUninit::new(f32::NAN); n]
    }

    fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        v.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    #[test]
    fn equals_the_gather_and_scatter_bit_for_bit() {
        // (vocab, context, t, d, past): characters at the small preset's width (two blocks of
        // columns), a table cut into blocks of rows and columns with tails (300 x 100), one
        // cut into whole rows (600 x 512), and decoding after cached positions.
        let cases = [
            (65, 64, 64, 128, 0),
            (300, 40, 7, 100, 0),
            (600, 8, 4, 512, 0),
            (11, 9, 3, 8, 5),
        ];
        for (vocab, context, t, d, past) in cases {
            let n = 5 * t;
            let tokens: Vec<usize> = (0..n).map(|r| (r * 7919 + r / 3) % vocab).collect();
            let value = |i: usize| ((i * 2_654_435_761) % 1000) as f32 / 997.0 - 0.5;
            let wte: Vec<f32> = (0..vocab * d).map(value).collect();
            let wpe: Vec<f32> = (0..context * d).map(|i| value(i + 7)).collect();
            let dx: Vec<f32> = (0..n * d).map(|i| value(i + 13)).collect();
            let shape = (context, t, d, past);
            let (x_ref, dwte_ref, dwpe_ref) =
                reference(&tokens, shape, [&wte, &wpe, &dx], vec![0.0; vocab * d]);

            let mut x = uninit(n * d);
            embedding(&tokens, &wte, &wpe, (t, d), past, &mut x);
            let (mut dwte, mut dwpe) = (uninit(vocab * d), uninit(context * d));
            let fresh = TokenGradient::Fresh(&mut dwte);
            embedding_backward(&tokens, &dx, (t, d), past, Some(fresh), Some(&mut dwpe));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&init(x)), bits(&x_ref), "x at {vocab} x {d}");
            assert_eq!(bits(&init(dwte)), bits(&dwte_ref), "dwte at {vocab} x {d}");
            assert_eq!(bits(&init(dwpe)), bits(&dwpe_ref), "dwpe at {vocab} x {d}");

            // Tied: the rows added onto the head's gradient, the others left as they were.
            let head: Vec<f32> = (0..vocab * d).map(|i| value(i + 29)).collect();
            let (_, onto_ref, _) = reference(&tokens, shape, [&wte, &wpe, &dx], head.clone());
            let mut onto = head;
            embedding_backward(
                &tokens,
                &dx,
                (t, d),
                past,
                Some(TokenGradient::Onto(&mut onto)),
                None,
            );
            assert_eq!(
                bits(&onto),
                bits(&onto_ref),
                "dwte onto the head's at {vocab} x {d}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "token 65 at row 3 is not in the embedding table of 65")]
    fn a_token_outside_the_table_is_named() {
        let tokens = [1, 2, 3, 65];
        let (wte, wpe) = (vec![0.0f32; 65 * 2], vec![0.0f32; 4 * 2]);
        embedding(&tokens, &wte, &wpe, (4, 2), 0, &mut uninit(8));
    }
}
