//! What a step does besides training when due: nanoGPT's loss estimate on both splits, and a
//! sample of text.

use burn::module::Module;
use ember_kernels::fused::with_workers_polling_on;

use super::Trainer;
use crate::data::Split;
use crate::error::TrainError;
use crate::hooks::StepHooks;
use crate::metrics::EvalRecord;
use crate::rng::{SplitMix64, Stream};
use crate::sample::{SamplingConfig, generate};
use tracing::info;

impl Trainer {
    /// nanoGPT's `estimate_loss`: mean loss over `eval_iters` batches of each split, drawn from
    /// their own stream so that evaluating never shifts the training batches. Ranks training
    /// together share the batches out (every rank draws them all, each evaluates every size-th)
    /// and add up their losses.
    pub(super) fn maybe_eval(
        &mut self,
        step: usize,
        hooks: &mut dyn StepHooks,
    ) -> Result<Option<EvalRecord>, TrainError> {
        let t = &self.config.train;
        if t.eval_iters == 0 {
            return Ok(None);
        }
        let model = self.model().valid();
        let device = self.device.clone().without_autodiff();
        let (ranks, rank) = (self.cluster.size(), self.cluster.rank());
        let total = |split: Split, stream_step: u64| -> Result<f64, TrainError> {
            let mut rng = SplitMix64::keyed(t.seed, Stream::EvalBatches, stream_step);
            let mut total = 0.0;
            for i in 0..t.eval_iters {
                let b = self.data.batch(
                    split,
                    t.batch_size,
                    self.config.model.context,
                    &mut rng,
                    &device,
                )?;
                if i % ranks == rank {
                    total += f64::from(model.loss(b.inputs, b.targets).into_scalar::<f32>());
                }
            }
            Ok(total)
        };
        let mut totals = with_workers_polling_on(&self.device, || -> Result<_, TrainError> {
            Ok([
                total(Split::Train, 2 * step as u64)?,
                total(Split::Val, 2 * step as u64 + 1)?,
            ])
        })?;
        self.cluster.sum_f64(&mut totals);
        let [train_loss, val_loss] = totals.map(|total| total / t.eval_iters as f64);
        let eval = EvalRecord {
            step,
            train_loss,
            val_loss,
            val_bpb: bits_per_byte(val_loss, self.data.val_bytes_per_token()),
        };
        if !eval.val_loss.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "validation loss",
                value: eval.val_loss,
                recovery: String::new(),
            });
        }
        info!(
            step,
            train_loss = eval.train_loss,
            val_loss = eval.val_loss,
            "eval"
        );
        hooks.on_eval(&eval);
        Ok(Some(eval))
    }

    /// `sample_tokens` tokens from the current model, starting from a newline.
    pub(super) fn sample(&mut self, step: usize, hooks: &mut dyn StepHooks) -> String {
        let t = &self.config.train;
        let start = &self.sample_prompt;
        let mut rng = SplitMix64::keyed(t.seed, Stream::Sampling, step as u64);
        let device = self.device.clone().without_autodiff();
        let ids = generate(
            &self.model().valid(),
            start,
            t.sample_tokens,
            SamplingConfig::default(),
            self.tokenizer.vocab_size(),
            &mut rng,
            &device,
            |_| {},
        );
        let text = self.tokenizer.decode(&ids[start.len()..]);
        hooks.on_sample(step, &text);
        text
    }
}

/// A validation loss in nats per token as bits per byte of the text, the figure that compares
/// runs with different tokenizers.
pub fn bits_per_byte(loss: f64, bytes_per_token: f64) -> f64 {
    loss / std::f64::consts::LN_2 / bytes_per_token
}
