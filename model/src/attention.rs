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

impl CausalSelfAttention {
    /// `x`: `[batch, time, d]`; `mask`: `[context, context]`, `true` where attention is forbidden.
    pub fn forward(&self, x: Tensor<3>, mask: &Tensor<2, Bool>) -> Tensor<3> {
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
        let (k, v) = (heads(1), heads(2));
        let mask = mask
            .clone()
            .slice(s![0..t, 0..t])
            .unsqueeze::<4>()
            .expand([b, h, t, t]);
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mask_fill(mask, f32::NEG_INFINITY);
        let y = softmax(scores, 3).matmul(v);
        self.proj.forward(y.swap_dims(1, 2).reshape([b, t, d]))
    }
}
