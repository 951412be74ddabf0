//! `ember import`: weights from elsewhere become a run folder that `generate` samples from and
//! `train --resume` fine-tunes: the weights as a step-0 checkpoint with a fresh AdamW state.
//! Two sources: a safetensors file with nanoGPT's tensor names (a nanoGPT `GPT` state dict, or
//! an Ember export), or a Hugging Face `GPT2LMHeadModel` folder (OpenAI's GPT-2).

use std::path::{Path, PathBuf};

use ember_model::{Gpt, GptConfig, from_hf, from_safetensors};
use ember_train::checkpoint::{CheckpointState, Checkpoints};
use ember_train::config::{ConfigBuilder, DEFAULT_PRESET};
use ember_train::corpus::TINY_SHAKESPEARE;
use ember_train::lock::RunLock;
use ember_train::optim::adamw;
use ember_train::run_dir::{atomic_write, create_run_dir};
use ember_train::tokenizer::{Bpe, CharTokenizer, Tokenizer, TokenizerKind, gpt2};

use crate::error::{Error, Result, io};

/// What to import, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportSpec {
    /// A safetensors file with nanoGPT's names (transformer.wte.weight, transformer.h.0...,
    /// lm_head).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "hf",
        conflicts_with = "hf"
    )]
    pub from: Option<PathBuf>,
    /// A Hugging Face GPT2LMHeadModel folder (config.json, model.safetensors), as
    /// save_pretrained writes it and the Hub serves it; its tokenizer is GPT-2's, the folder's
    /// tokenizer.json (another vocabulary), or --vocab.
    #[arg(long, value_name = "DIR")]
    pub hf: Option<PathBuf>,
    /// The run folder to create (it must not exist).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The vocabulary: an Ember vocab.json, or a text file whose characters are the vocabulary
    /// (what nanoGPT's character-level prepare.py computes). Default: the file's `vocab`
    /// metadata, else the characters of the training text (--data).
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// The training data for fine-tuning (data.path) [default: the config's, else Tiny
    /// Shakespeare, built in].
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Attention heads, when the file does not say (no tensor's shape shows it).
    #[arg(long)]
    pub n_head: Option<usize>,
    /// The fine-tuning recipe (a config file: train, data, run and model.dropout; the model's
    /// shape comes from the weights), e.g. recipes/finetune-shakespeare.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable), as train's --set.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ImportSpec {
    /// The file or folder imported from.
    pub fn source(&self) -> &Path {
        self.from
            .as_deref()
            .or(self.hf.as_deref())
            .expect("clap requires one")
    }
}

/// Writes the run folder; returns its step-0 checkpoint.
pub fn run(spec: &ImportSpec) -> Result<PathBuf> {
    let device = crate::backend::select("auto", 0)?.device;
    let model_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error::Model { path, error }
    };
    let (model, gpt, tokenizer) = match (&spec.from, &spec.hf) {
        (Some(file), _) => {
            let bytes = std::fs::read(file).map_err(io(file, "cannot read"))?;
            let (model, gpt, metadata) =
                from_safetensors(&bytes, &device, spec.n_head).map_err(model_error(file))?;
            let tokenizer = Tokenizer::Char(vocabulary(spec, metadata.get("vocab"))?);
            (model, gpt, tokenizer)
        }
        (None, Some(dir)) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path)
                    .map_err(io(&path, "cannot read (not a Hugging Face model folder?)"))
            };
            let (config_json, weights) = (read("config.json")?, read("model.safetensors")?);
            let config_json = String::from_utf8_lossy(&config_json);
            let (model, gpt) =
                from_hf(&config_json, &weights, &device).map_err(model_error(dir))?;
            let tokenizer = hf_tokenizer(spec, dir, gpt.vocab_size)?;
            (model, gpt, tokenizer)
        }
        (None, None) => unreachable!("clap requires --from or --hf"),
    };
    let mut config = recipe(spec, &gpt)?;
    if tokenizer.vocab_size() > gpt.vocab_size
        || tokenizer.vocab_size() < gpt.vocab_size && tokenizer.kind() != TokenizerKind::Gpt2
    {
        let unit = match tokenizer.kind() {
            TokenizerKind::Char => "characters",
            _ => "tokens",
        };
        return Err(Error::Data(format!(
            "the vocabulary has {} {unit} but the model's embedding has {} rows; give the \
             vocabulary the model was trained with (--vocab FILE)",
            tokenizer.vocab_size(),
            gpt.vocab_size
        )));
    }
    // GPT-2 models padded beyond the tokenizer (nanoGPT's 50304) keep their padding.
    if tokenizer.vocab_size() < gpt.vocab_size {
        config.data.pad_vocab_to = gpt.vocab_size;
    }
    config.data.tokenizer = Some(tokenizer.kind());
    write_run(spec, config, &model, &tokenizer)
}

