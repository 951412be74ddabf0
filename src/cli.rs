//! The `train` command line, and how it layers onto the config.

use std::path::{Path, PathBuf};

use std::process::ExitCode;

use clap::Parser;
use ember_train::TrainError;
use ember_train::config::{ConfigBuilder, DEFAULT_PRESET, RunConfig};

/// The shared start of the binaries: tune the allocator, run, and turn an error into one
/// `error: ...` line on stderr and a failing exit code. `{:#}` prints an `anyhow` error with the
/// context the binary added.
pub fn main_with<E: std::fmt::Display>(run: impl FnOnce() -> Result<(), E>) -> ExitCode {
    crate::memory::tune_allocator();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Train a GPT language model. Every setting lives in a TOML config (a preset from configs/, a
/// file of your own, or both); the flags below override it.
///
/// With no flags: the small preset (d=128, 2 layers, 0.4M parameters) on Tiny Shakespeare,
/// which is built in, for 3000 steps: about two minutes on 2 cores, ending near val loss 1.64
/// with a sample of Shakespeare-like text.
#[derive(Debug, Parser)]
#[command(
    name = "train",
    version,
    args_override_self = true,
    after_help = "Output: runs/<preset>-<UTC time>/ holds config.toml, vocab.json, metrics.jsonl \
and checkpoints/.

Next:
  generate --run runs/NAME --prompt \"ROMEO:\"      sample text from the trained model
  train --resume runs/NAME --steps 6000            continue a run (Ctrl-C saves and stops)
  train --preset medium                            a bigger model (about 11 minutes)
  train --data my.txt                              your own text (any UTF-8 file)
  train --config recipes/nanogpt-cpu.toml          nanoGPT's CPU recipe (val 1.88, as in nanoGPT)"
)]
pub struct TrainArgs {
    /// Start from this preset: tiny, small, medium or large [default: small].
    #[arg(long, conflicts_with = "resume")]
    pub preset: Option<String>,
    /// Continue a run from its latest checkpoint (a run folder) or from a checkpoint folder.
    /// Flags and --set may change only the settings listed in the README.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// A TOML config file, layered on top of the preset.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Train on this UTF-8 text file, or on a folder of tokens (`ember prepare`'s, nanoGPT's
    /// train.bin/val.bin or llm.c's shards), instead of the built-in Tiny Shakespeare (data.path).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Number of optimizer steps (train.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Folder that holds the run folders (run.out) [default: runs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Backend: auto, ndarray, flex, wgpu, cuda or cuda:N (run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Seed for the weights, batches and samples (train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU worker threads, 0 = one per core (run.threads).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override any config value: --set section.key=value (repeatable), e.g. --set train.lr=3e-4.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// With --resume: let --set change the optimizer's settings (train.lr, min_lr, warmup,
    /// weight_decay, beta1, beta2, eps, grad_clip), to continue after a divergence with a lower
    /// learning rate. The run is then no longer identical to an uninterrupted one; the change is
    /// recorded in metrics.jsonl and in every later checkpoint.
    #[arg(long, requires = "resume")]
    pub change_optimizer: bool,
    /// Start even if the memory estimate exceeds the memory available.
    #[arg(long)]
    pub skip_memory_check: bool,
    /// Print the resolved config (every key, the defaults included) as TOML and exit without
    /// training. The output is a valid --config file.
    #[arg(long)]
    pub print_config: bool,
    /// Log each phase of the first steps (as RUST_LOG=debug).
    #[arg(long)]
    pub debug: bool,
}

impl TrainArgs {
    /// The resolved config and the stem run folders are named after (preset or config file).
    pub fn resolve(&self) -> Result<(RunConfig, String), TrainError> {
        let preset = self.preset.as_deref().unwrap_or(DEFAULT_PRESET);
        let stem = match &self.config {
            Some(path) => path
                .file_stem()
                .map_or(preset.to_string(), |s| s.to_string_lossy().into_owned()),
            None => preset.to_string(),
        };
        Ok((self.layer(ConfigBuilder::preset(preset)?)?.build()?, stem))
    }

    /// The config of a resumed run: the `config.toml` of the checkpoint folder `checkpoint`
    /// (its text `saved`) with this command line's layers on top, refused when it changes a
    /// setting a resumed run must keep (see [`RunConfig::resume_conflict`]).
    pub fn resolve_resume(&self, checkpoint: &Path, saved: &str) -> Result<RunConfig, TrainError> {
        let source = checkpoint.join("config.toml").display().to_string();
        let was: RunConfig =
            toml::from_str(saved).map_err(|e| TrainError::Checkpoint(format!("{source}: {e}")))?;
        let config = self
            .layer(ConfigBuilder::from_toml(saved, &source)?)?
            .build()?;
        match config.resume_conflict(&was, self.change_optimizer) {
            Some(conflict) => Err(TrainError::Config {
                origin: "--resume".into(),
                key: None,
                message: conflict,
            }),
            None => Ok(config),
        }
    }

    /// The config file, the flags and the --set overrides, in that order, over `builder`.
    fn layer(&self, mut builder: ConfigBuilder) -> Result<ConfigBuilder, TrainError> {
        if let Some(path) = &self.config {
            builder = builder.file(path)?;
        }
        let toml_string = |s: &str| toml::Value::String(s.to_string()).to_string();
        let flags = [
            (
                "--data",
                self.data
                    .as_ref()
                    .map(|p| format!("data.path={}", toml_string(&p.to_string_lossy()))),
            ),
            ("--steps", self.steps.map(|n| format!("train.steps={n}"))),
            (
                "--out",
                self.out
                    .as_ref()
                    .map(|p| format!("run.out={}", toml_string(&p.to_string_lossy()))),
            ),
            (
                "--device",
                self.device
                    .as_ref()
                    .map(|d| format!("run.device={}", toml_string(d))),
            ),
            ("--seed", self.seed.map(|n| format!("train.seed={n}"))),
            (
                "--threads",
                self.threads.map(|n| format!("run.threads={n}")),
            ),
        ];
        for (flag, assignment) in flags {
            if let Some(assignment) = assignment {
                builder = builder.set(&assignment, flag)?;
            }
        }
        for assignment in &self.sets {
            builder = builder.set(assignment, "--set")?;
        }
        Ok(builder)
    }
}
