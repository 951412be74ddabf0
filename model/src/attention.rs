//! Causal multi-head self-attention with a fused query/key/value projection, as nanoGPT's
//! `CausalSelfAttention`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use ember_kernels::ops;

use crate::layers::project_onto;

#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// `[d, 3d]`: queries, keys and values side by side.
    pub qkv: Linear,
    /// `[d, d]`: the output (residual) projection.
    pub proj: Linear,
    pub n_head: usize,
    /// Dropout on the attention probabilities and on the output (the residual branch), in
    /// training steps only.
    pub dropout: f64,
}

/// The `qkv` projections `[batch, positions, 3d]` (without their bias, which attention adds) of
/// the positions one attention layer has already seen, so that a new token attends to their keys
/// and values without recomputing them.
pub type LayerCache = Option<Tensor<3>>;

impl CausalSelfAttention {
    /// `residual + attn(x)`: `x` `[b, t, d]` → `[b, t, d]`, added onto the residual stream. With
    /// a `cache` (generation), `x` holds the positions that follow the cached ones, and the cache
    /// is extended with them.
    pub fn forward(
        &self,
        residual: Tensor<3>,
        x: Tensor<3>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        // `qkv`'s bias is added by attention, where it copies what it reads anyway, rather than
        // laid down by the Linear kernel in a pass of its own for the product to accumulate onto.
        let qkv = ops::linear(x, self.qkv.weight.val(), None); // [b, t, 3d]
        let bias = self.qkv.bias.as_ref().map(Param::val);
        let (h, p) = (self.n_head, self.dropout);
        let y = match cache {
            None => ops::causal_attention(qkv, bias, h, 0, p), // [b, t, d]
            Some(cache) => {
                let (all, past) = match cache.take() {
                    Some(earlier) => {
                        let past = earlier.dims()[1];
                        (Tensor::cat(vec![earlier, qkv], 1), past) // [b, past + t, 3d]
                    }
                    None => (qkv, 0),
                };
                *cache = Some(all.clone());
                ops::causal_attention(all, bias, h, past, p) // [b, t, d]
            }
        };
        project_onto(residual, &self.proj, y, self.dropout)
    }
}
