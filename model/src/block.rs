//! One transformer block: pre-LayerNorm attention and MLP, each added to the residual stream.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use ember_kernels::ops;

use crate::CausalSelfAttention;
use crate::attention::LayerCache;
use crate::layers::{layer_norm, linear};

/// The 4x feed-forward network with exact (erf) GELU, as `nn.GELU()` in PyTorch.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc: Linear,
    pub proj: Linear,
}

impl Mlp {
    /// `[b, t, d]` → `[b, t, 4d]` → `[b, t, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.proj, ops::gelu(linear(&self.fc, x)))
    }
}

/// A pre-LayerNorm transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    /// `x`: `[b, t, d]`; `cache` as [`CausalSelfAttention::forward`].
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(layer_norm(&self.ln_1, x), cache);
        x.clone() + self.mlp.forward(layer_norm(&self.ln_2, x))
    }
}
