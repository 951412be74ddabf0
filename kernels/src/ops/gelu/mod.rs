//! Exact GELU, `y = x·Φ(x)`, as PyTorch's `nn.GELU()`: what the model calls (fused on the CPU,
//! composed from Burn ops elsewhere), the fused op's host adapter and its backward pass. The
//! kernels, and the formulas, are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::fused::autodiff::record;
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};

/// Exact GELU, `x·Φ(x)`, element by element.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if fused(&x) {
        return Tensor::from_dispatch(<Dispatch as GeluOps>::fused_gelu(x.into_dispatch()));
    }
    // `x/2 · (1 + erf(x/√2))`, from Burn ops whose gradients are exact. Not
    // `burn::tensor::activation::gelu`: in Burn 0.22.1 its forward is the exact erf form but its
    // backward is the derivative of the tanh approximation, which skews every gradient below the
    // MLP by up to ~1e-3 relative (found by the whole-model gradient check).
    let phi = x
        .clone()
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * phi
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait GeluOps: Backend {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl<B: CpuBackend> GeluOps for B {
    fn fused_gelu(x: FloatTensor<B>) -> FloatTensor<B> {
        with_float!(x.dtype(), E => {
            let xs = x.values::<E>();
            let mut y = Output::new(xs.len(), "gelu: y");
            kernel::gelu(&xs, y.slots());
            // SAFETY: gelu writes every element of its output.
            HostTensor::from_values(unsafe { y.written() }, x.dims())
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<B, C, _, 1>([x], GeluBackward, |[x]| (B::fused_gelu(x.clone()), x))
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: CpuBackend> Backward<B, 1> for GeluBackward {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| backward(x, dy));
    }
}

/// `dx` from the input `x` and the output's gradient `dy`.
fn backward<T: HostTensor>(x: T, dy: T) -> T {
    with_float!(x.dtype(), E => {
        let (xs, dys) = (x.values::<E>(), dy.values::<E>());
        let mut dx = Output::new(xs.len(), "gelu backward: dx");
        kernel::gelu_backward(&xs, &dys, dx.slots());
        // SAFETY: gelu_backward writes every element of its output.
        T::from_values(unsafe { dx.written() }, x.dims())
    })
}
