//! The layering of a run's config: a preset, then a config file, then the command line's flags
//! and `--set section.key=value` overrides, later layers winning.
//!
//! Every layer is checked on its own before it is merged, so an unknown key or a bad value is
//! reported against the file (with line and column) or the flag it came from, not against the
//! merged result the user never wrote.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::RunConfig;
use crate::TrainError;

/// The shipped presets, embedded so that the binary works from any folder. Each says only how
/// it differs from the defaults (in `schema.rs`); `small` is the defaults.
pub const PRESETS: [(&str, &str); 6] = [
    ("tiny", include_str!("../../../configs/tiny.toml")),
    ("small", include_str!("../../../configs/small.toml")),
    ("medium", include_str!("../../../configs/medium.toml")),
    ("large", include_str!("../../../configs/large.toml")),
    ("gpt2", include_str!("../../../configs/gpt2.toml")),
    (
        "gpt2-medium",
        include_str!("../../../configs/gpt2-medium.toml"),
    ),
];

/// The preset a run starts from when none is named.
pub const DEFAULT_PRESET: &str = "small";

/// Builds a [`RunConfig`] from layers, remembering which layer set each key.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    table: toml::Table,
    origin: BTreeMap<String, String>,
}

impl ConfigBuilder {
    /// Starts from a shipped preset.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        let text = PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .ok_or_else(|| TrainError::Config {
                origin: "--preset".into(),
                key: None,
                message: format!(
                    "unknown preset `{name}`, expected one of {}",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            })?;
        Self::from_toml(text, &format!("preset {name}"))
    }

    /// Starts from a TOML text (a saved run's `config.toml`); `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, TrainError> {
        let mut builder = Self {
            table: toml::Table::new(),
            origin: BTreeMap::new(),
        };
        builder.merge_toml(text, source)?;
        Ok(builder)
    }

    /// Layers a TOML file on top.
    pub fn file(mut self, path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            origin: path.display().to_string(),
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        self.merge_toml(&text, &path.display().to_string())?;
        Ok(self)
    }

    /// Layers one `section.key=value` override; `flag` names it in errors (`--set`, `--steps`).
    /// The value is read as TOML (`3e-4`, `true`, `"text"`), or as a bare string when it is not.
    pub fn set(mut self, assignment: &str, flag: &str) -> Result<Self, TrainError> {
        let err = |key: Option<String>, message: String| TrainError::Config {
            origin: flag.to_string(),
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
    pub fn build(self) -> Result<RunConfig, TrainError> {
        let config = RunConfig::deserialize(toml::Value::Table(self.table)).map_err(|e| {
            TrainError::Config {
                origin: "config".into(),
                key: None,
                message: e.to_string(),
            }
        })?;
        match config.invalid() {
            Some((key, message)) => Err(TrainError::Config {
                origin: self
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

    fn merge_toml(&mut self, text: &str, source: &str) -> Result<(), TrainError> {
        // Deserializing from the text (not a Table) keeps spans for line:column.
        let located = |e: toml::de::Error| {
            let (line, col, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (0, 0, None),
            };
            TrainError::Config {
                origin: format!("{source}:{line}:{col}"),
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
                (512, 6, 8, 64),
                (768, 12, 12, 1024),
                (1024, 24, 16, 1024)
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
