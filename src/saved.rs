//! A trained model read back from a checkpoint, for generation and export.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ember_model::{Gpt, GptConfig};
use ember_train::RunConfig;
use ember_train::checkpoint::{self, CheckpointState};
use ember_train::tokenizer::Tokenizer;

use crate::Result;
use crate::memory::ReusingAllocator;

pub struct SavedModel {
    pub model: Gpt,
    pub gpt: GptConfig,
    pub config: RunConfig,
    pub tokenizer: Tokenizer,
    pub state: CheckpointState,
    /// The checkpoint folder it came from.
    pub checkpoint: PathBuf,
}

impl SavedModel {
    /// Loads the model of the checkpoint `path` names (a run folder's latest, or a `step-N`
    /// folder), verified against its manifest, onto `device` without autodiff; the optimizer's
    /// state is not read. Given a run folder whose latest
    /// checkpoint is damaged, it warns and loads the newest one that verifies.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let opened = checkpoint::open_parts(path, checkpoint::Parts::Model)?;
        if let Some(note) = opened.fallback_note() {
            eprintln!("warning: {note}");
        }
        let checkpoint::Opened { dir, files, .. } = opened;
        let (config, tokenizer) = files.config_and_tokenizer(&dir)?;
        let gpt = config.model.gpt(config.model_vocab(&tokenizer)?);
        let model = ReusingAllocator::system()
            .while_paused(|| checkpoint::decode_model(&gpt, files.model, device, &dir))?;
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
