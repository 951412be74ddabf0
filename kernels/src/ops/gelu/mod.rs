//! GELU, `y = x·Φ(x)`, exact as PyTorch's `nn.GELU()` or with GPT-2's tanh approximation of Φ
//! (`nn.GELU(approximate='tanh')`), of its input plus an optional bias (the MLP's first Linear
//! layer's, added here rather than by that layer): what the model calls (fused on the CPU,
//! composed from Burn ops elsewhere), the fused op's host adapter and its backward pass. The
//! kernels, and the formulas, are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::fused::autodiff::{record, register};
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};
use crate::fused::{Optional, fused};
pub use kernel::Approximation;

/// GELU of `x + bias` (`z·Φ(z)`) element by element, the bias (when given) added over the last
/// dimension, with Φ computed as `approximation` says.
pub fn gelu<const D: usize>(
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
    approximation: Approximation,
) -> Tensor<D> {
    if fused(&x) {
        let bias = bias.map(Tensor::into_dispatch).into();
        let y = <Dispatch as GeluOps>::fused_gelu(x.into_dispatch(), bias, approximation);
        return Tensor::from_dispatch(y);
    }
    let x = match bias {
        Some(bias) => x + bias.unsqueeze(),
        None => x,
    };
    if approximation == Approximation::Tanh {
        // `x · σ(2u)`, `u = √(2/π)(x + 0.044715x³)`: the kernel's form of `(1 + tanh u)/2`.
        // Plain products and `exp`: written with Burn's `sigmoid` and `powi_scalar`, the `f64`
        // result differed from the kernel's by 3e-8 relative on NdArray (the fused-op check).
        let x2 = x.clone() * x.clone();
        let minus_two_u = x2
            .mul_scalar(kernel::CUBIC)
            .add_scalar(1.0)
            .mul(x.clone())
            .mul_scalar(-2.0 * kernel::SQRT_2_OVER_PI);
        return x / minus_two_u.exp().add_scalar(1.0);
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
    fn fused_gelu(
        x: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
        approximation: Approximation,
    ) -> FloatTensor<Self>;
}

impl<B: CpuBackend> GeluOps for B {
    fn fused_gelu(
        x: FloatTensor<B>,
        bias: Optional<B>,
        approximation: Approximation,
    ) -> FloatTensor<B> {
        with_float!(x.dtype(), E => {
            let xs = x.values::<E>();
            let bias = bias.into_option();
            let b = bias.as_ref().map(|b| b.values::<E>());
            let mut y = Output::new(xs.len(), "gelu: y");
            kernel::gelu(&xs, b.as_deref(), y.slots(), approximation);
            // SAFETY: gelu writes every element of its output.
            HostTensor::from_values(unsafe { y.written() }, x.dims())
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
    fn fused_gelu(
        x: FloatTensor<Self>,
        bias: Optional<Self>,
        approximation: Approximation,
    ) -> FloatTensor<Self> {
        let backward = GeluBackward(approximation);
        match bias.into_option() {
            None => record::<B, C, _, 1>([x], backward, |[x]| {
                let y = B::fused_gelu(x.clone(), Optional::Absent, approximation);
                (y, (x, None))
            }),
            Some(b) => record::<B, C, _, 2>([x, b], backward, |[x, b]| {
                let y = B::fused_gelu(x.clone(), Optional::Present(b.clone()), approximation);
                (y, (x, Some(b)))
            }),
        }
    }
}

/// Parents `[x]` or `[x, bias]`.
#[derive(Debug)]
struct GeluBackward(Approximation);

impl<B: CpuBackend, const N: usize> Backward<B, N> for GeluBackward {
    /// The input and the bias.
    type State = (FloatTensor<B>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, bias) = ops.state;
        let (dx, db) = backward(x, bias, dy, self.0);
        register!(B, grads, ops.parents, [Some(dx), db]);
    }
}

/// `dx`, and the bias's gradient when there is a bias, from the input `x`, the bias and the
/// output's gradient `dy`.
fn backward<T: HostTensor>(
    x: T,
    bias: Option<T>,
    dy: T,
    approximation: Approximation,
) -> (T, Option<T>) {
    with_float!(x.dtype(), E => {
        let (xs, dys) = (x.values::<E>(), dy.values::<E>());
        let b = bias.as_ref().map(|b| b.values::<E>());
        let mut dx = Output::new(xs.len(), "gelu backward: dx");
        let mut db = b.as_ref().map(|b| Output::new(b.len(), "gelu backward: db"));
        let slots = db.as_mut().map(Output::slots);
        kernel::gelu_backward(&xs, b.as_deref(), &dys, dx.slots(), slots, approximation);
        // SAFETY: gelu_backward writes every element of its outputs.
        let db = db.zip(bias).map(|(db, b)| T::from_values(unsafe { db.written() }, b.dims()));
        (T::from_values(unsafe { dx.written() }, x.dims()), db)
    })
}
