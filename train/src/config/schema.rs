//! What a run's config holds, and every default: the one place a default is written. The
//! presets in `configs/` say only how they differ from these; `train --print-config` prints
//! the resolved values as TOML.
//!
//! Every section is `#[serde(default)]`, so a config file may hold any subset of the keys.

use std::path::PathBuf;

use ember_model::{Activation, GptConfig};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::tokenizer::{Tokenizer, TokenizerKind};

/// A whole run: TOML sections `[model] [train] [data] [run] [memory]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub model: ModelSection,
    pub train: TrainSection,
    pub data: DataSection,
    pub run: RunSection,
    pub memory: MemorySection,
}

/// The model's shape; the vocabulary size comes from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Width of the residual stream (the embedding size).
    pub d_model: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_head: usize,
    /// Longest sequence the model sees (nanoGPT's `block_size`).
    pub context: usize,
    /// Biases on every Linear and LayerNorm (GPT-2 style).
    pub bias: bool,
    /// The head reuses the token embedding (nanoGPT and GPT-2 do).
    pub tie_embeddings: bool,
    /// A bias on the head (nanoGPT's head has none).
    pub head_bias: bool,
    /// The MLP's nonlinearity: `gelu` (exact, as nanoGPT) or `gelu_tanh` (GPT-2's
    /// approximation, what its weights were trained with; `ember import --hf` sets it).
    pub activation: Activation,
    /// Dropout probability (embeddings, attention probabilities, residual branches, as
    /// nanoGPT), in training steps only; nanoGPT suggests 0.1 and more for fine-tuning. Above 0
    /// the attention runs its composed form, which keeps the probabilities (slower, more memory).
    pub dropout: f64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            d_model: 128,
            n_layer: 2,
            n_head: 4,
            context: 64,
            bias: true,
            tie_embeddings: false,
            head_bias: true,
            activation: Activation::Gelu,
            dropout: 0.0,
        }
    }
}

impl ModelSection {
    /// The model for a vocabulary of `vocab_size` tokens.
    pub fn gpt(&self, vocab_size: usize) -> GptConfig {
        GptConfig::new(
            vocab_size,
            self.d_model,
            self.n_layer,
            self.n_head,
            self.context,
        )
        .with_bias(self.bias)
        .with_tie_embeddings(self.tie_embeddings)
        .with_head_bias(self.head_bias)
        .with_activation(self.activation)
        .with_dropout(self.dropout)
    }
}

/// The optimizer, its schedule, and how often the loop evaluates, samples, saves and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer steps in the run (the small preset's 3000 take about two minutes on 2 cores).
    pub steps: usize,
    /// Sequences per micro-batch; tokens per optimizer step = `grad_accum * batch_size *
    /// context`.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (nanoGPT's `gradient_accumulation_steps`): each
    /// micro-batch's loss is scaled by `1/grad_accum` and the gradients summed, so that a step
    /// equals one of `grad_accum * batch_size` sequences, in the memory of one micro-batch.
    pub grad_accum: usize,
    /// Peak learning rate, reached after the warmup.
    pub lr: f64,
    /// The cosine decay ends here, at the last step.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup: usize,
    /// AdamW decoupled weight decay, on matrices only (Linear weights, embeddings).
    pub weight_decay: f64,
    /// AdamW first-moment decay (PyTorch's and nanoGPT's value, not Burn's default).
    pub beta1: f64,
    /// AdamW second-moment decay.
    pub beta2: f64,
    /// AdamW denominator epsilon.
    pub eps: f64,
    /// Clip the global gradient norm (all parameters together) to this; 0 disables.
    pub grad_clip: f64,
    /// Estimate train and val loss every N steps (and at the end); 0 = only at the end.
    pub eval_every: usize,
    /// Batches per split in each estimate; 0 disables evaluation.
    pub eval_iters: usize,
    /// Print a text sample every N steps; 0 = only at the end.
    pub sample_every: usize,
    /// Length of each sample, in tokens (characters).
    pub sample_tokens: usize,
    /// Save a checkpoint every N steps (and always at the end and on Ctrl-C); 0 = only then.
    pub checkpoint_every: usize,
    /// Checkpoints kept; older ones are deleted.
    pub keep_last: usize,
    /// A metrics line every N steps (metrics.jsonl and the log).
    pub log_every: usize,
    /// Seeds the initial weights, the batch stream and sampling.
    pub seed: u64,
}

