//! The same operations composed from Burn's tensor ops: what the GPU backends run (their
//! autodiff differentiates each op), and the reference the fused kernels are tested against.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor, s};

use crate::cpu::AdamWStep;

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, from ops whose gradients are exact.
///
/// Not `burn::tensor::activation::gelu`: in Burn 0.22.1 its forward is the exact erf form but
/// its backward is the derivative of the tanh approximation, which skews every gradient below
/// the MLP by up to ~1e-3 relative (found by the whole-model gradient check).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let phi = x
        .clone()
        .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * phi
}

pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    burn::tensor::module::layer_norm(x, gamma, beta, eps)
}

pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    burn::tensor::module::linear(x, weight, bias)
}

/// Causal self-attention from `qkv` `[b, t, 3d]` to the merged heads `[b, t - past, d]`, the
/// queries being the positions after the first `past`.
pub fn causal_attention(qkv: Tensor<3>, n_head: usize, past: usize) -> Tensor<3> {
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
    softmax(scores, 3)
        .matmul(v) // [b, h, tq, hd]
        .swap_dims(1, 2)
        .reshape([b, tq, d])
}

/// Mean negative log-likelihood of `targets` `[n]` under `logits` `[n, v]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg()
}

/// One AdamW update, as `burn::optim::AdamW` computes it (see [`crate::cpu::adamw`]).
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    step: AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let m = m.mul_scalar(step.beta1) + grad.clone().mul_scalar(1.0 - step.beta1);
    let v = v.mul_scalar(step.beta2) + grad.square().mul_scalar(1.0 - step.beta2);
    let m_hat = m.clone().div_scalar(1.0 - step.beta1.powi(step.time));
    let v_hat = v.clone().div_scalar(1.0 - step.beta2.powi(step.time));
    let delta = m_hat / v_hat.sqrt().add_scalar(step.eps);
    let param = param.mul_scalar(1.0 - step.lr * step.weight_decay) - delta.mul_scalar(step.lr);
    (param, m, v)
}

/// `Σ x²` as a one-element tensor.
pub fn sum_of_squares<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    x.square().sum()
}
