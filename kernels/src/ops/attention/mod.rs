//! Causal multi-head self-attention from the fused projection `qkv` `[b, t, 3d]` (each
//! position's queries, keys and values side by side) plus an optional bias `[3d]` (the
//! projection's, added here rather than by that layer) to the merged heads `[b, t - past, d]`:
//! what the model calls (fused on the CPU, composed from Burn ops elsewhere), the fused op's host
//! adapter and its backward pass. The kernels, and the formulas, are in [`kernel`].
//!
//! The first `past` positions are attended to but ask nothing themselves: 0 in training, the
//! positions already generated when `qkv` holds a decoder's cache followed by its new tokens.
//!
//! Dropout on the attention probabilities (a training step with `dropout > 0`) takes the
//! composed path, which materialises them: the fused kernel never holds the probabilities, and
//! recomputes them in its backward pass, where it would need the same masks again.

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, s};

use crate::fused::autodiff::{constant, record, register};
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};
use crate::fused::{Optional, fused};
use crate::ops::dropout::drops;
use kernel::{AttentionShape, Qkv};

/// Causal self-attention of `qkv + bias` (`qkv` `[b, t, 3d]`, the bias over its last dimension
/// when given) with `n_head` heads; the queries are the positions after the first `past`; the
/// probabilities are dropped out with probability `dropout` in training.
pub fn causal_attention(
    qkv: Tensor<3>,
    bias: Option<Tensor<1>>,
    n_head: usize,
    past: usize,
    dropout: f64,
) -> Tensor<3> {
    if fused(&qkv) && !drops(&qkv, dropout) {
        let bias = bias.map(Tensor::into_dispatch).into();
        let (y, _) = <Dispatch as AttentionOps>::fused_causal_attention(
            qkv.into_dispatch(),
            bias,
            n_head,
            past,
        );
        return Tensor::from_dispatch(y);
    }
    let qkv = match bias {
        Some(bias) => qkv + bias.unsqueeze(),
        None => qkv,
    };
    // The composed form: heads split out of `qkv`, scores, a causal mask, softmax, and the heads
    // merged back.
    let [b, t, three_d] = qkv.dims();
    let (d, h) = (three_d / 3, n_head);
    let (hd, tq) = (d / h, t - past);
    let heads = |i: usize, from: usize| {
        qkv.clone()
            .slice(s![.., from.., i * d..(i + 1) * d])
            .reshape([b, t - from, h, hd])
            .swap_dims(1, 2) // [b, h, positions, hd]
    };
    let (q, k, v) = (heads(0, past), heads(1, 0), heads(2, 0)); // q: [b, h, tq, hd]
    let mask = Tensor::<2, Bool>::tril_mask([t, t], 0, &qkv.device())
        .slice(s![past.., ..])
        .unsqueeze::<4>()
        .expand([b, h, tq, t]);
    let scores = q
        .mul_scalar(1.0 / (hd as f64).sqrt())
        .matmul(k.swap_dims(2, 3)) // [b, h, tq, t]
        .mask_fill(mask, f32::NEG_INFINITY);
    super::dropout(softmax(scores, 3), dropout)
        .matmul(v) // [b, h, tq, hd]
        .swap_dims(1, 2)
        .reshape([b, tq, d])
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait AttentionOps: Backend {
    /// `(y [B, T', d], lse [B, H, T'])`, the queries being the last `T' = T - past` positions;
    /// `lse`, each query's log-sum-exp of its scores, is what the backward pass needs besides
    /// `qkv` and `y`.
    fn fused_causal_attention(
        qkv: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
        n_head: usize,
        past: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl<B: CpuBackend> AttentionOps for B {
    fn fused_causal_attention(
        qkv: FloatTensor<B>,
        bias: Optional<B>,
        heads: usize,
        past: usize,
    ) -> Attended<B> {
        with_float!(qkv.dtype(), E => {
            let shape = shape(&qkv.dims(), heads, past);
            let (b, tq, d) = (shape.batch, shape.queries(), shape.d_model);
            let (values, bias) = (qkv.values::<E>(), bias.into_option());
            let bias = bias.as_ref().map(|b| b.values::<E>());
            let qkv = Qkv { values: &values, bias: bias.as_deref() };
            let mut y = Output::new(b * tq * d, "causal_attention: y");
            let mut lse = Output::new(b * heads * tq, "causal_attention: lse");
            kernel::causal_attention(qkv, shape, y.slots(), lse.slots());
            // SAFETY: causal_attention writes every element of its outputs.
            unsafe {
                (
                    HostTensor::from_values(y.written(), vec![b, tq, d]),
                    HostTensor::from_values(lse.written(), vec![b, heads, tq]),
                )
            }
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn fused_causal_attention(
        qkv: FloatTensor<Self>,
        bias: Optional<Self>,
        heads: usize,
        past: usize,
    ) -> Attended<Self> {
        let mut kept = None;
        let mut forward = |qkv: FloatTensor<B>, bias: Option<FloatTensor<B>>| {
            let (y, lse) = B::fused_causal_attention(qkv.clone(), bias.clone().into(), heads, past);
            kept = Some(lse.clone());
            // `y` is kept too: the output projection keeps it anyway (its input), so this copies
            // nothing.
            (y.clone(), (qkv, bias, y, lse, heads, past))
        };
        let y = match bias.into_option() {
            None => record::<B, C, _, 1>([qkv], AttentionBackward, |[qkv]| forward(qkv, None)),
            Some(b) => record::<B, C, _, 2>([qkv, b], AttentionBackward, |[qkv, b]| {
                forward(qkv, Some(b))
            }),
        };
        // The log-sum-exps enter the graph as values no gradient flows through.
        (y, constant::<B, C>(kept.expect("the forward ran")))
    }
}

/// `(y, lse)` (the trait spells it out: the extension macro reads the tuple).
type Attended<B> = (FloatTensor<B>, FloatTensor<B>);

/// Parents `[qkv]` or `[qkv, bias]`.
#[derive(Debug)]
struct AttentionBackward;

impl<B: CpuBackend, const N: usize> Backward<B, N> for AttentionBackward {
    /// `(qkv, bias, y, lse, n_head, past)`.
    type State = (
        FloatTensor<B>,
        Option<FloatTensor<B>>,
        FloatTensor<B>,
        FloatTensor<B>,
        usize,
        usize,
    );

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (qkv, bias, y, lse, n_head, past) = ops.state;
        let (dqkv, db) = backward((qkv, bias), [y, lse], dy, n_head, past);
        register!(B, grads, ops.parents, [Some(dqkv), db]);
    }
}

fn shape(qkv_dims: &[usize], heads: usize, past: usize) -> AttentionShape {
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

/// `dqkv`, and the bias's gradient when there is a bias, from the forward's `qkv` and bias,
/// output `y` and `lse`, and the gradient `dy` of its output.
fn backward<T: HostTensor>(
    (qkv, bias): (T, Option<T>),
    [y, lse]: [T; 2],
    dy: T,
    heads: usize,
    past: usize,
) -> (T, Option<T>) {
    with_float!(qkv.dtype(), E => {
        let dims = qkv.dims();
        let shape = shape(&dims, heads, past);
        let (values, b) = (qkv.values::<E>(), bias.as_ref().map(|b| b.values::<E>()));
        let qkv = Qkv { values: &values, bias: b.as_deref() };
        let (y, l, g) = (y.values::<E>(), lse.values::<E>(), dy.values::<E>());
        let mut dqkv = Output::new(values.len(), "causal_attention backward: dqkv");
        let mut db = b.as_ref().map(|b| Output::new(b.len(), "causal_attention backward: db"));
        let db_slots = db.as_mut().map(Output::slots);
        kernel::causal_attention_backward(qkv, (&y, &l), &g, shape, dqkv.slots(), db_slots);
        // SAFETY: causal_attention_backward writes every element of its outputs.
        let db = db.zip(bias).map(|(db, b)| T::from_values(unsafe { db.written() }, b.dims()));
        (T::from_values(unsafe { dqkv.written() }, dims), db)
    })
}
