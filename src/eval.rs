//! `ember eval`: the loss of a checkpoint on a whole text file, in bits per byte of text too (and
//! bits per character for a character-level model): every token after the first is predicted
//! once, from the tokens before it in its window (non-overlapping windows of the model's context,
//! batched), as papers report it.

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use ember_kernels::fused::with_workers_polling_on;
use ember_train::TrainError;
use ember_train::tokenizer::TokenizerKind;
use ember_train::trainer::bits_per_byte;

use crate::backend;
use crate::error::{Error, Result, io};
use crate::saved::SavedModel;

#[derive(Debug, Clone, clap::Args)]
pub struct EvalSpec {
    /// A run folder (its latest checkpoint) or a checkpoint folder.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The UTF-8 text to score (all of it).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value = "auto", help = crate::backend::DEVICE_HELP)]
    pub device: String,
    #[arg(long, default_value_t = 0, help = crate::backend::THREADS_HELP)]
    pub threads: usize,
}

/// What an evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    pub tokens: usize,
    /// Tokens predicted (all but the first).
    pub predictions: usize,
    /// UTF-8 bytes of text those tokens stand for.
    pub predicted_bytes: usize,
    pub step: usize,
    /// Mean negative log-likelihood per token, in nats.
    pub loss: f64,
    /// The model is character-level (a token is a character).
    pub characters: bool,
}

impl EvalReport {
    /// Bits per token: per character for a character-level model.
    pub fn bits_per_token(&self) -> f64 {
        self.loss / std::f64::consts::LN_2
    }

    /// Bits per byte of text, comparable across tokenizers.
    pub fn bits_per_byte(&self) -> f64 {
        bits_per_byte(
            self.loss,
            self.predicted_bytes as f64 / self.predictions as f64,
        )
    }

    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

pub fn run(spec: &EvalSpec) -> Result<EvalReport> {
    if spec.batch_size == 0 {
        return Err(Error::Usage(
            "--batch-size 0: expected a positive number of windows".into(),
        ));
    }
    let selected = backend::select(&spec.device, spec.threads)?;
    let saved = SavedModel::load(&spec.run, &selected.device)?;
    let path = spec.data.display();
    let text =
        std::fs::read_to_string(&spec.data).map_err(io(&spec.data, "cannot read as UTF-8 text"))?;
    let tokens = saved.tokenizer.encode(&text).map_err(|e| match e {
        TrainError::UnknownChar { ch, index } => {
            let (line, column) = line_column(&text, index);
            Error::Data(format!(
                "{path}:{line}:{column}: character {ch:?} (U+{:04X}) is not in the vocabulary of {} ({} characters); \
                 evaluate on text made of the characters the model was trained on",
                ch as u32,
                saved.checkpoint.display(),
                saved.tokenizer.vocab_size()
            ))
        }
        other => other.into(),
    })?;
    if tokens.len() < 2 {
        return Err(Error::Data(format!(
            "{path}: needs at least two tokens (one to predict from, one to predict)"
        )));
    }
    let first_bytes = saved.tokenizer.decode_bytes(&tokens[..1]).len();
    let (context, device) = (saved.model.context(), selected.device.clone());
    let loss = selected.run(|| {
        with_workers_polling_on(&device, || {
            // Window k predicts tokens kT+1 ..= kT+T from tokens kT .. kT+T-1.
            let windows: Vec<Window> = (0..tokens.len() - 1)
                .step_by(context)
                .map(|start| (start, context.min(tokens.len() - 1 - start)))
                .collect();
            let mut total = 0.0;
            // Full windows in batches; the shorter last one alone.
            let (full, last): (Vec<Window>, Vec<Window>) =
                windows.iter().partition(|(_, len)| *len == context);
            for group in full.chunks(spec.batch_size).chain(last.chunks(1)) {
                let len = group[0].1;
                let ids = |offset: usize| -> Tensor<2, Int> {
                    let values: Vec<i64> = group
                        .iter()
                        .flat_map(|&(start, _)| &tokens[start + offset..start + offset + len])
                        .map(|&t| i64::from(t))
                        .collect();
                    Tensor::from_data(TensorData::new(values, [group.len(), len]), &device)
                };
                let mean = saved.model.loss(ids(0), ids(1));
                total += f64::from(mean.into_scalar::<f32>()) * (group.len() * len) as f64;
            }
            total / (tokens.len() - 1) as f64
        })
    });
    Ok(EvalReport {
        tokens: tokens.len(),
        predictions: tokens.len() - 1,
        predicted_bytes: text.len() - first_bytes,
        step: saved.state.step,
        loss,
        characters: saved.tokenizer.kind() == TokenizerKind::Char,
    })
}

/// A window of the text: its first position and how many positions it predicts.
type Window = (usize, usize);

/// 1-based line and column of the character at `index`.
fn line_column(text: &str, index: usize) -> (usize, usize) {
    let before: Vec<char> = text.chars().take(index).collect();
    let line = 1 + before.iter().filter(|&&c| c == '\n').count();
    let column = 1 + before.iter().rev().take_while(|&&c| c != '\n').count();
    (line, column)
}
