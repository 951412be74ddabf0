//! The shape of a GPT (`GptConfig`), how it is built with GPT-2's initialisation, and how many
//! parameters it has.

use burn::config::Config;
use burn::nn::{EmbeddingConfig, Initializer, LayerNormConfig, Linear};
use burn::tensor::Device;
use ember_kernels::ops::gelu::Approximation;
use serde::{Deserialize, Serialize};

use crate::layers::LAYER_NORM_EPS;
use crate::{Block, CausalSelfAttention, Gpt, Head, Mlp};

/// The shape of a GPT. Presets live in `configs/*.toml`; `vocab_size` comes from the tokenizer.
#[derive(Config, Debug, PartialEq)]
pub struct GptConfig {
    /// Number of distinct tokens.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_head: usize,
    /// Longest sequence the model sees (nanoGPT's `block_size`).
    pub context: usize,
    /// Biases on every Linear and LayerNorm of the blocks and the final LayerNorm, as GPT-2 and
    /// nanoGPT's default.
    #[config(default = true)]
    pub bias: bool,
    /// The head reuses the token embedding (`logits = x · wteᵀ`), as nanoGPT and GPT-2 do;
    /// otherwise it has a weight of its own.
    #[config(default = false)]
    pub tie_embeddings: bool,
    /// A bias on the head (nanoGPT's head has none).
    #[config(default = true)]
    pub head_bias: bool,
    /// The MLP's nonlinearity.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// The probability that dropout zeroes an element, where nanoGPT drops: the embeddings'
    /// sum, the attention probabilities, and each residual branch. Training steps only.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// The MLP's nonlinearity: exact GELU as PyTorch's `nn.GELU()` and nanoGPT, or the tanh
/// approximation GPT-2 was trained with (Hugging Face's `gelu_new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Gelu,
    GeluTanh,
}

impl Activation {
    /// How the GELU kernel computes Φ for this activation.
    pub fn approximation(self) -> Approximation {
        match self {
            Self::Gelu => Approximation::None,
            Self::GeluTanh => Approximation::Tanh,
        }
    }
}

/// GPT-2's initialisation: N(0, 0.02) for weights and embeddings.
const INIT_STD: f64 = 0.02;

impl GptConfig {
    /// The first field that makes the shape impossible, and why; `None` when it can be built.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("context", self.context),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Some((name, "expected a positive integer, got 0".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            let why = format!("expected a probability 0 <= p < 1, got {}", self.dropout);
            return Some(("dropout", why));
        }
        (!self.d_model.is_multiple_of(self.n_head)).then(|| {
            let why = format!(
                "d_model ({}) must be a multiple of n_head ({})",
                self.d_model, self.n_head
            );
            ("n_head", why)
        })
    }

    /// Builds the model with GPT-2 initialisation. Seed the device first for a reproducible one.
    ///
    /// # Panics
    /// If the shape is [`invalid`](Self::invalid).
    pub fn init(&self, device: &Device) -> Gpt {
        if let Some((field, why)) = self.invalid() {
            panic!("invalid GptConfig: {field}: {why}");
        }
        let d = self.d_model;
        // Residual projections are scaled so that the residual stream's variance does not grow
        // with depth (GPT-2, section 2.3).
        let proj_std = INIT_STD / (2.0 * self.n_layer as f64).sqrt();
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: LayerNormConfig::new(d)
                    .with_epsilon(LAYER_NORM_EPS)
                    .with_bias(self.bias)
                    .init(device),
                attn: CausalSelfAttention {
                    qkv: self.linear(d, 3 * d, INIT_STD, device),
                    proj: self.linear(d, d, proj_std, device),
                    n_head: self.n_head,
                    dropout: self.dropout,
                },
                ln_2: LayerNormConfig::new(d)
                    .with_epsilon(LAYER_NORM_EPS)
                    .with_bias(self.bias)
                    .init(device),
                mlp: Mlp {
                    fc: self.linear(d, 4 * d, INIT_STD, device),
                    proj: self.linear(4 * d, d, proj_std, device),
                    activation: self.activation,
                    dropout: self.dropout,
                },
            })
            .collect();
        let embedding = |n| {
            EmbeddingConfig::new(n, d)
                .with_initializer(normal(INIT_STD))
                .init(device)
        };
        Gpt {
            wte: embedding(self.vocab_size),
            wpe: embedding(self.context),
            blocks,
            ln_f: LayerNormConfig::new(d)
                .with_epsilon(LAYER_NORM_EPS)
                .with_bias(self.bias)
                .init(device),
            dropout: self.dropout,
            head: Head {
                weight: (!self.tie_embeddings)
                    .then(|| normal(INIT_STD).init([d, self.vocab_size], device)),
                bias: self
                    .head_bias
                    .then(|| Initializer::Zeros.init([self.vocab_size], device)),
            },
        }
    }

    /// Parameter count from the shape alone, without building the model.
    /// Counted in u128 and saturated, so that an absurd shape (a damaged file's) gives a huge
    /// count rather than one that wrapped around to a small one.
    pub fn num_params(&self) -> usize {
        let wide = |n: usize| n as u128;
        let (d, v, b) = (
            wide(self.d_model),
            wide(self.vocab_size),
            u128::from(self.bias),
        );
        let linear = |i: u128, o: u128| i * o + b * o;
        let layer_norm = d + b * d;
        let block =
            2 * layer_norm + linear(d, 3 * d) + linear(d, d) + linear(d, 4 * d) + linear(4 * d, d);
        let head = u128::from(!self.tie_embeddings) * d * v + u128::from(self.head_bias) * v;
        let total = v * d + wide(self.context) * d + wide(self.n_layer) * block + layer_norm + head;
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Parameters that take part in matmuls (all Linear weights): the `N` of the 6·N·tokens
    /// estimate of training FLOPs.
    pub fn num_matmul_params(&self) -> usize {
        let d = self.d_model;
        self.n_layer * 12 * d * d + d * self.vocab_size
    }

    /// A Linear with N(0, `std`) weights and zero bias (Burn's own Linear draws both).
    fn linear(&self, d_in: usize, d_out: usize, std: f64, device: &Device) -> Linear {
        Linear {
            weight: normal(std).init([d_in, d_out], device),
            bias: self.bias.then(|| Initializer::Zeros.init([d_out], device)),
        }
    }
}

fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}
