//! LayerNorm over the last dimension, as `burn::tensor::module::layer_norm` and PyTorch's
//! `nn.LayerNorm`: what the model calls (fused on the CPU, Burn's own elsewhere), the fused
//! op's host adapter and its backward pass. The kernels, and the formulas, are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::fused::autodiff::{constant, record, register, take_gradient};
use crate::fused::host::{CpuBackend, HostTensor, Output, rows_and_last, with_float};
use crate::fused::{Optional, fused, with_optional};

/// LayerNorm of `x` over its last dimension, with scale `gamma` and optional shift `beta`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    if !fused(&x) {
        return burn::tensor::module::layer_norm(x, gamma, beta, eps);
    }
    let beta = beta.map(Tensor::into_dispatch).into();
    let (y, _, _) = <Dispatch as LayerNormOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta,
        eps,
    );
    Tensor::from_dispatch(y)
}

/// `(y, mean, rstd)` (the trait spells it out: the extension macro reads the tuple).
type Normalized<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait LayerNormOps: Backend {
    /// `(y, mean, rstd)`: the output, and each row's mean and inverse standard deviation.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        #[extension_type] beta: Optional<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl<B: CpuBackend> LayerNormOps for B {
    fn fused_layer_norm(
        x: FloatTensor<B>,
        g: FloatTensor<B>,
        b: Optional<B>,
        eps: f64,
    ) -> Normalized<B> {
        with_float!(x.dtype(), E => {
            let dims = x.dims();
            let (rows, _) = rows_and_last(&dims);
            let (xs, g, b) = (x.values::<E>(), g.values::<E>(), b.into_option());
            let b = b.as_ref().map(|b| b.values::<E>());
            let mut y = Output::new(xs.len(), "layer_norm: y");
            let mut mean = Output::new(rows, "layer_norm: mean");
            let mut rstd = Output::new(rows, "layer_norm: rstd");
            kernel::layer_norm(&xs, &g, b.as_deref(), eps, y.slots(), mean.slots(), rstd.slots());
            // SAFETY: layer_norm writes every element of its outputs.
            unsafe {
                (
                    HostTensor::from_values(y.written(), dims),
                    HostTensor::from_values(mean.written(), vec![rows]),
                    HostTensor::from_values(rstd.written(), vec![rows]),
                )
            }
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        g: FloatTensor<Self>,
        b: Optional<Self>,
        eps: f64,
    ) -> Normalized<Self> {
        let mut stats = None;
        let tracked = x.clone();
        let y = match b.into_option() {
            Some(b) => record::<B, C, _, 3>([x, g, b], LayerNormBackward, |i| {
                forward::<B, 3>(i, eps, &mut stats, tracked)
            }),
            None => record::<B, C, _, 2>([x, g], LayerNormBackward, |i| {
                forward::<B, 2>(i, eps, &mut stats, tracked)
            }),
        };
        // The statistics enter the graph as values no gradient flows through.
        let (mean, rstd) = stats.expect("the forward ran");
        (y, constant::<B, C>(mean), constant::<B, C>(rstd))
    }
}

/// The inner forward of `[x, gamma]` or `[x, gamma, beta]`, and what the backward keeps; the
/// statistics are also put in `stats`. `tracked` is `x` as the graph knows it.
fn forward<B: CpuBackend, const N: usize>(
    inputs: [FloatTensor<B>; N],
    eps: f64,
    stats: &mut Option<(FloatTensor<B>, FloatTensor<B>)>,
    tracked: FloatTensor<Autodiff<B>>,
) -> (FloatTensor<B>, Saved<B>) {
    let (x, gamma, beta) = with_optional(inputs);
    let (y, mean, rstd) = B::fused_layer_norm(x.clone(), gamma.clone(), beta.into(), eps);
    *stats = Some((mean.clone(), rstd.clone()));
    (y, ([x, gamma, mean, rstd], tracked))
}

/// `[x, gamma, mean, rstd]`, and `x` as the graph knows it: not for its values but to take out a
/// gradient it already has.
type Saved<B> = ([FloatTensor<B>; 4], FloatTensor<Autodiff<B>>);

/// Parents `[x, gamma]` or `[x, gamma, beta]`.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: CpuBackend, const N: usize> Backward<B, N> for LayerNormBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (saved, x) = ops.state;
        // A pre-LayerNorm block's input is also the residual stream, read again by the add (the
        // accumulating projection) after the attention or MLP.
        let onto = ops.parents[0]
            .is_some()
            .then(|| take_gradient::<B>(grads, &x))
            .flatten();
        let (dx, dgamma, dbeta) = backward(saved, dy, onto, N == 3);
        register!(B, grads, ops.parents, [Some(dx), Some(dgamma), dbeta]);
    }
}

/// `(dx, dgamma, dbeta)` from the saved `[x, gamma, mean, rstd]`; `dx` added onto `onto` where
/// given; `dbeta` only `with_beta`.
fn backward<T: HostTensor>(
    [x, gamma, mean, rstd]: [T; 4],
    dy: T,
    onto: Option<T>,
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
        let mut dx = Output::new(xs.len(), "layer_norm backward: dx");
        let mut dgamma = Output::new(d, "layer_norm backward: dgamma");
        let mut dbeta = with_beta.then(|| Output::new(d, "layer_norm backward: dbeta"));
        let dbeta_slots = dbeta.as_mut().map(Output::slots);
        let onto = onto.as_ref().map(|o| o.values::<E>());
        kernel::layer_norm_backward(
            &xs,
            &g,
            &m,
            &r,
            &dys,
            onto.as_deref(),
            dx.slots(),
            dgamma.slots(),
            dbeta_slots,
        );
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
