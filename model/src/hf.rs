//! Hugging Face's GPT-2, both ways: a `GPT2LMHeadModel` folder as `save_pretrained` writes it and
//! the Hub serves it (`config.json` and `model.safetensors`) becomes a [`Gpt`] ([`from_hf`]), and
//! a [`Gpt`] of GPT-2's architecture becomes such a folder's two files ([`to_hf`]), which
//! `GPT2LMHeadModel.from_pretrained` loads.
//!
//! GPT-2's layers are nanoGPT's under the same names (see [`crate::export`]), with three
//! differences: the projections are `Conv1D`s, whose weights are stored `[in, out]` as Burn keeps
//! them (not transposed, unlike `nn.Linear`); the tied head is not stored (`save_pretrained`
//! drops a tensor that shares another's memory); and the files of the Hub hold the causal masks
//! as buffers (`h.N.attn.bias`, `h.N.attn.masked_bias`), which are skipped. `save_pretrained`
//! of a `GPT2LMHeadModel` prefixes the names with `transformer.`; the Hub's `gpt2` files, saved
//! from a `GPT2Model`, do not: both are read.

use std::collections::{HashMap, HashSet};

use burn::tensor::Device;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::export::{load, named_tensors, serialize, torch_name};
use crate::{Activation, Gpt, GptConfig, LAYER_NORM_EPS, ModelError, parameters};

/// The fields of a GPT-2 `config.json` that decide the model, with `GPT2Config`'s defaults.
#[derive(Debug, Serialize, Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: String,
    vocab_size: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_positions: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "gelu_new")]
    activation_function: String,
    #[serde(default = "layer_norm_epsilon")]
    layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    add_cross_attention: bool,
    #[serde(default)]
    resid_pdrop: f64,
    #[serde(default)]
    embd_pdrop: f64,
    #[serde(default)]
    attn_pdrop: f64,
}

fn gelu_new() -> String {
    "gelu_new".into()
}
fn layer_norm_epsilon() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// The architecture every file names; what [`from_hf`] reads.
const ARCHITECTURE: &str = "GPT2LMHeadModel";

impl HfConfig {
    /// The Ember shape of this GPT-2, or why Ember cannot hold it.
    fn gpt(&self) -> Result<GptConfig, ModelError> {
        let unsupported = |why: String| Err(ModelError::HfConfig(why));
        if self.model_type != "gpt2" {
            let name = self.architectures.first().map_or("?", String::as_str);
            return unsupported(format!(
                "model_type {:?} ({name}) is not GPT-2; ember import --hf reads {ARCHITECTURE} \
                 folders (gpt2, gpt2-medium, gpt2-large, gpt2-xl, and models of their shape)",
                self.model_type
            ));
        }
        let activation = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return unsupported(format!(
                    "activation_function {other:?}: Ember has gelu and gelu_new (tanh)"
                ));
            }
        };
        let checks = [
            (
                self.n_inner.is_none_or(|n| n == 4 * self.n_embd),
                format!("n_inner {:?}: Ember's MLP is 4 x n_embd wide", self.n_inner),
            ),
            (
                (self.layer_norm_epsilon - LAYER_NORM_EPS).abs() <= 1e-12,
                format!(
                    "layer_norm_epsilon {}: Ember's LayerNorm uses {LAYER_NORM_EPS}",
                    self.layer_norm_epsilon
                ),
            ),
            (
                self.scale_attn_weights && !self.scale_attn_by_inverse_layer_idx,
                "attention scaled other than by 1/sqrt(head size)".to_string(),
            ),
            (
                !self.add_cross_attention,
                "cross-attention (an encoder-decoder model)".to_string(),
            ),
        ];
        if let Some((_, why)) = checks.into_iter().find(|(ok, _)| !ok) {
            return unsupported(format!("{why}; Ember cannot hold this model"));
        }
        let dropout = self.resid_pdrop.max(self.embd_pdrop).max(self.attn_pdrop);
        let config = GptConfig::new(
            self.vocab_size,
            self.n_embd,
            self.n_layer,
            self.n_head,
            self.n_positions,
        )
        .with_bias(true)
        .with_tie_embeddings(self.tie_word_embeddings)
        .with_head_bias(false)
        .with_activation(activation)
        .with_dropout(if (0.0..1.0).contains(&dropout) {
            dropout
        } else {
            0.0
        });
        match config.invalid() {
            Some((field, why)) => unsupported(format!("{field}: {why}")),
            None => Ok(config),
        }
    }
}

