//! The operations the model calls. Each takes the fused kernel on a CPU backend that has it
//! (NdArray, Flex; `f32` or `f64`) and the composed Burn ops anywhere else (wgpu, cuda), with
//! the same results within float tolerance. The choice is made per call from the tensor's
//! device, so the model is written once for every backend.

use burn::backend::Dispatch;
#[cfg(any(feature = "ndarray", feature = "flex"))]
use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, Int, Tensor};

use crate::cpu::AdamWStep;
use crate::{FusedOps, composed};

/// Whether tensors on `device` of type `dtype` run the fused kernels.
pub fn is_fused(device: &Device, dtype: DType) -> bool {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return false;
    }
    match device.clone().without_autodiff().as_dispatch() {
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    is_fused(&x.device(), x.dtype())
}

/// Exact GELU, `x·Φ(x)`, as PyTorch's `nn.GELU()`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return composed::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

/// LayerNorm over the last dimension, as `burn::tensor::module::layer_norm`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    if !fused(&x) {
        return composed::layer_norm(x, gamma, beta, eps);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.map(Tensor::into_dispatch).into(),
        eps,
    ))
}

/// `x·weight + bias` with `weight` `[in, out]`, as `burn::tensor::module::linear`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if !fused(&x) || D < 2 {
        return composed::linear(x, weight, bias);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.map(Tensor::into_dispatch).into(),
    ))
}

/// Causal multi-head self-attention from the fused projection `qkv` `[b, t, 3d]` (each
/// position's queries, keys and values side by side) to the merged heads `[b, t - past, d]`.
/// The first `past` positions are attended to but ask nothing themselves: 0 in training, the
/// positions already generated when `qkv` holds a decoder's cache followed by its new tokens.
pub fn causal_attention(qkv: Tensor<3>, n_head: usize, past: usize) -> Tensor<3> {
    if !fused(&qkv) {
        return composed::causal_attention(qkv, n_head, past);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_causal_attention(
        qkv.into_dispatch(),
        n_head,
        past,
    ))
}

/// Mean cross-entropy `[1]` of `logits` `[n, v]` against the classes `targets` `[n]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    if !fused(&logits) {
        return composed::cross_entropy(logits, targets);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// One AdamW update of `param` with `grad`: `(param, m, v)` after the step, from the moments
/// `m`, `v` before it (zeros before the first step).
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    step: AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    if !fused(&param) {
        return composed::adamw(param, grad, m, v, step);
    }
    let (param, m, v) = <Dispatch as FusedOps>::fused_adamw(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(param),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// `Σ x²` as a one-element tensor, the building block of a global gradient norm.
pub fn sum_of_squares<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    if !fused(&x) {
        return composed::sum_of_squares(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_sum_of_squares(
        x.into_dispatch(),
    ))
}
