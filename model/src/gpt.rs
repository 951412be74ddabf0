use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor};

use crate::Block;

/// Decoder-only GPT: token + learned position embeddings, pre-LN blocks, final LayerNorm, and
/// an untied linear head.
#[derive(Module, Debug)]
pub struct Gpt {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    pub head: Linear,
    /// `[context, context]`, `true` above the diagonal; a constant, not a parameter.
    pub causal_mask: Tensor<2, Bool>,
}

impl Gpt {
    /// Longest sequence the model accepts.
    pub fn context(&self) -> usize {
        self.causal_mask.dims()[0]
    }

    /// `tokens`: `[batch, time]` with `time <= context`; returns logits `[batch, time, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        assert!(
            t <= self.context(),
            "sequence of {t} tokens is longer than the context ({})",
            self.context()
        );
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .unsqueeze::<2>()
            .expand([b, t]);
        let mut x = self.wte.forward(tokens) + self.wpe.forward(positions);
        for block in &self.blocks {
            x = block.forward(x, &self.causal_mask);
        }
        self.head.forward(self.ln_f.forward(x))
    }

    /// Mean cross-entropy of the next-token predictions: `targets` is `tokens` shifted by one.
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        cross_entropy(self.forward(tokens), targets)
    }
}

/// Mean negative log-likelihood of `targets` `[batch, time]` under `logits` `[batch, time, vocab]`.
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let log_probs = log_softmax(logits.reshape([b * t, v]), 1);
    log_probs
        .gather(1, targets.reshape([b * t, 1]))
        .mean()
        .neg()
}