/// The model in a `GPT2LMHeadModel` folder's `config.json` and `model.safetensors` (their
/// contents), on `device`, with its config. The dropout of `config.json` (`resid_pdrop` and the
/// others; 0.1 in OpenAI's) is not kept: whether to drop out when fine-tuning is the run's choice.
pub fn from_hf(
    config_json: &str,
    safetensors: &[u8],
    device: &Device,
) -> Result<(Gpt, GptConfig), ModelError> {
    let hf: HfConfig = serde_json::from_str(config_json)
        .map_err(|e| ModelError::HfConfig(format!("not a GPT-2 config: {e}")))?;
    let config = hf.gpt()?.with_dropout(0.0);
    let tensors = SafeTensors::deserialize(safetensors)?;
    let prefix = if tensors.tensor("wte.weight").is_ok() {
        ""
    } else {
        "transformer."
    };
    let name_of = |burn: &str| hf_name(burn, prefix);
    let model = load(&config, &tensors, device, &name_of)?;

    // Anything else in the file is a part this model would silently lack.
    let used: HashSet<String> = parameters(&model)
        .iter()
        .map(|p| name_of(&p.path).0)
        .collect();
    let tied_head = |name: &str| config.tie_embeddings && name == "lm_head.weight";
    let mask_buffer =
        |name: &str| name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
    let mut extra: Vec<&str> = tensors
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n) && !tied_head(n) && !mask_buffer(n))
        .collect();
    extra.sort_unstable();
    if let Some(first) = extra.first() {
        return Err(ModelError::Tensor(format!(
            "{first} (and {} more) belongs to no part of a GPT-2 of this config.json",
            extra.len() - 1
        )));
    }
    Ok((model, config))
}

/// `model` (of shape `config`) as a `GPT2LMHeadModel` folder's `config.json` and
/// `model.safetensors`, named as `save_pretrained` names them.
pub fn to_hf(model: &Gpt, config: &GptConfig) -> Result<(String, Vec<u8>), ModelError> {
    let not_gpt2 = |why: &str| {
        Err(ModelError::HfConfig(format!(
            "{ARCHITECTURE} has {why}; export with --format nanogpt, or train with GPT-2's \
             architecture (model.bias = true, model.head_bias = false)"
        )))
    };
    if !config.bias {
        return not_gpt2("biases on every layer");
    }
    if config.head_bias {
        return not_gpt2("no bias on its head");
    }
    let hf = HfConfig {
        architectures: vec![ARCHITECTURE.into()],
        model_type: "gpt2".into(),
        vocab_size: config.vocab_size,
        n_embd: config.d_model,
        n_layer: config.n_layer,
        n_head: config.n_head,
        n_positions: config.context,
        n_inner: None,
        activation_function: match config.activation {
            Activation::Gelu => "gelu".into(),
            Activation::GeluTanh => "gelu_new".into(),
        },
        layer_norm_epsilon: LAYER_NORM_EPS,
        tie_word_embeddings: config.tie_embeddings,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        add_cross_attention: false,
        resid_pdrop: config.dropout,
        embd_pdrop: config.dropout,
        attn_pdrop: config.dropout,
    };
    let json = serde_json::to_string_pretty(&hf).expect("a config always serializes");
    let tensors = named_tensors(model, &|burn| hf_name(burn, "transformer."));
    let bytes = serialize(&tensors, HashMap::new())?;
    Ok((json, bytes))
}

/// GPT-2's name for the parameter at Burn `path` (names start with `prefix` instead of
/// `transformer.`), and whether it is stored transposed: only an untied head, an `nn.Linear`.
fn hf_name(burn: &str, prefix: &str) -> (String, bool) {
    let (name, _) = torch_name(burn);
    match name.strip_prefix("transformer.") {
        Some(rest) => (format!("{prefix}{rest}"), false),
        None => (name, true), // lm_head.weight
    }
}
