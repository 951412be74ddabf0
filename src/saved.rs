//! A trained model read back from a checkpoint, for generation and export.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::tensor::Device;
use ember_model::{Gpt, GptConfig};
use ember_train::RunConfig;
use ember_train::checkpoint::{self, CheckpointState};
use ember_train::tokenizer::CharTokenizer;

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
        let opened = checkpoint::open(path).map_err(|e| anyhow!(e))?;
        if let Some(note) = opened.fallback_note() {
            eprintln!("warning: {note}");
        }
        let checkpoint::Opened { dir, files, .. } = opened;
        let config: RunConfig = toml::from_str(&files.config_toml)
            .with_context(|| format!("{}: config.toml", dir.display()))?;
        let tokenizer = CharTokenizer::from_json(&files.vocab_json)
            .map_err(|e| anyhow!("{}: vocab.json: {e}", dir.display()))?;
        let gpt = config.model.gpt(tokenizer.vocab_size());
        let model = checkpoint::decode_model(&gpt, files.model, device)
            .map_err(|e| anyhow!("{}: model.bpk: {e}", dir.display()))?;
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
