//! One AdamW update of a parameter tensor: what the optimizer calls (fused on the CPU, composed
//! from Burn ops elsewhere) and the fused op's host adapter, which updates the tensors in place
//! when nothing else holds them; an optimizer's update is not differentiated. The kernel, and
//! the formula, are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, ExtensionType, backend_extension};
use burn::tensor::Tensor;

use crate::fused::autodiff::constant;
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, with_float};
use kernel::AdamWStep;

/// One AdamW update of `param` with `grad`: `(param, m, v)` after the step, from the moments
/// `m`, `v` before it (zeros before the first step).
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    step: AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    if fused(&param) {
        let state = ParamState {
            param: param.into_dispatch(),
            m: m.into_dispatch(),
            v: v.into_dispatch(),
        };
        let after = <Dispatch as AdamWOps>::fused_adamw(state, grad.into_dispatch(), step);
        let [param, m, v] = [after.param, after.m, after.v].map(Tensor::from_dispatch);
        return (param, m, v);
    }
    // The composed form, as `burn::optim::AdamW` computes it, on the gradient as clipped.
    let grad = match step.grad_scale {
        1.0 => grad,
        scale => grad.mul_scalar(scale),
    };
    let m = m.mul_scalar(step.beta1) + grad.clone().mul_scalar(1.0 - step.beta1);
    let v = v.mul_scalar(step.beta2) + grad.square().mul_scalar(1.0 - step.beta2);
    let m_hat = m.clone().div_scalar(1.0 - step.beta1.powi(step.time));
    let v_hat = v.clone().div_scalar(1.0 - step.beta2.powi(step.time));
    let delta = m_hat / v_hat.sqrt().add_scalar(step.eps);
    let param = param.mul_scalar(1.0 - step.lr * step.weight_decay) - delta.mul_scalar(step.lr);
    (param, m, v)
}

/// A parameter and its two AdamW moments, before or after a step.
#[derive(ExtensionType, Debug, Clone)]
pub struct ParamState<B: Backend> {
    pub param: FloatTensor<B>,
    pub m: FloatTensor<B>,
    pub v: FloatTensor<B>,
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait AdamWOps: Backend {
    /// `state` after one step with the gradient `grad`.
    fn fused_adamw(
        #[extension_type] state: ParamState<Self>,
        grad: FloatTensor<Self>,
        step: AdamWStep,
    ) -> ParamState<Self>;
}

impl<B: CpuBackend> AdamWOps for B {
    fn fused_adamw(state: ParamState<B>, grad: FloatTensor<B>, step: AdamWStep) -> ParamState<B> {
        let ParamState {
            mut param,
            mut m,
            mut v,
        } = state;
        with_float!(param.dtype(), E => {
            let g = grad.values::<E>();
            // The optimizer hands over tensors nothing else holds: updated where they are.
            let (p, m_, v_) = (param.values_mut::<E>(), m.values_mut::<E>(), v.values_mut::<E>());
            kernel::adamw(p, &g, m_, v_, step);
        });
        ParamState { param, m, v }
    }
}

/// The parameters under autodiff are updated as plain values: no gradient flows through an
/// optimizer's step.
impl<B: CpuBackend, C: CheckpointStrategy> AdamWOps for Autodiff<B, C> {
    fn fused_adamw(
        state: ParamState<Self>,
        grad: FloatTensor<Self>,
        step: AdamWStep,
    ) -> ParamState<Self> {
        let [param, m, v] = [state.param, state.m, state.v].map(|t| t.into_primitive());
        let after = B::fused_adamw(ParamState { param, m, v }, grad.into_primitive(), step);
        ParamState {
            param: constant::<B, C>(after.param),
            m: constant::<B, C>(after.m),
            v: constant::<B, C>(after.v),
        }
    }
}
