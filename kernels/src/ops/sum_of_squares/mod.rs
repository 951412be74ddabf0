//! `Σ x²` of a tensor as a one-element tensor, the building block of a global gradient norm:
//! what clipping calls (fused on the CPU, composed from Burn ops elsewhere) and the fused op's
//! host adapter; a gradient norm is not differentiated. The kernel is in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::cpu::Float;
use crate::fused::autodiff::constant;
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, with_float};

/// `Σ x²` as a one-element tensor.
pub fn sum_of_squares<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    if !fused(&x) {
        return x.square().sum();
    }
    Tensor::from_dispatch(<Dispatch as SumOfSquaresOps>::fused_sum_of_squares(
        x.into_dispatch(),
    ))
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait SumOfSquaresOps: Backend {
    fn fused_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl<B: CpuBackend> SumOfSquaresOps for B {
    fn fused_sum_of_squares(x: FloatTensor<B>) -> FloatTensor<B> {
        forward(x)
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> SumOfSquaresOps for Autodiff<B, C> {
    fn fused_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        constant::<B, C>(forward(x.into_primitive()))
    }
}

/// `Σ x²`, `[1]`.
fn forward<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => {
        let total = kernel::sum_of_squares(&x.values::<E>());
        T::from_values(vec![E::from_f64(total)], vec![1])
    })
}
