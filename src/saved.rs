//! A trained model read back from a checkpoint, for generation and export.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ember_model::{Gpt, GptConfig};
use ember_train::checkpoint::{self, CheckpointState};
use ember_train::tokenizer::CharTokenizer;
use ember_train::{RunConfig, TrainError};

use crate::Result;

pub struct SavedModel {
    pub model: Gpt,
    pub gpt: GptConfig,
    pub config: RunConfig,
    pub tokenizer: CharTokenizer,
    pub state: CheckpointState,
    /// The checkpoint folder it came from.
    pub checkpoint: PathBuf,
}

impl SavedModel {
    /// Loads the checkpoint `path` names (a run folder's latest, or a `step-N` folder), verified
    /// against its manifest, onto `device` without autodiff. Given a run folder whose latest
    /// checkpoint is damaged, it warns and loads the newest one that verifies.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let opened = checkpoint::open(path)?;
        if let Some(note) = opened.fallback_note() {
            eprintln!("warning: {note}");
        }
        let checkpoint::Opened { dir, files, .. } = opened;
        let config: RunConfig = toml::from_str(&files.config_toml)
            .map_err(|e| TrainError::Checkpoint(format!("{}: config.toml: {e}", dir.display())))?;
        let vocab = dir.join("vocab.json");
        let tokenizer = CharTokenizer::from_json(&files.vocab_json, &vocab.to_string_lossy())?;
        let gpt = config.model.gpt(tokenizer.vocab_size());
        let model = checkpoint::decode_model(&gpt, files.model, device, &dir)?;
        Ok(Self {
            model,
            gpt,
            config,
            tokenizer,
            state: files.state,
            checkpoint: dir,
        })
    }
}
