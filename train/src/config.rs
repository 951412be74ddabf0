//! The run configuration: TOML sections `[model] [train] [data] [run]`, layered from a preset, a
//! config file, command-line flags and `--set section.key=value` overrides.
//!
//! Every layer is checked on its own before it is merged, so an unknown key or a bad value is
//! reported against the file (with line and column) or the flag it came from, not against the
//! merged result the user never wrote.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ember_model::GptConfig;
use serde::{Deserialize, Serialize};

/// The shipped presets, embedded so that the binary works from any folder.
pub const PRESETS: [(&str, &str); 4] = [
    ("tiny", include_str!("../../configs/tiny.toml")),
    ("small", include_str!("../../configs/small.toml")),
    ("medium", include_str!("../../configs/medium.toml")),
    ("large", include_str!("../../configs/large.toml")),
];

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

/// The preset a run starts from when none is named.
pub const DEFAULT_PRESET: &str = "small";

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
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub context: usize,
    pub bias: bool,
    pub tie_embeddings: bool,
    pub head_bias: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub grad_clip: f64,
    pub eval_every: usize,
    pub eval_iters: usize,
    pub sample_every: usize,
    pub sample_tokens: usize,
    pub checkpoint_every: usize,
    pub keep_last: usize,
    pub log_every: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// A UTF-8 text file; empty means Tiny Shakespeare, built in.
    pub path: String,
    pub val_fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Folder name under `out`; empty means `<preset>-<UTC time>`.
    pub name: String,
    pub out: PathBuf,
    pub device: String,
    /// Worker threads for the CPU backends and BLAS; 0 means one per core.
    pub threads: usize,
}

/// The per-step memory accounting of the `ember` binaries (see `ember::memory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Return freed memory to the OS every N steps; 0 = never.
    pub trim_every: usize,
    /// Steps that may keep memory (optimizer state, caches filling) before the check starts.
    pub warmup_steps: usize,
    /// Bytes a step may keep after the warm-up before it counts as a leak.
    pub tolerance_bytes: u64,
    /// What a leaking step does: `warn` (log it) or `fail` (stop the run with a report).
    pub leak_policy: LeakPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakPolicy {
    Warn,
    Fail,
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
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 32,
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

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            val_fraction: 0.1,
        }
    }
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
    }
}

/// A configuration error: where it came from and what was wrong, on one line.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// `path:line:col`, `--set`, `--steps`...
    pub source: String,
    /// `section.key`, when one key is at fault.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Builds a [`RunConfig`] from layers, remembering which layer set each key.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    table: toml::Table,
    origin: BTreeMap<String, String>,
}

impl ConfigBuilder {
    /// Starts from a shipped preset.
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let text = PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .ok_or_else(|| ConfigError {
                source: "--preset".into(),
                key: None,
                message: format!(
                    "unknown preset `{name}`, expected one of {}",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            })?;
        Self::from_toml(text, &format!("preset {name}"))
    }