impl TrainSection {
    /// Sequences per optimizer step: `grad_accum` micro-batches of `batch_size`.
    pub fn sequences_per_step(&self) -> usize {
        self.grad_accum * self.batch_size
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 32,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 250,
            eval_iters: 20,
            sample_every: 0,
            sample_tokens: 200,
            checkpoint_every: 500,
            keep_last: 3,
            log_every: 50,
            seed: 1337,
        }
    }
}

/// What the model is trained on, and how text becomes tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// A UTF-8 text file, or a folder of token files (`ember prepare`'s, nanoGPT's
    /// `train.bin`/`val.bin`, llm.c's `*_train_*.bin` shards); empty means Tiny Shakespeare,
    /// built into the binary.
    pub path: String,
    /// `char`, `gpt2` or `bpe`: how a text becomes tokens. Unset: `char` for a text, and for a
    /// token folder the tokenizer it was made with (which a setting must not contradict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerKind>,
    /// The size of the BPE vocabulary learnt from a text with `tokenizer = "bpe"`.
    pub vocab_size: usize,
    /// The model's vocabulary is made this large when the tokenizer's is smaller (nanoGPT pads
    /// GPT-2's 50,257 to 50,304, a multiple of 64); the rows added are never sampled. 0: no
    /// padding.
    pub pad_vocab_to: usize,
    /// The last fraction of a text (by characters) is the validation split; a token folder has
    /// its own.
    pub val_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            tokenizer: None,
            vocab_size: 4096,
            pad_vocab_to: 0,
            val_fraction: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Folder name under `out`; empty means `<preset>-<UTC date-time>`.
    pub name: String,
    /// The folder that holds the run folders.
    pub out: PathBuf,
    /// `auto`, `ndarray`, `flex`, `wgpu`, `cuda` or `cuda:N` (the backends compiled in).
    pub device: String,
    /// Worker threads for the CPU backends and BLAS; 0 means one per core.
    pub threads: usize,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            out: "runs".into(),
            device: "auto".into(),
            threads: 0,
        }
    }
}

/// The per-step memory accounting of the `ember` binaries (see `ember::memory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Return freed memory to the OS (malloc_trim, the GPU pool's cleanup) every N steps, on
    /// the CPU when more is free than a step takes again; 0 = never.
    pub trim_every: usize,
    /// Steps that may keep memory (optimizer state appears at step 1, caches fill) before the
    /// leak check starts.
    pub warmup_steps: usize,
    /// Bytes a step may keep after the warm-up before it counts as a leak.
    pub tolerance_bytes: u64,
    /// What a leaking step does: `warn` (log it) or `fail` (stop the run with a report).
    pub leak_policy: LeakPolicy,
}

impl Default for MemorySection {
    fn default() -> Self {
        Self {
            trim_every: 10,
            warmup_steps: 10,
            tolerance_bytes: 64 * 1024,
            leak_policy: LeakPolicy::Warn,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakPolicy {
    Warn,
    Fail,
}

impl RunConfig {
    /// The resolved configuration as TOML, as saved with each run.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serializes")
    }

    /// The model's vocabulary for `tokenizer`: the tokenizer's, padded to `data.pad_vocab_to`.
    pub fn model_vocab(&self, tokenizer: &Tokenizer) -> Result<usize, TrainError> {
        let (have, pad) = (tokenizer.vocab_size(), self.data.pad_vocab_to);
        if pad != 0 && pad < have {
            return Err(TrainError::Config {
                origin: "config".into(),
                key: Some("data.pad_vocab_to".into()),
                message: format!(
                    "{pad} is smaller than the {} tokenizer's vocabulary ({have}); set it to 0 or at least {have}",
                    tokenizer.kind()
                ),
            });
        }
        Ok(have.max(pad))
    }
}
