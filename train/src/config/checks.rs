//! The rules a config must follow: values that can work ([`RunConfig::invalid`]), and what a
//! resumed run may change ([`RESUMABLE_KEYS`], [`OPTIMIZER_KEYS`]).

use super::RunConfig;

/// Keys a resumed run may change. Everything else (the model, the data, the optimizer, the
/// schedule's shape, the seed) must match the checkpoint. Changing `train.steps` moves the end
/// of the cosine decay, so the learning rate of the remaining steps follows the new length.
pub const RESUMABLE_KEYS: [&str; 16] = [
    "train.steps",
    "train.eval_every",
    "train.eval_iters",
    "train.sample_every",
    "train.sample_tokens",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
    "run.name",
    "run.out",
    "run.device",
    "run.threads",
    "memory.trim_every",
    "memory.warmup_steps",
    "memory.tolerance_bytes",
    "memory.leak_policy",
];

/// The optimizer's settings, which a resumed run may change only when asked to explicitly
/// (`train --resume RUN --change-optimizer`), to recover from a divergence: the run then differs
/// from an uninterrupted one, and says so.
pub const OPTIMIZER_KEYS: [&str; 8] = [
    "train.lr",
    "train.min_lr",
    "train.warmup",
    "train.weight_decay",
    "train.beta1",
    "train.beta2",
    "train.eps",
    "train.grad_clip",
];

impl RunConfig {
    /// The first value that cannot work, as (`section.key`, why).
    pub fn invalid(&self) -> Option<(String, String)> {
        let (t, d) = (&self.train, &self.data);
        if let Some((field, why)) = self.model.gpt(1).invalid() {
            return Some((format!("model.{field}"), why));
        }
        let checks: [(&'static str, bool, String); 11] = [
            (
                "train.batch_size",
                t.batch_size > 0,
                "expected a positive integer, got 0".into(),
            ),
            (
                "train.grad_accum",
                t.grad_accum > 0,
                "expected a positive integer (micro-batches per step; 1: no accumulation), got 0"
                    .into(),
            ),
            (
                "train.keep_last",
                t.keep_last > 0,
                "expected a positive integer, got 0".into(),
            ),
            (
                "train.lr",
                t.lr.is_finite() && t.lr > 0.0,
                format!("expected a positive number, got {}", t.lr),
            ),
            (
                "train.min_lr",
                t.min_lr.is_finite() && (0.0..=t.lr).contains(&t.min_lr),
                format!(
                    "expected a number between 0 and lr ({}), got {}",
                    t.lr, t.min_lr
                ),
            ),
            (
                "train.weight_decay",
                t.weight_decay.is_finite() && t.weight_decay >= 0.0,
                format!("expected a number >= 0, got {}", t.weight_decay),
            ),
            (
                "train.beta1",
                (0.0..1.0).contains(&t.beta1),
                format!("expected 0 <= beta1 < 1, got {}", t.beta1),
            ),
            (
                "train.beta2",
                (0.0..1.0).contains(&t.beta2),
                format!("expected 0 <= beta2 < 1, got {}", t.beta2),
            ),
            (
                "train.eps",
                t.eps.is_finite() && t.eps > 0.0,
                format!("expected a positive number, got {}", t.eps),
            ),
            (
                "train.grad_clip",
                t.grad_clip.is_finite() && t.grad_clip >= 0.0,
                format!(
                    "expected a number >= 0 (0 disables clipping), got {}",
                    t.grad_clip
                ),
            ),
            (
                "data.val_fraction",
                d.val_fraction > 0.0 && d.val_fraction < 1.0,
                format!(
                    "expected a fraction strictly between 0 and 1, got {}",
                    d.val_fraction
                ),
            ),
        ];
        let data_checks: [(&'static str, bool, String); 1] = [(
            "data.vocab_size",
            d.tokenizer != Some(crate::tokenizer::TokenizerKind::Bpe) || d.vocab_size > 256,
            format!(
                "a byte-level BPE needs more than its 256 bytes, got {}",
                d.vocab_size
            ),
        )];
        checks
            .into_iter()
            .chain(data_checks)
            .find(|(_, ok, _)| !ok)
            .map(|(key, _, why)| (key.to_string(), why))
    }

    /// Why this config cannot continue a run saved with `saved`: the first key outside
    /// [`RESUMABLE_KEYS`] (and [`OPTIMIZER_KEYS`] when `change_optimizer`) whose value differs.
    pub fn resume_conflict(&self, saved: &RunConfig, change_optimizer: bool) -> Option<String> {
        let allowed = |key: &str| {
            RESUMABLE_KEYS.contains(&key) || change_optimizer && OPTIMIZER_KEYS.contains(&key)
        };
        let (name, was, now) = self
            .differences(saved)
            .into_iter()
            .find(|(key, _, _)| !allowed(key))?;
        let advice = if OPTIMIZER_KEYS.contains(&name.as_str()) {
            "; to change the optimizer's settings (after a divergence, say), add --change-optimizer"
        } else {
            ""
        };
        Some(format!(
            "{name} is {was} in the checkpoint but {now} now; a resumed run may change only {}{advice}",
            RESUMABLE_KEYS.join(", ")
        ))
    }

    /// The optimizer settings ([`OPTIMIZER_KEYS`]) in which this config differs from `saved`,
    /// as `(key, saved value, value now)`.
    pub fn optimizer_changes(&self, saved: &RunConfig) -> Vec<(String, String, String)> {
        self.differences(saved)
            .into_iter()
            .filter(|(key, _, _)| OPTIMIZER_KEYS.contains(&key.as_str()))
            .collect()
    }

    /// Every `section.key` whose value differs from `saved`'s, as `(key, saved, now)`.
    fn differences(&self, saved: &RunConfig) -> Vec<(String, String, String)> {
        let table = |c: &RunConfig| toml::Table::try_from(c).expect("a RunConfig is a table");
        let (old, new) = (table(saved), table(self));
        let mut out = Vec::new();
        for (section, fields) in &old {
            let Some(fields) = fields.as_table() else {
                continue;
            };
            for (key, was) in fields {
                let now = new.get(section).and_then(|s| s.get(key));
                if now != Some(was) {
                    let now = now.map_or_else(|| "unset".to_string(), |v| v.to_string());
                    out.push((format!("{section}.{key}"), was.to_string(), now));
                }
            }
        }
        out
    }
}
