use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, s};

/// Causal multi-head self-attention with a fused query/key/value projection, as nanoGPT's.
#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// `[d, 3d]`: queries, keys and values side by side.
    pub qkv: Linear,
    /// `[d, d]`: the output (residual) projection.
    pub proj: Linear,
    pub n_head: usize,
}

/// Keys and values `[batch, heads, time, head_dim]` of the positions already seen by one
/// attention layer, so that a new token attends to them without recomputing them.
pub type LayerCache = Option<(Tensor<4>, Tensor<4>)>;

impl CausalSelfAttention {
    /// `x`: `[batch, time, d]` at positions `past..past + time`, where `past` is the length of
    /// `cache` (0 and `None` in training); `mask`: `[context, context]`, `true` where attention is
    /// forbidden. Extends `cache` with this call's keys and values.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: &Tensor<2, Bool>,
        cache: &mut LayerCache,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.n_head, d / self.n_head);
        let qkv = self.qkv.forward(x);
        let heads = |i: usize| {
            qkv.clone()
                .slice(s![.., .., i * d..(i + 1) * d])
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        // Scaling q rather than the scores costs t·hd instead of t·t multiplications.
        let q = heads(0).mul_scalar(1.0 / (hd as f64).sqrt());
        let (k, v) = match cache.take() {
            Some((k0, v0)) => (
                Tensor::cat(vec![k0, heads(1)], 2),
                Tensor::cat(vec![v0, heads(2)], 2),
            ),
            None => (heads(1), heads(2)),
        };
        let total = k.dims()[2];
        let past = total - t;
        let mask = mask
            .clone()
            .slice(s![past..total, 0..total])
            .unsqueeze::<4>()
            .expand([b, h, t, total]);
        let scores = q
            .matmul(k.clone().swap_dims(2, 3))
            .mask_fill(mask, f32::NEG_INFINITY);
        let y = softmax(scores, 3).matmul(v.clone());
        *cache = Some((k, v));
        self.proj.forward(y.swap_dims(1, 2).reshape([b, t, d]))
    }
}
