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

/// A kernel's output: `len` elements that start uninitialized, which spares the pass that would
/// zero them first (5% of a step, on one thread, when the outputs were zeroed).
struct Output<E> {
    values: Vec<E>,
    len: usize,
}

impl<E> Output<E> {
    fn new(len: usize) -> Self {
        Self {
            values: Vec::with_capacity(len),
            len,
        }
    }

    /// The slots for the kernel to write.
    fn slots(&mut self) -> &mut [MaybeUninit<E>] {
        &mut self.values.spare_capacity_mut()[..self.len]
    }

    /// The values, once the kernel has run.
    ///
    /// # Safety
    /// Every slot was written: each kernel of [`cpu`] writes every element of its outputs.
    unsafe fn written(mut self) -> Vec<E> {
        // SAFETY: the caller's guarantee.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

/// `(rows, last)`: the dims of `t` as a matrix whose rows are all but the last dimension.
fn rows_and_last(dims: &[usize]) -> (usize, usize) {
    let last = *dims.last().expect("a tensor of rank >= 1");
    (dims.iter().product::<usize>() / last.max(1), last)
}

pub fn gelu<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => {
        let xs = x.values::<E>();
        let mut y = Output::new(xs.len());
        cpu::gelu(&xs, y.slots());
        // SAFETY: gelu writes every element of its output.
        T::from_values(unsafe { y.written() }, x.dims())
    })
}

pub fn gelu_backward<T: HostTensor>(x: T, dy: T) -> T {
    with_float!(x.dtype(), E => {
        let (xs, dys) = (x.values::<E>(), dy.values::<E>());
        let mut dx = Output::new(xs.len());
        cpu::gelu_backward(&xs, &dys, dx.slots());
        // SAFETY: gelu_backward writes every element of its output.
        T::from_values(unsafe { dx.written() }, x.dims())
    })
}

/// LayerNorm over the last dimension: `(y, mean, rstd)`, the statistics `[rows]`.
pub fn layer_norm<T: HostTensor>(x: T, gamma: T, beta: Option<T>, eps: f64) -> (T, T, T) {
    with_float!(x.dtype(), E => {
        let dims = x.dims();
        let (rows, _) = rows_and_last(&dims);
        let (xs, g) = (x.values::<E>(), gamma.values::<E>());
        let b = beta.as_ref().map(|b| b.values::<E>());
        let (mut y, mut mean, mut rstd) = (Output::new(xs.len()), Output::new(rows), Output::new(rows));
        cpu::layer_norm(&xs, &g, b.as_deref(), eps, y.slots(), mean.slots(), rstd.slots());
        // SAFETY: layer_norm writes every element of its outputs.
        unsafe {
            (
                T::from_values(y.written(), dims),
                T::from_values(mean.written(), vec![rows]),
                T::from_values(rstd.written(), vec![rows]),
            )
        }
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
        let (mut dx, mut dgamma) = (Output::new(xs.len()), Output::new(d));
        let mut dbeta = with_beta.then(|| Output::new(d));
        let dbeta_slots = dbeta.as_mut().map(Output::slots);
        cpu::layer_norm_backward(&xs, &g, &m, &r, &dys, dx.slots(), dgamma.slots(), dbeta_slots);
        // SAFETY: layer_norm_backward writes every element of the outputs it is given.
        unsafe {
            (
                T::from_values(dx.written(), dims),
                T::from_values(dgamma.written(), vec![d]),
                dbeta.map(|db| T::from_values(db.written(), vec![d])),
            )
        }
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
        let mut y = Output::new(m * n);
        cpu::linear(&xs, &ws, b.as_deref(), (m, k, n), y.slots());
        *dims.last_mut().expect("rank >= 1") = n;
        // SAFETY: linear writes every element of its output.
        T::from_values(unsafe { y.written() }, dims)
    })
}

