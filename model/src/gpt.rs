use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor};

use crate::Block;
use crate::attention::LayerCache;

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
        self.forward_cached(tokens, &mut KvCache::new(self.blocks.len()))
    }

    /// Logits of `tokens` `[batch, time]` following the positions already in `cache`, which
    /// it extends: generation feeds one token at a time and never recomputes the past.
    ///
    /// # Panics
    /// If the cache and the new tokens together exceed the context.
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let past = cache.len;
        assert!(
            past + t <= self.context(),
            "{past} cached + {t} new tokens exceed the context ({})",
            self.context()
        );
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device)
            .unsqueeze::<2>()
            .expand([b, t]);
        let mut x = self.wte.forward(tokens) + self.wpe.forward(positions);
        for (block, layer) in self.blocks.iter().zip(&mut cache.layers) {
            x = block.forward(x, &self.causal_mask, layer);
        }
        cache.len += t;
        self.head.forward(self.ln_f.forward(x))
    }

    /// Mean cross-entropy of the next-token predictions: `targets` is `tokens` shifted by one.
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        cross_entropy(self.forward(tokens), targets)
    }
}

/// The keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
