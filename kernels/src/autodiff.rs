//! The fused operations under `Autodiff<B>`: each forward runs the inner backend's fused
//! kernel, keeps what its backward pass needs (inputs are reference-counted, so keeping them
//! copies nothing), and registers that backward pass, which produces the gradients of all
//! inputs in one call. The formulas are in the kernels' module docs ([`crate::cpu`]).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};

use crate::cpu::AdamWStep;
use crate::extension::Optional;
use crate::{FusedBackward, FusedOps};

/// Splits autodiff tensors into their inner primitives and the guards that keep their graph
/// nodes alive until the new operation is registered.
/// (The checkpoint strategy does not change the tensor type, so any `C` names it.)
fn into_parts<B: FusedBackward, const N: usize>(
    inputs: [FloatTensor<Autodiff<B>>; N],
) -> ([FloatTensor<B>; N], [NodeGuard; N]) {
    let (primitives, nodes): (Vec<_>, Vec<_>) = inputs.into_iter().map(|t| t.into_parts()).unzip();
    (array(primitives), array(nodes))
}

fn array<T, const N: usize>(items: Vec<T>) -> [T; N] {
    items
        .try_into()
        .unwrap_or_else(|_| unreachable!("N items in, N out"))
}

/// Registers each gradient with the parent it belongs to; parents that need none are `None`.
/// (A macro: the parents' node type is not exported by burn-autodiff.)
macro_rules! register {
    ($b:ty, $grads:expr, $parents:expr, $gradients:expr) => {
        for (parent, grad) in $parents.iter().zip($gradients) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                $grads.register::<$b>(parent.id, grad);
            }
        }
    };
}

#[derive(Debug)]
struct GeluBackward;

impl<B: FusedBackward> Backward<B, 1> for GeluBackward {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_gelu_backward(x, dy)
        });
    }
}

/// Parents `[x, gamma]` or `[x, gamma, beta]`.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: FusedBackward, const N: usize> Backward<B, N> for LayerNormBackward {
    /// `[x, gamma, mean, rstd]`.
    type State = [FloatTensor<B>; 4];

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x, gamma, mean, rstd] = ops.state;
        let (dx, dgamma, dbeta) = B::fused_layer_norm_backward([x, gamma, mean, rstd, dy], N == 3);
        register!(B, grads, ops.parents, [Some(dx), Some(dgamma), dbeta]);
    }
}

/// Parents `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct LinearBackward;

impl<B: FusedBackward, const N: usize> Backward<B, N> for LinearBackward {
    /// `[x, weight]`.
    type State = [FloatTensor<B>; 2];

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x, weight] = ops.state;
        let mut want = [false; 3];
        for (w, parent) in want.iter_mut().zip(&ops.parents) {
            *w = parent.is_some();
        }
        let gradients = B::fused_linear_backward(x, weight, dy, want);
        register!(B, grads, ops.parents, gradients);
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedBackward> Backward<B, 1> for AttentionBackward {
    /// `(qkv, probs, n_head, past)`.
    type State = (FloatTensor<B>, FloatTensor<B>, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (qkv, probs, n_head, past) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_attention_backward(qkv, probs, dy, n_head, past)
        });
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: FusedBackward> Backward<B, 1> for CrossEntropyBackward {
    /// `(logits, targets, lse)`.
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dloss| {
            B::fused_cross_entropy_backward(logits, &targets, lse, dloss)
        });
    }
}

/// LayerNorm with `N - 2` optional shift: `inputs` is `[x, gamma]` or `[x, gamma, beta]`.
fn layer_norm<B: FusedBackward, C: CheckpointStrategy, const N: usize>(
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    eps: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let (primitives, nodes) = into_parts(inputs);
    let mut primitives = primitives.into_iter();
    let (x, gamma, beta) = (
        primitives.next().unwrap(),
        primitives.next().unwrap(),
        primitives.next(),
    );
    match LayerNormBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let [y, mean, rstd] =
                B::fused_layer_norm_with_stats(x.clone(), gamma.clone(), beta, eps);
            prep.finish([x, gamma, mean, rstd], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(x, gamma, beta.into(), eps)),
    }
}

/// Linear with `N - 2` optional bias: `inputs` is `[x, weight]` or `[x, weight, bias]`.
fn linear<B: FusedBackward, C: CheckpointStrategy, const N: usize>(
    inputs: [FloatTensor<Autodiff<B, C>>; N],
) -> FloatTensor<Autodiff<B, C>> {
    let (primitives, nodes) = into_parts(inputs);
    let mut primitives = primitives.into_iter();
    let (x, weight, bias) = (
        primitives.next().unwrap(),
        primitives.next().unwrap(),
        primitives.next(),
    );
    match LinearBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = B::fused_linear(x.clone(), weight.clone(), bias.into());
            prep.finish([x, weight], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(x, weight, bias.into())),
    }
}

/// An untracked autodiff tensor: a result no gradient flows through.
fn constant<B: FusedBackward, C: CheckpointStrategy>(
    x: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    <FloatTensor<Autodiff<B, C>>>::new(x)
}

impl<B: FusedBackward, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [param, grad, m, v] = [param, grad, m, v].map(|t| t.into_primitive());
        let (param, m, v) = B::fused_adamw(param, grad, m, v, step);
        (
            constant::<B, C>(param),
            constant::<B, C>(m),
            constant::<B, C>(v),
        )
    }

    fn fused_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_sum_of_squares(x.into_primitive()))
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let ([x], nodes) = into_parts([x]);
        match GeluBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_gelu(x.clone());
                prep.finish(x, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gelu(x)),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Optional<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        match beta.into_option() {
            Some(beta) => layer_norm::<B, C, 3>([x, gamma, beta], eps),
            None => layer_norm::<B, C, 2>([x, gamma], eps),
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Optional<Self>,
    ) -> FloatTensor<Self> {
        match bias.into_option() {
            Some(bias) => linear::<B, C, 3>([x, weight, bias]),
            None => linear::<B, C, 2>([x, weight]),
        }
    }

    fn fused_causal_attention(
        qkv: FloatTensor<Self>,
        n_head: usize,
        past: usize,
    ) -> FloatTensor<Self> {
        let ([qkv], nodes) = into_parts([qkv]);
        match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [y, probs] = B::fused_attention_with_probs(qkv.clone(), n_head, past);
                prep.finish((qkv, probs, n_head, past), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_causal_attention(qkv, n_head, past)),
        }
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let ([logits], nodes) = into_parts([logits]);
        match CrossEntropyBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [loss, lse] = B::fused_cross_entropy_with_lse(logits.clone(), &targets);
                prep.finish((logits, targets, lse), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_cross_entropy(logits, targets)),
        }
    }
}