    /// Starts from a TOML text (a saved run's `config.toml`); `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, ConfigError> {
        let mut builder = Self {
            table: toml::Table::new(),
            origin: BTreeMap::new(),
        };
        builder.merge_toml(text, source)?;
        Ok(builder)
    }

    /// Layers a TOML file on top.
    pub fn file(mut self, path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: path.display().to_string(),
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        self.merge_toml(&text, &path.display().to_string())?;
        Ok(self)
    }

    /// Layers one `section.key=value` override; `flag` names it in errors (`--set`, `--steps`).
    /// The value is read as TOML (`3e-4`, `true`, `"text"`), or as a bare string when it is not.
    pub fn set(mut self, assignment: &str, flag: &str) -> Result<Self, ConfigError> {
        let err = |key: Option<String>, message: String| ConfigError {
            source: flag.to_string(),
            key,
            message,
        };
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            err(
                None,
                format!("`{assignment}` is not of the form section.key=value"),
            )
        })?;
        let key = key.trim();
        let (section, field) = key
            .split_once('.')
            .ok_or_else(|| err(None, format!("`{key}` is not of the form section.key")))?;
        let raw = raw.trim();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let mut layer = toml::Table::new();
        let mut inner = toml::Table::new();
        inner.insert(field.to_string(), value);
        layer.insert(section.to_string(), toml::Value::Table(inner));
        // Check the layer alone so that the error names this flag and this key.
        RunConfig::deserialize(toml::Value::Table(layer.clone()))
            .map_err(|e| err(Some(key.to_string()), serde_message(&e.to_string())))?;
        self.merge(layer, flag);
        Ok(self)
    }

    /// The merged, validated configuration.
    pub fn build(self) -> Result<RunConfig, ConfigError> {
        let config =
            RunConfig::deserialize(toml::Value::Table(self.table)).map_err(|e| ConfigError {
                source: "config".into(),
                key: None,
                message: e.to_string(),
            })?;
        match config.invalid() {
            Some((key, message)) => Err(ConfigError {
                source: self
                    .origin
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| "defaults".into()),
                key: Some(key),
                message,
            }),
            None => Ok(config),
        }
    }

    fn merge_toml(&mut self, text: &str, source: &str) -> Result<(), ConfigError> {
        // Deserializing from the text (not a Table) keeps spans for line:column.
        let located = |e: toml::de::Error| {
            let (line, col, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (0, 0, None),
            };
            ConfigError {
                source: format!("{source}:{line}:{col}"),
                key,
                message: serde_message(e.message()),
            }
        };
        toml::from_str::<RunConfig>(text).map_err(located)?;
        let layer: toml::Table = toml::from_str(text).map_err(located)?;
        self.merge(layer, source);
        Ok(())
    }

    fn merge(&mut self, layer: toml::Table, source: &str) {
        for (section, value) in layer {
            let toml::Value::Table(fields) = value else {
                continue;
            };
            let target = self
                .table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(target) = target {
                for (field, v) in fields {
                    self.origin
                        .insert(format!("{section}.{field}"), source.to_string());
                    target.insert(field, v);
                }
            }
        }
    }
}

/// 1-based line and column of byte `offset`, and the `section.key` being defined there.
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = offset - line_start + 1;
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')));
    let this_line = text[line_start..].lines().next().unwrap_or("");
    let key = this_line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let key = match (section, key) {
        (Some(s), Some(k)) => Some(format!("{}.{k}", s.trim())),
        (None, Some(k)) => Some(k),
        _ => None,
    };
    (line, col, key)
}

/// serde's messages without the trailing location toml appends to Display.
fn serde_message(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

impl RunConfig {
    /// The first value that cannot work, as (`section.key`, why).
    pub fn invalid(&self) -> Option<(String, String)> {
        let (t, d) = (&self.train, &self.data);
        if let Some((field, why)) = self.model.gpt(1).invalid() {
            return Some((format!("model.{field}"), why));
        }
        let checks: [(&'static str, bool, String); 10] = [
            (
                "train.batch_size",
                t.batch_size > 0,
                "expected a positive integer, got 0".into(),
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
        checks
            .into_iter()
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

    /// The resolved configuration as TOML, as saved with each run.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_preset_is_the_default_config() {
        assert_eq!(
            ConfigBuilder::preset("small").unwrap().build().unwrap(),
            RunConfig::default()
        );
    }

    #[test]
    fn every_preset_parses_and_sets_its_shape() {
        let shapes: Vec<_> = PRESETS
            .iter()
            .map(|(name, _)| {
                let m = ConfigBuilder::preset(name).unwrap().build().unwrap().model;
                (m.d_model, m.n_layer, m.n_head, m.context)
            })
            .collect();
        assert_eq!(
            shapes,
            [
                (64, 1, 4, 64),
                (128, 2, 4, 64),
                (256, 4, 8, 64),
                (512, 6, 8, 64)
            ]
        );
    }

    #[test]
    fn later_layers_win_and_values_parse_as_toml() {
        let c = ConfigBuilder::preset("tiny")
            .unwrap()
            .set("train.lr=3e-4", "--set")
            .unwrap()
            .set("run.name=my run", "--set")
            .unwrap()
            .set("model.bias = false", "--set")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            (
                c.train.lr,
                c.run.name.as_str(),
                c.model.bias,
                c.model.d_model
            ),
            (3e-4, "my run", false, 64)
        );
    }

    #[test]
    fn cross_field_errors_name_the_layer_that_set_the_key() {
        let err = ConfigBuilder::preset("small")
            .unwrap()
            .set("train.min_lr=0.5", "--set")
            .unwrap()
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--set: train.min_lr: expected a number between 0 and lr (0.001), got 0.5"
        );
    }

    #[test]
    fn locate_finds_line_column_and_key() {
        let text = "[model]\nd_model = 1\n\n[train]\nlr = \"x\"\n";
        let offset = text.find("\"x\"").unwrap();
        assert_eq!(locate(text, offset), (5, 6, Some("train.lr".into())));
    }
}
