//! `ember import`: a safetensors file with nanoGPT's tensor names (a nanoGPT `GPT` state dict, or
//! an Ember export) becomes a run folder that `generate` samples from and `train --resume`
//! fine-tunes: the weights as a step-0 checkpoint with a fresh AdamW state.

use std::path::{Path, PathBuf};

use ember_model::from_safetensors;
use ember_train::RunConfig;
use ember_train::checkpoint::{CheckpointFiles, Checkpoints};
use ember_train::corpus::TINY_SHAKESPEARE;
use ember_train::lock::RunLock;
use ember_train::optim::adamw;
use ember_train::run_dir::{atomic_write, create_run_dir};
use ember_train::tokenizer::{CharTokenizer, Tokenizer};

use crate::error::{Error, Result, io};

/// What to import, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportSpec {
    /// The safetensors file (nanoGPT names: transformer.wte.weight, transformer.h.0..., lm_head).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The run folder to create (it must not exist).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The vocabulary: an Ember vocab.json, or a text file whose characters are the vocabulary
    /// (what nanoGPT's character-level prepare.py computes). Default: the file's `vocab`
    /// metadata, else the characters of the training text (--data).
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// The training text for fine-tuning (data.path) [default: Tiny Shakespeare, built in].
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Attention heads, when the file does not say (no tensor's shape shows it).
    #[arg(long)]
    pub n_head: Option<usize>,
}

/// Writes the run folder; returns its step-0 checkpoint.
pub fn run(spec: &ImportSpec) -> Result<PathBuf> {
    let bytes = std::fs::read(&spec.from).map_err(io(&spec.from, "cannot read"))?;
    let device = crate::backend::select("auto", 0)?.device;
    let (model, gpt, metadata) =
        from_safetensors(&bytes, &device, spec.n_head).map_err(|error| Error::Model {
            path: spec.from.clone(),
            error,
        })?;
    let tokenizer = Tokenizer::Char(vocabulary(spec, metadata.get("vocab"))?);
    if tokenizer.vocab_size() != gpt.vocab_size {
        return Err(Error::Data(format!(
            "the vocabulary has {} characters but the model's embedding has {} rows; give the \
             vocabulary the model was trained with (--vocab FILE)",
            tokenizer.vocab_size(),
            gpt.vocab_size
        )));
    }

    let mut config = RunConfig::default();
    let m = &mut config.model;
    (m.d_model, m.n_layer, m.n_head, m.context) =
        (gpt.d_model, gpt.n_layer, gpt.n_head, gpt.context);
    (m.bias, m.tie_embeddings, m.head_bias) = (gpt.bias, gpt.tie_embeddings, gpt.head_bias);
    if let Some(data) = &spec.data {
        config.data.path = data.to_string_lossy().into_owned();
    }
    let (parent, name) = split_run_path(&spec.run)?;
    config.run.out = parent.to_path_buf();
    config.run.name = name.clone();
    let run_dir = create_run_dir(parent, &name, "import")?;
    let _lock = RunLock::acquire(&run_dir)?;
    let write = |file: &str, text: &str| {
        let path = run_dir.join(file);
        atomic_write(&path, text.as_bytes()).map_err(io(&path, "cannot write"))
    };
    config.data.tokenizer = Some(tokenizer.kind());
    write("config.toml", &config.to_toml())?;
    if let Some((name, text)) = tokenizer.file() {
        write(name, &text)?;
    }

    let optimizer = adamw(&config.train);
    let files =
        CheckpointFiles::encode(&model, &optimizer, 0, 0.0, Vec::new(), &config, &tokenizer)?;
    Ok(Checkpoints::new(&run_dir, config.train.keep_last).save(&files)?)
}

/// The tokenizer `spec` asks for (see [`ImportSpec::vocab`]).
fn vocabulary(spec: &ImportSpec, metadata_vocab: Option<&String>) -> Result<CharTokenizer> {
    let read = |path: &Path| std::fs::read_to_string(path).map_err(io(path, "cannot read"));
    match (&spec.vocab, metadata_vocab, &spec.data) {
        (Some(path), _, _) if path.extension().is_some_and(|e| e == "json") => Ok(
            CharTokenizer::from_json(&read(path)?, &path.to_string_lossy())?,
        ),
        (Some(path), _, _) => Ok(CharTokenizer::from_text(&read(path)?)),
        (None, Some(json), _) => Ok(CharTokenizer::from_json(json, "the file's vocab metadata")?),
        (None, None, Some(data)) => Ok(CharTokenizer::from_text(&read(data)?)),
        (None, None, None) => Ok(CharTokenizer::from_text(TINY_SHAKESPEARE)),
    }
}

/// `runs/name` → (`runs`, `name`).
fn split_run_path(run: &Path) -> Result<(&Path, String)> {
    let name = run.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::Usage(format!(
            "--run {}: expected a folder path such as runs/imported",
            run.display()
        ))
    })?;
    let parent = run
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name.to_string()))
}