/// The gradients of [`linear`] asked for in `want` (`[dx, dw, db]`).
pub fn linear_backward<T: HostTensor>(x: T, w: T, dy: T, want: [bool; 3]) -> [Option<T>; 3] {
    with_float!(x.dtype(), E => {
        let x_dims = x.dims();
        let (w_dims, (m, k)) = (w.dims(), rows_and_last(&x_dims));
        let n = w_dims[1];
        let (xs, ws, dys) = (x.values::<E>(), w.values::<E>(), dy.values::<E>());
        let [mut dx, mut dw, mut db] =
            [(want[0], m * k), (want[1], k * n), (want[2], n)].map(|(wanted, len)| wanted.then(|| Output::new(len)));
        let (dx_slots, dw_slots, db_slots) =
            (dx.as_mut().map(Output::slots), dw.as_mut().map(Output::slots), db.as_mut().map(Output::slots));
        cpu::linear_backward(&xs, &ws, &dys, (m, k, n), dx_slots, dw_slots, db_slots);
        // SAFETY: linear_backward writes every element of the gradients it is given.
        let done = |v: Option<Output<E>>, dims: Vec<usize>| v.map(|v| T::from_values(unsafe { v.written() }, dims));
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
        let (mut y, mut probs) = (Output::new(b * tq * d), Output::new(b * heads * tq * t));
        cpu::attention(&q, shape, y.slots(), probs.slots());
        // SAFETY: attention writes every element of its outputs.
        unsafe {
            (
                T::from_values(y.written(), vec![b, tq, d]),
                T::from_values(probs.written(), vec![b, heads, tq, t]),
            )
        }
    })
}

pub fn attention_backward<T: HostTensor>(qkv: T, probs: T, dy: T, heads: usize, past: usize) -> T {
    with_float!(qkv.dtype(), E => {
        let dims = qkv.dims();
        let shape = attention_shape(&dims, heads, past);
        let (q, p, g) = (qkv.values::<E>(), probs.values::<E>(), dy.values::<E>());
        let mut dqkv = Output::new(q.len());
        cpu::attention_backward(&q, &p, &g, shape, dqkv.slots());
        // SAFETY: attention_backward writes every element of its output.
        T::from_values(unsafe { dqkv.written() }, dims)
    })
}

/// `(mean loss [1], lse [rows])` of `logits` `[rows, V]` against `targets` `[rows]`.
pub fn cross_entropy<T: HostTensor>(logits: T, targets: &T) -> (T, T) {
    with_float!(logits.dtype(), E => {
        let classes = targets.indices();
        let l = logits.values::<E>();
        let mut lse = Output::new(classes.len());
        let loss = cpu::cross_entropy(&l, &classes, lse.slots());
        let rows = classes.len();
        // SAFETY: cross_entropy writes every element of `lse`.
        (T::from_values(vec![loss], vec![1]), T::from_values(unsafe { lse.written() }, vec![rows]))
    })
}

/// `dlogits` for the upstream gradient `dloss` (`[1]`) of the mean loss.
pub fn cross_entropy_backward<T: HostTensor>(logits: T, targets: &T, lse: T, dloss: T) -> T {
    with_float!(logits.dtype(), E => {
        let classes = targets.indices();
        let (l, s, g) = (logits.values::<E>(), lse.values::<E>(), dloss.values::<E>());
        let mut dl = Output::new(l.len());
        cpu::cross_entropy_backward(&l, &classes, &s, g[0], dl.slots());
        // SAFETY: cross_entropy_backward writes every element of its output.
        T::from_values(unsafe { dl.written() }, logits.dims())
    })
}

/// `(param, m, v)` after one AdamW step.
pub fn adamw<T: HostTensor>(param: T, grad: T, m: T, v: T, step: AdamWStep) -> (T, T, T) {
    with_float!(param.dtype(), E => {
        let dims = param.dims();
        let (p, g, m, v) = (param.values::<E>(), grad.values::<E>(), m.values::<E>(), v.values::<E>());
        let [mut op, mut om, mut ov] = [0; 3].map(|_| Output::new(p.len()));
        cpu::adamw(&p, &g, &m, &v, step, op.slots(), om.slots(), ov.slots());
        // SAFETY: adamw writes every element of its outputs.
        unsafe {
            (
                T::from_values(op.written(), dims.clone()),
                T::from_values(om.written(), dims.clone()),
                T::from_values(ov.written(), dims),
            )
        }
    })
}

/// `Σ x²`, `[1]`.
pub fn sum_of_squares<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => {
        let total = cpu::sum_of_squares(&x.values::<E>());
        T::from_values(vec![E::from_f64(total)], vec![1])
    })
}