/// The run's config: the recipe (`--config`, `--set`) over the defaults, with the model's shape
/// from the weights.
fn recipe(spec: &ImportSpec, gpt: &GptConfig) -> Result<ember_train::RunConfig> {
    let mut builder = ConfigBuilder::preset(DEFAULT_PRESET)?;
    if let Some(file) = &spec.config {
        builder = builder.file(file)?;
    }
    for assignment in &spec.sets {
        builder = builder.set(assignment, "--set")?;
    }
    let mut config = builder.build()?;
    let m = &mut config.model;
    (m.d_model, m.n_layer, m.n_head, m.context) =
        (gpt.d_model, gpt.n_layer, gpt.n_head, gpt.context);
    (m.bias, m.tie_embeddings, m.head_bias) = (gpt.bias, gpt.tie_embeddings, gpt.head_bias);
    m.activation = gpt.activation;
    if let Some(data) = &spec.data {
        config.data.path = data.to_string_lossy().into_owned();
    }
    Ok(config)
}

/// The tokenizer of a Hugging Face GPT-2 of `vocab` tokens: `--vocab` when given; GPT-2's for
/// GPT-2's vocabulary (padded or not); else the folder's `tokenizer.json`.
fn hf_tokenizer(spec: &ImportSpec, dir: &Path, vocab: usize) -> Result<Tokenizer> {
    if spec.vocab.is_some() {
        return Ok(Tokenizer::Char(vocabulary(spec, None)?));
    }
    if vocab >= gpt2::VOCAB_SIZE {
        return Ok(Tokenizer::Gpt2);
    }
    let path = dir.join("tokenizer.json");
    match std::fs::read_to_string(&path) {
        Ok(json) => Ok(Tokenizer::Bpe(Box::new(Bpe::from_json(
            &json,
            &path.to_string_lossy(),
        )?))),
        Err(_) => Err(Error::Data(format!(
            "{}: the model's {vocab} tokens are not GPT-2's {} and the folder has no \
             tokenizer.json; give the vocabulary (--vocab FILE)",
            dir.display(),
            gpt2::VOCAB_SIZE
        ))),
    }
}

/// Creates the run folder of `config` with `model` as its step-0 checkpoint.
fn write_run(
    spec: &ImportSpec,
    mut config: ember_train::RunConfig,
    model: &Gpt,
    tokenizer: &Tokenizer,
) -> Result<PathBuf> {
    let (parent, name) = split_run_path(&spec.run)?;
    config.run.out = parent.to_path_buf();
    config.run.name = name.clone();
    let run_dir = create_run_dir(parent, &name, "import")?;
    let _lock = RunLock::acquire(&run_dir)?;
    let write = |file: &str, text: &str| {
        let path = run_dir.join(file);
        atomic_write(&path, text.as_bytes()).map_err(io(&path, "cannot write"))
    };
    write("config.toml", &config.to_toml())?;
    if let Some((name, text)) = tokenizer.file() {
        write(name, &text)?;
    }

    let optimizer = adamw(&config.train);
    let state = CheckpointState::new(0, 0.0, Vec::new());
    let checkpoints = Checkpoints::new(&run_dir, config.train.keep_last);
    Ok(checkpoints.save(model, &optimizer, &state, &config, tokenizer)?)
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
