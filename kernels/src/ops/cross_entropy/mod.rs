//! Mean softmax cross-entropy of logits `[n, v]` against target classes `[n]`, as PyTorch's
//! `F.cross_entropy`: what the model calls (fused on the CPU, composed from Burn ops elsewhere),
//! the fused op's host adapter and its backward pass. The kernels, and the formulas, are in
//! [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use crate::fused::autodiff::{constant, record};
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};

/// Mean cross-entropy `[1]` of `logits` `[n, v]` against the classes `targets` `[n]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    if fused(&logits) {
        let (loss, _) = <Dispatch as CrossEntropyOps>::fused_cross_entropy(
            logits.into_dispatch(),
            targets.into_dispatch(),
        );
        return Tensor::from_dispatch(loss);
    }
    // The composed form: log-softmax, the targets' entries, their negated mean.
    let [n, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg()
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait CrossEntropyOps: Backend {
    /// `(mean loss [1], lse [n])`: the loss, and each row's log-sum-exp for the backward pass.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl<B: CpuBackend> CrossEntropyOps for B {
    fn fused_cross_entropy(logits: FloatTensor<B>, targets: IntTensor<B>) -> Scored<B> {
        with_float!(logits.dtype(), E => {
            let classes = targets.indices();
            let l = logits.values::<E>();
            let rows = classes.len();
            let mut lse = Output::new(rows, "cross_entropy: lse");
            let loss = kernel::cross_entropy(&l, &classes, lse.slots());
            (
                HostTensor::from_values(vec![loss], vec![1]),
                // SAFETY: cross_entropy writes every element of `lse`.
                HostTensor::from_values(unsafe { lse.written() }, vec![rows]),
            )
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> CrossEntropyOps for Autodiff<B, C> {
    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> Scored<Self> {
        let mut kept = None;
        let loss = record::<B, C, _, 1>([logits], CrossEntropyBackward, |[logits]| {
            let (loss, lse) = B::fused_cross_entropy(logits.clone(), targets.clone());
            kept = Some(lse.clone());
            (loss, (logits, targets, lse))
        });
        // The log-sum-exps enter the graph as values no gradient flows through.
        (loss, constant::<B, C>(kept.expect("the forward ran")))
    }
}

/// `(loss, lse)` (the trait spells it out: the extension macro reads the tuple).
type Scored<B> = (FloatTensor<B>, FloatTensor<B>);

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: CpuBackend> Backward<B, 1> for CrossEntropyBackward {
    /// `(logits, targets, lse)`.
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dloss| {
            backward(logits, &targets, lse, dloss)
        });
    }
}

/// `dlogits` for the upstream gradient `dloss` (`[1]`) of the mean loss.
fn backward<T: HostTensor, I: HostTensor>(logits: T, targets: &I, lse: T, dloss: T) -> T {
    with_float!(logits.dtype(), E => {
        let classes = targets.indices();
        let (l, s, g) = (logits.values::<E>(), lse.values::<E>(), dloss.values::<E>());
        let mut dl = Output::new(l.len(), "cross_entropy backward: dlogits");
        kernel::cross_entropy_backward(&l, &classes, &s, g[0], dl.slots());
        // SAFETY: cross_entropy_backward writes every element of its output.
        T::from_values(unsafe { dl.written() }, logits.dims())
    })
}
