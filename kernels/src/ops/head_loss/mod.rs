//! The output head and the loss together: the mean softmax cross-entropy of `x·W + b` against
//! the targets, what the model's training loss calls (fused on the CPU, where the logits are
//! scored a chunk of rows at a time and never exist whole; composed from Burn's linear and
//! cross-entropy elsewhere), the fused op's host adapter and its backward pass. The kernel, and
//! why it computes the gradients in the forward pass, are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::{Int, Tensor};

use crate::fused::autodiff::{record_when, register};
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};
use crate::fused::{Optional, fused, with_optional};
use crate::ops::{cross_entropy, linear};
pub use kernel::HeadWeight;
use kernel::{HeadGradients, HeadShape};

/// Mean cross-entropy `[1]` of the logits `x·W + bias` (`x` `[n, d]`) against the classes
/// `targets` `[n]`; `weight` is `[d, vocab]`, or `[vocab, d]` when it is the token embedding
/// ([`HeadWeight::Tied`]).
pub fn head_loss(
    x: Tensor<2>,
    weight: Tensor<2>,
    layout: HeadWeight,
    bias: Option<Tensor<1>>,
    targets: Tensor<1, Int>,
) -> Tensor<1> {
    if fused(&x) {
        return Tensor::from_dispatch(<Dispatch as HeadLossOps>::fused_head_loss(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.map(Tensor::into_dispatch).into(),
            targets.into_dispatch(),
            layout == HeadWeight::Tied,
        ));
    }
    // The composed form: the logits, then their cross-entropy.
    let weight = match layout {
        HeadWeight::InOut => weight,
        HeadWeight::Tied => weight.transpose(),
    };
    cross_entropy(linear(x, weight, bias), targets)
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait HeadLossOps: Backend {
    /// The mean loss `[1]`; `tied`: the weight is `[vocab, d]`.
    fn fused_head_loss(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
        targets: IntTensor<Self>,
        tied: bool,
    ) -> FloatTensor<Self>;
}

impl<B: CpuBackend> HeadLossOps for B {
    fn fused_head_loss(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        bias: Optional<B>,
        targets: IntTensor<B>,
        tied: bool,
    ) -> FloatTensor<B> {
        score::<B>(x, w, bias.into_option(), &targets, tied, false).0
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> HeadLossOps for Autodiff<B, C> {
    fn fused_head_loss(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: Optional<Self>,
        targets: IntTensor<Self>,
        tied: bool,
    ) -> FloatTensor<Self> {
        let t = &targets;
        match bias.into_option() {
            Some(bias) => {
                record_when::<B, C, _, 3>([x, w, bias], HeadLossBackward, |inputs, on| {
                    forward::<B, 3>(inputs, t, tied, on)
                })
            }
            None => record_when::<B, C, _, 2>([x, w], HeadLossBackward, |inputs, on| {
                forward::<B, 2>(inputs, t, tied, on)
            }),
        }
    }
}

/// The inner forward of `[x, w]` or `[x, w, bias]`: the loss, and the gradients when `tracked`.
fn forward<B: CpuBackend, const N: usize>(
    inputs: [FloatTensor<B>; N],
    targets: &IntTensor<B>,
    tied: bool,
    tracked: bool,
) -> (FloatTensor<B>, Option<UnitGradients<B>>) {
    let (x, w, bias) = with_optional(inputs);
    score::<B>(x, w, bias, targets, tied, tracked)
}

/// The loss, and with `gradients` the gradients `[dx, dw, db]` of the loss itself (an upstream
/// gradient of 1), which the backward pass only scales.
fn score<B: CpuBackend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    targets: &IntTensor<B>,
    tied: bool,
    gradients: bool,
) -> (FloatTensor<B>, Option<UnitGradients<B>>) {
    with_float!(x.dtype(), E => {
        let (x_dims, w_dims) = (x.dims(), w.dims());
        let [rows, d] = x_dims[..] else {
            panic!("head_loss takes x [rows, d], got {x_dims:?}")
        };
        let (weight, vocab) = match tied {
            true => (HeadWeight::Tied, w_dims[0]),
            false => (HeadWeight::InOut, w_dims[1]),
        };
        let shape = HeadShape { rows, d, vocab, weight };
        let (xs, ws, classes) = (x.values::<E>(), w.values::<E>(), targets.indices());
        let b = bias.as_ref().map(|b| b.values::<E>());
        let mut outputs = gradients.then(|| {
            (
                Output::new(rows * d, "head_loss: dx"),
                Output::new(vocab * d, "head_loss: dw"),
                bias.as_ref().map(|_| Output::new(vocab, "head_loss: db")),
            )
        });
        let slots = outputs.as_mut().map(|(dx, dw, db)| HeadGradients {
            dx: dx.slots(),
            dw: dw.slots(),
            db: db.as_mut().map(Output::slots),
        });
        let loss = kernel::head_loss(&xs, &ws, b.as_deref(), &classes, shape, slots);
        // SAFETY: head_loss writes every element of the gradients it is given.
        let grads = outputs.map(|(dx, dw, db)| unsafe {
            [
                Some(B::FloatTensorPrimitive::from_values(dx.written(), x_dims)),
                Some(B::FloatTensorPrimitive::from_values(dw.written(), w_dims)),
                db.map(|db| B::FloatTensorPrimitive::from_values(db.written(), vec![vocab])),
            ]
        });
        (HostTensor::from_values(vec![loss], vec![1]), grads)
    })
}

/// `[dx, dw, db]` for an upstream gradient of 1 (`db` absent without a bias).
type UnitGradients<B> = [Option<FloatTensor<B>>; 3];

/// Parents `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct HeadLossBackward;

impl<B: CpuBackend, const N: usize> Backward<B, N> for HeadLossBackward {
    type State = UnitGradients<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dloss = grads.consume::<B>(&ops.node);
        let gradients = ops.state.map(|g| g.map(|g| scaled(g, &dloss)));
        register!(B, grads, ops.parents, gradients);
    }
}

/// `t · g[0]`, `t` itself when the upstream gradient `g` is 1 (the training loss's).
fn scaled<T: HostTensor>(t: T, g: &T) -> T {
    with_float!(t.dtype(), E => {
        let g = g.values::<E>()[0];
        if g == 1.0 {
            return t;
        }
        let values = t.values::<E>().iter().map(|v| v * g).collect();
        T::from_values(values, t.dims())
    })
}
