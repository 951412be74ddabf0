//! The CPU backends' tensors as the kernels see them: a shape, an element type, and a slice of
//! values (borrowed when the tensor is contiguous, copied once when it is not).
//!
//! NdArray and Flex store tensors differently; [`HostTensor`] is the only place that knows
//! how ([`crate::backends`]). The operations below are written once over it and serve both; each reads its inputs, runs a kernel of [`crate::cpu`], and wraps the
//! output in a new tensor of the same backend.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::tensor::DType;

pub use crate::backends::HostFloat;
use crate::cpu::{self, AdamWStep, AttentionShape, Float};

/// A CPU backend's tensor primitive (float or int).
pub trait HostTensor: Sized {
    fn dims(&self) -> Vec<usize>;
    fn dtype(&self) -> DType;
    /// The values in row-major order. Panics if the tensor does not hold `E`.
    fn values<E: HostFloat>(&self) -> Cow<'_, [E]>;
    /// The values of an integer tensor, as indices.
    fn indices(&self) -> Vec<usize>;
    fn from_values<E: HostFloat>(values: Vec<E>, dims: Vec<usize>) -> Self;
}

/// Runs `$body` with `$e` bound to the element type of `$dtype` (`f32` or `f64`).
macro_rules! with_float {
    ($dtype:expr, $e:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $e = f32;
                $body
            }
            DType::F64 => {
                type $e = f64;
                $body
            }
            other => panic!("fused kernels run in f32 or f64, not {other:?}"),
        }
    };
}

/// A vector of `n` values written by `fill`, which must write every one of them: the kernels'
/// outputs start uninitialized, which spares a pass that zeroes them (5% of a step when it
/// was done, all of it on the calling thread).
fn written<E>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<E>])) -> Vec<E> {
    let mut values = Vec::with_capacity(n);
    fill(&mut values.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialized the first `n` elements (the contract above).
    unsafe { values.set_len(n) };
    values
}

/// The first `len` elements of `v`'s spare capacity, to be written by a kernel.
fn spare<E>(v: &mut Option<Vec<E>>, len: usize) -> Option<&mut [MaybeUninit<E>]> {
    v.as_mut().map(|v| &mut v.spare_capacity_mut()[..len])
}

/// `(rows, last)`: the dims of `t` as a matrix whose rows are all but the last dimension.
fn rows_and_last(dims: &[usize]) -> (usize, usize) {
    let last = *dims.last().expect("a tensor of rank >= 1");
    (dims.iter().product::<usize>() / last.max(1), last)
}

pub fn gelu<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => {
        let xs = x.values::<E>();
        let mut y = vec![E::ZERO; xs.len()];
        cpu::gelu(&xs, &mut y);
        T::from_values(y, x.dims())
    })
}

pub fn gelu_backward<T: HostTensor>(x: T, dy: T) -> T {
    with_float!(x.dtype(), E => {
        let (xs, dys) = (x.values::<E>(), dy.values::<E>());
        let mut dx = vec![E::ZERO; xs.len()];
        cpu::gelu_backward(&xs, &dys, &mut dx);
        T::from_values(dx, x.dims())
    })
}

/// LayerNorm over the last dimension: `(y, mean, rstd)`, the statistics `[rows]`.
pub fn layer_norm<T: HostTensor>(x: T, gamma: T, beta: Option<T>, eps: f64) -> (T, T, T) {
    with_float!(x.dtype(), E => {
        let dims = x.dims();
        let (rows, _) = rows_and_last(&dims);
        let (xs, g) = (x.values::<E>(), gamma.values::<E>());
        let b = beta.as_ref().map(|b| b.values::<E>());
        let mut y = vec![E::ZERO; xs.len()];
        let (mut mean, mut rstd) = (vec![E::ZERO; rows], vec![E::ZERO; rows]);
        cpu::layer_norm(&xs, &g, b.as_deref(), eps, &mut y, &mut mean, &mut rstd);
        (
            T::from_values(y, dims),
            T::from_values(mean, vec![rows]),
            T::from_values(rstd, vec![rows]),
        )
    })
}

/// `(dx, dgamma, dbeta)`; `dbeta` only `with_beta`.
pub fn layer_norm_backward<T: HostTensor>(
    [x, gamma, mean, rstd, dy]: [T; 5],
    with_beta: bool,
) -> (T, T, Option<T>) {
    with_float!(x.dtype(), E => {
        let dims = x.dims();
        let d = *dims.last().expect("rank >= 1");
        let (xs, g, m, r, dys) = (
            x.values::<E>(),
            gamma.values::<E>(),
            mean.values::<E>(),
            rstd.values::<E>(),
            dy.values::<E>(),
        );
        let mut dx = vec![E::ZERO; xs.len()];
        let mut dgamma = vec![E::ZERO; d];
        let mut dbeta = with_beta.then(|| vec![E::ZERO; d]);
        cpu::layer_norm_backward(&xs, &g, &m, &r, &dys, &mut dx, &mut dgamma, dbeta.as_deref_mut());
        (
            T::from_values(dx, dims),
            T::from_values(dgamma, vec![d]),
            dbeta.map(|db| T::from_values(db, vec![d])),
        )
    })
}

/// `x·w + bias` for `x` `[.., in]`, `w` `[in, out]`.
pub fn linear<T: HostTensor>(x: T, w: T, bias: Option<T>) -> T {
    with_float!(x.dtype(), E => {
        let mut dims = x.dims();
        let (m, k) = rows_and_last(&dims);
        let n = w.dims()[1];
        let (xs, ws) = (x.values::<E>(), w.values::<E>());
        let b = bias.as_ref().map(|b| b.values::<E>());
        let y = written(m * n, |y| cpu::linear(&xs, &ws, b.as_deref(), (m, k, n), y));
        *dims.last_mut().expect("rank >= 1") = n;
        T::from_values(y, dims)
    })
}

