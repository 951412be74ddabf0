//! One transformer block: pre-LayerNorm attention and MLP, each added to the residual stream.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use ember_kernels::ops;

use crate::attention::LayerCache;
use crate::layers::{layer_norm, project_onto};
use crate::{Activation, CausalSelfAttention};

/// The 4x feed-forward network with GELU (exact, as `nn.GELU()` in PyTorch, or GPT-2's tanh
/// approximation), its output dropped out in training.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc: Linear,
    pub proj: Linear,
    #[module(skip)]
    pub activation: Activation,
    /// Dropout on the output (the residual branch), in training steps only.
    pub dropout: f64,
}

impl Mlp {
    /// `residual + mlp(x)`: `x` `[b, t, d]` → `[b, t, 4d]` → `[b, t, d]`, added onto the
    /// residual stream.
    pub fn forward(&self, residual: Tensor<3>, x: Tensor<3>) -> Tensor<3> {
        // `fc`'s bias is added by GELU, in the pass that reads the product anyway, rather than
        // laid down by the Linear kernel in a pass of its own for the product to accumulate onto.
        let product = ops::linear(x, self.fc.weight.val(), None);
        let bias = self.fc.bias.as_ref().map(Param::val);
        let hidden = ops::gelu(product, bias, self.activation.approximation());
        project_onto(residual, &self.proj, hidden, self.dropout)
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
        // Each branch is given the stream and adds its output onto it.
        let x = self
            .attn
            .forward(x.clone(), layer_norm(&self.ln_1, x), cache);
        self.mlp.forward(x.clone(), layer_norm(&self.ln_2, x))
    }
}
