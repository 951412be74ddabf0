//! The whole GPT: embeddings, blocks, final LayerNorm and head, and the loss.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Int, Tensor};
use ember_kernels::ops::{self, HeadWeight};

use crate::Block;
use crate::attention::LayerCache;
use crate::layers::layer_norm;

/// Decoder-only GPT: token + learned position embeddings, pre-LN blocks, final LayerNorm, and
/// a linear head (tied to the token embedding or not).
#[derive(Module, Debug)]
pub struct Gpt {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    pub head: Head,
    /// Dropout on the embeddings' sum, in training steps only (the blocks hold their own).
    pub dropout: f64,
}

/// The output layer `logits = x·W + b`: `W` `[d, vocab]` of its own, or the token embedding
/// transposed when the embeddings are tied (`weight` is then `None`), as in nanoGPT.
#[derive(Module, Debug)]
pub struct Head {
    pub weight: Option<Param<Tensor<2>>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Gpt {
    /// Longest sequence the model accepts (the rows of the position embedding).
    pub fn context(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    /// `tokens`: `[batch, time]` with `time <= context`; returns logits `[batch, time, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.logits(tokens, None)
    }

    /// Logits of `tokens` `[batch, time]` following the positions already in `cache`, which
    /// it extends: generation feeds one token at a time and never recomputes the past.
    ///
    /// # Panics
    /// If the cache and the new tokens together exceed the context.
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        self.logits(tokens, Some(cache))
    }

    fn logits(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        let (weight, layout) = self.head_weight();
        let bias = self.head.bias.as_ref().map(Param::val);
        let x = self.hidden(tokens, cache);
        match layout {
            HeadWeight::InOut => ops::linear(x, weight, bias), // [b, t, vocab]
            // The `[vocab, d]` embedding read as it is stored, never copied into `[d, vocab]`
            // order (1.2 s a token at GPT-2's size).
            HeadWeight::Tied => ops::linear_transposed(x, weight, bias),
        }
    }

    /// The final LayerNorm's output `[batch, time, d]`, what the head reads.
    fn hidden(&self, tokens: Tensor<2, Int>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        assert!(
            past + t <= self.context(),
            "{past} cached + {t} new tokens exceed the context ({})",
            self.context()
        );
        let (wte, wpe) = (self.wte.weight.val(), self.wpe.weight.val());
        let x = ops::embedding(tokens, wte, wpe, past); // [b, t, d]
        let mut x = ops::dropout(x, self.dropout);
        for (i, block) in self.blocks.iter().enumerate() {
            let layer = cache.as_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, layer);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        layer_norm(&self.ln_f, x)
    }

    /// The head's weight as stored: its own `[d, vocab]`, or the token embedding `[vocab, d]`.
    fn head_weight(&self) -> (Tensor<2>, HeadWeight) {
        match &self.head.weight {
            Some(weight) => (weight.val(), HeadWeight::InOut),
            None => (self.wte.weight.val(), HeadWeight::Tied),
        }
    }

    /// Mean cross-entropy of the next-token predictions: `targets` is `tokens` shifted by one.
    /// The head and the loss run as one operation ([`ops::head_loss`]): on the CPU the logits are
    /// scored a chunk of rows at a time and never exist whole.
    pub fn loss(&self, tokens: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let x = self.hidden(tokens, None);
        let [b, t, d] = x.dims();
        let (weight, layout) = self.head_weight();
        let bias = self.head.bias.as_ref().map(Param::val);
        ops::head_loss(
            x.reshape([b * t, d]),
            weight,
            layout,
            bias,
            targets.reshape([b * t]),
        )
    }
}

/// What every layer has computed for the positions seen so far.
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