/// The gradients of [`linear`] asked for in `want` (`[dx, dw, db]`).
pub fn linear_backward<T: HostTensor>(x: T, w: T, dy: T, want: [bool; 3]) -> [Option<T>; 3] {
    with_float!(x.dtype(), E => {
        let x_dims = x.dims();
        let (w_dims, (m, k)) = (w.dims(), rows_and_last(&x_dims));
        let n = w_dims[1];
        let (xs, ws, dys) = (x.values::<E>(), w.values::<E>(), dy.values::<E>());
        let buffer = |wanted: bool, len: usize| wanted.then(|| Vec::<E>::with_capacity(len));
        let (mut dx, mut dw, mut db) = (buffer(want[0], m * k), buffer(want[1], k * n), buffer(want[2], n));
        let (dx_out, dw_out, db_out) = (spare(&mut dx, m * k), spare(&mut dw, k * n), spare(&mut db, n));
        cpu::linear_backward(&xs, &ws, &dys, (m, k, n), dx_out, dw_out, db_out);
        let done = |v: Option<Vec<E>>, dims: Vec<usize>| {
            v.map(|mut v| {
                // SAFETY: linear_backward wrote every element of each gradient it was given.
                unsafe { v.set_len(dims.iter().product()) };
                T::from_values(v, dims)
            })
        };
        [done(dx, x_dims), done(dw, w_dims), done(db, vec![n])]
    })
}

fn attention_shape(qkv_dims: &[usize], heads: usize, past: usize) -> AttentionShape {
    let [batch, time, three_d] = qkv_dims else {
        panic!("causal attention takes qkv [batch, time, 3·d], got {qkv_dims:?}");
    };
    assert!(
        three_d % 3 == 0 && (three_d / 3) % heads == 0 && past <= *time,
        "qkv {qkv_dims:?} with {heads} heads and {past} earlier positions"
    );
    AttentionShape {
        batch: *batch,
        time: *time,
        past,
        heads,
        d_model: three_d / 3,
    }
}

/// `(y [B, T', d], probs [B, H, T', T])` from `qkv` `[B, T, 3d]`, the queries being the last
/// `T' = T - past` positions.
pub fn attention<T: HostTensor>(qkv: T, heads: usize, past: usize) -> (T, T) {
    with_float!(qkv.dtype(), E => {
        let shape = attention_shape(&qkv.dims(), heads, past);
        let (b, t, tq, d) = (shape.batch, shape.time, shape.queries(), shape.d_model);
        let q = qkv.values::<E>();
        let mut y = vec![E::ZERO; b * tq * d];
        let mut probs = vec![E::ZERO; b * heads * tq * t];
        cpu::attention(&q, shape, &mut y, &mut probs);
        (
            T::from_values(y, vec![b, tq, d]),
            T::from_values(probs, vec![b, heads, tq, t]),
        )
    })
}

pub fn attention_backward<T: HostTensor>(qkv: T, probs: T, dy: T, heads: usize, past: usize) -> T {
    with_float!(qkv.dtype(), E => {
        let dims = qkv.dims();
        let shape = attention_shape(&dims, heads, past);
        let (q, p, g) = (qkv.values::<E>(), probs.values::<E>(), dy.values::<E>());
        let mut dqkv = vec![E::ZERO; q.len()];
        cpu::attention_backward(&q, &p, &g, shape, &mut dqkv);
        T::from_values(dqkv, dims)
    })
}

/// `(mean loss [1], lse [rows])` of `logits` `[rows, V]` against `targets` `[rows]`.
pub fn cross_entropy<T: HostTensor>(logits: T, targets: &T) -> (T, T) {
    with_float!(logits.dtype(), E => {
        let classes = targets.indices();
        let l = logits.values::<E>();
        let mut lse = vec![E::ZERO; classes.len()];
        let loss = cpu::cross_entropy(&l, &classes, &mut lse);
        let rows = lse.len();
        (T::from_values(vec![loss], vec![1]), T::from_values(lse, vec![rows]))
    })
}

/// `dlogits` for the upstream gradient `dloss` (`[1]`) of the mean loss.
pub fn cross_entropy_backward<T: HostTensor>(logits: T, targets: &T, lse: T, dloss: T) -> T {
    with_float!(logits.dtype(), E => {
        let classes = targets.indices();
        let (l, s, g) = (logits.values::<E>(), lse.values::<E>(), dloss.values::<E>());
        let mut dl = vec![E::ZERO; l.len()];
        cpu::cross_entropy_backward(&l, &classes, &s, g[0], &mut dl);
        T::from_values(dl, logits.dims())
    })
}

/// `(param, m, v)` after one AdamW step.
pub fn adamw<T: HostTensor>(param: T, grad: T, m: T, v: T, step: AdamWStep) -> (T, T, T) {
    with_float!(param.dtype(), E => {
        let dims = param.dims();
        let (p, g, m, v) = (param.values::<E>(), grad.values::<E>(), m.values::<E>(), v.values::<E>());
        let [mut op, mut om, mut ov] = [0; 3].map(|_| vec![E::ZERO; p.len()]);
        cpu::adamw(&p, &g, &m, &v, step, &mut op, &mut om, &mut ov);
        (
            T::from_values(op, dims.clone()),
            T::from_values(om, dims.clone()),
            T::from_values(ov, dims),
        )
    })
}

/// `Σ x²`, `[1]`.
pub fn sum_of_squares<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => {
        let total = cpu::sum_of_squares(&x.values::<E>());
        T::from_values(vec![E::from_f64(total)], vec![1])
    })
}
