//! The fused operations as a Burn backend extension.
//!
//! [`FusedOps`] is what the model calls (through [`crate::ops`]); the `#[backend_extension]`
//! macro routes each call to the backend the tensor lives on: NdArray and Flex run the CPU
//! kernels, `Autodiff<B>` records the operation with its hand-written backward pass
//! ([`crate::autodiff`]). [`FusedBackward`] holds what that backward pass needs from the inner
//! backend: the forward passes that also return their saved statistics, and the gradients.
//! Backends not listed (wgpu, cuda) never get here: [`crate::ops`] sends them the composed
//! operations instead.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, ExtensionType, backend_extension};

use crate::cpu::AdamWStep;

/// A tensor input that may be absent (a bias or a LayerNorm shift, which a model may go
/// without). The extension macro routes `Option` inputs only in Burn's own dispatch, so this
/// is its stand-in.
#[derive(ExtensionType, Debug, Clone)]
pub enum Optional<B: Backend> {
    Present(FloatTensor<B>),
    Absent,
}

impl<B: Backend> Optional<B> {
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Optional::Present(t) => Some(t),
            Optional::Absent => None,
        }
    }
}

impl<B: Backend> From<Option<FloatTensor<B>>> for Optional<B> {
    fn from(t: Option<FloatTensor<B>>) -> Self {
        t.map_or(Optional::Absent, Optional::Present)
    }
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait FusedOps: Backend {
    /// Exact GELU, `x·Φ(x)`.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// LayerNorm over the last dimension of `x`, with scale `gamma` and optional shift `beta`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        #[extension_type] beta: Optional<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// `x·weight + bias` for `x` `[.., in]` and `weight` `[in, out]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
    ) -> FloatTensor<Self>;
    /// Causal self-attention from `qkv` `[B, T, 3d]` to merged heads `[B, T - past, d]`: the
    /// queries are the positions after the first `past`, which are keys and values only.
    fn fused_causal_attention(
        qkv: FloatTensor<Self>,
        n_head: usize,
        past: usize,
    ) -> FloatTensor<Self>;
    /// Mean cross-entropy `[1]` of `logits` `[N, V]` against `targets` `[N]`.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self>;
    /// One AdamW update: `(param, m, v)` after the step, from the parameter, its gradient and
    /// the moments before it. Not differentiable (an optimizer's work).
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `Σ x²` as a one-element tensor. Not differentiable (a gradient norm's work).
    fn fused_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The inner backend's side of the fused operations' backward passes.
pub trait FusedBackward: FusedOps {
    fn fused_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `[y, mean, rstd]`, the statistics one per row.
    fn fused_layer_norm_with_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: Option<FloatTensor<Self>>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3];
    /// `saved` is `[x, gamma, mean, rstd, dy]`; returns `(dx, dgamma, dbeta)`, `dbeta` only
    /// `with_beta`.
    #[allow(clippy::type_complexity)]
    fn fused_layer_norm_backward(
        saved: [FloatTensor<Self>; 5],
        with_beta: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    );
    /// `[dx, dweight, dbias]`, each only where `want` asks for it.
    fn fused_linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        want: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3];
    /// `[y, probs]`, `probs` `[B, H, T - past, T]`.
    fn fused_attention_with_probs(
        qkv: FloatTensor<Self>,
        n_head: usize,
        past: usize,
    ) -> [FloatTensor<Self>; 2];
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        n_head: usize,
        past: usize,
    ) -> FloatTensor<Self>;
    /// `[loss, lse]`, `lse` the log-sum-exp of each row.
    fn fused_cross_entropy_with_lse(
        logits: FloatTensor<Self>,
        targets: &IntTensor<Self>,
    ) -> [FloatTensor<Self>; 2];
    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: &IntTensor<Self>,
        lse: FloatTensor<Self>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}
