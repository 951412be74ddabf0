//! The training loop, phase by phase as nanoGPT's: evaluate when due, draw a batch, forward,
//! backward, clip the global gradient norm, step AdamW with the scheduled learning rate, log.
//!
//! # The step scope
//! Each step is bracketed by [`StepHooks::begin_step`] and [`StepHooks::end_step`]. Everything a
//! step allocates (forward, backward, update, and, when due, evaluation, sampling and, later,
//! checkpointing) happens between the two, in that order; `end_step` is the last thing a step
//! does, so that a hook that accounts for memory sees every byte the step kept. Nothing of a
//! step may allocate after its `end_step`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use ember_model::Gpt;
use tracing::{debug, info};

use crate::checkpoint::{
    CheckpointFiles, CheckpointState, Checkpoints, FORMAT_VERSION, SaveError, SettingChange,
    decode_model, decode_optimizer, run_dir_of,
};
use crate::config::RunConfig;
use crate::data::{Dataset, Split};
use crate::lock::RunLock;
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::optim::{adamw, clip_global_norm};
use crate::rng::{SplitMix64, Stream};
use crate::run_dir::{atomic_write, create_run_dir};
use crate::sample::{SamplingConfig, generate};
use crate::schedule::LrSchedule;
use crate::sys::{peak_rss_bytes, rss_bytes};
use crate::tokenizer::CharTokenizer;

/// Steps whose phases are logged at debug level (all steps at trace level).
const DEBUG_STEPS: usize = 5;

/// Observers of the loop: progress display, memory accounting. Every method has a no-op default.
pub trait StepHooks {
    /// First thing in step `step` (1-based).
    fn begin_step(&mut self, _step: usize) {}
    /// Last thing in a step; may add fields to the record before it is logged. An error stops
    /// the run (a memory scope in `fail` mode reports its leaking step this way).
    fn end_step(&mut self, _record: &mut StepRecord) -> Result<(), String> {
        Ok(())
    }
    fn on_eval(&mut self, _eval: &EvalRecord) {}
    fn on_sample(&mut self, _step: usize, _text: &str) {}
    fn on_checkpoint(&mut self, _step: usize, _path: &Path) {}
}

/// Hooks that observe nothing.
pub struct NoHooks;
impl StepHooks for NoHooks {}

/// Two hooks in order: `.0` opens a step first and closes it first (put a memory scope there,
/// so that it accounts before a display reads the record), then `.1`.
impl<A: StepHooks, B: StepHooks> StepHooks for (A, B) {
    fn begin_step(&mut self, step: usize) {
        self.0.begin_step(step);
        self.1.begin_step(step);
    }
    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), String> {
        self.0.end_step(record)?;
        self.1.end_step(record)
    }
    fn on_eval(&mut self, eval: &EvalRecord) {
        self.0.on_eval(eval);
        self.1.on_eval(eval);
    }
    fn on_sample(&mut self, step: usize, text: &str) {
        self.0.on_sample(step, text);
        self.1.on_sample(step, text);
    }
    fn on_checkpoint(&mut self, step: usize, path: &Path) {
        self.0.on_checkpoint(step, path);
        self.1.on_checkpoint(step, path);
    }
}

impl<H: StepHooks + ?Sized> StepHooks for &mut H {
    fn begin_step(&mut self, step: usize) {
        (**self).begin_step(step);
    }
    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), String> {
        (**self).end_step(record)
    }
    fn on_eval(&mut self, eval: &EvalRecord) {
        (**self).on_eval(eval);
    }
    fn on_sample(&mut self, step: usize, text: &str) {
        (**self).on_sample(step, text);
    }
    fn on_checkpoint(&mut self, step: usize, path: &Path) {
        (**self).on_checkpoint(step, path);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Data(String),
    /// Another process is training in the run folder.
    #[error("{0}")]
    RunInUse(String),
    /// A step hook stopped the run (a memory scope in `fail` mode, for one).
    #[error("{0}")]
    Hook(String),
    // The io::Error is part of the message, not a `source`: an error chain printed with `{:#}`
    // would say it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("step {step}: {error}; free some space, then continue with: train --resume {}", run.display())]
    CheckpointWrite {
        step: usize,
        run: PathBuf,
        error: SaveError,
    },
    #[error("step {step}: the {what} is {value}; training stopped before the update. {recovery}")]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
        /// What to do next: the last good checkpoint and the command to continue from it.
        recovery: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The last step done (less than the configured steps when stopped by a signal).
    pub steps: usize,
    /// Stopped by [`Trainer::stop_flag`] before the configured last step.
    pub stopped: bool,
    pub last_checkpoint: Option<PathBuf>,
    pub last_loss: f64,
    pub last_eval: Option<EvalRecord>,
    pub train_time_s: f64,
    pub tokens_per_sec: f64,
    pub peak_rss_bytes: u64,
    pub sample: String,
}

pub struct Trainer {
    config: RunConfig,
    device: Device,
    tokenizer: CharTokenizer,
    data: Dataset,
    model: Gpt,
    optim: ModuleOptimizer,
    schedule: LrSchedule,
    run_dir: PathBuf,
    metrics: MetricsWriter,
    checkpoints: Checkpoints,
    /// Updates already done (0 for a new run, the checkpoint's step for a resumed one).
    start_step: usize,
    /// Training time of the steps before `start_step`.
    earlier_train_time: f64,
    stop: Arc<AtomicBool>,
    sync_phases: bool,
    /// The checkpoint this run resumed from, the last good one until the run saves another.
    resumed_from: Option<PathBuf>,
    /// Settings changed on resume, carried into every checkpoint of the run.
    changes: Vec<SettingChange>,
    /// This process's hold on the run folder, for as long as the trainer lives.
    _lock: RunLock,
}

impl Trainer {
    /// Tokenizes `text`, creates the run folder (named after `stem` unless the config names it)
    /// with its `config.toml` and `vocab.json`, and builds the model on `device` with autodiff.
    pub fn new(
        config: RunConfig,
        text: &str,
        stem: &str,
        device: Device,
    ) -> Result<Self, TrainError> {
        Self::start(config, text, device, Start::New { stem })
    }

    /// Continues the run a checkpoint belongs to, in its run folder, from the step after it.
    /// `config` must pass [`RunConfig::resume_conflict`] against the checkpoint's; `text` must
    /// have the checkpoint's vocabulary. Optimizer settings that differ from the checkpoint's
    /// are logged, recorded in `metrics.jsonl` and carried into every later checkpoint.
    pub fn resume(
        config: RunConfig,
        text: &str,
        checkpoint: &Path,
        files: CheckpointFiles,
        device: Device,
    ) -> Result<Self, TrainError> {
        Self::start(config, text, device, Start::Resume { checkpoint, files })
    }

    /// The settings changed on resume over the run's life (empty for an uninterrupted run).
    pub fn changes(&self) -> &[SettingChange] {
        &self.changes
    }

    /// The one constructor: the tokenizer and data (checked before anything is written), then
    /// the run folder, its lock, the model and the optimizer, new or from the checkpoint.
    fn start(
        config: RunConfig,
        text: &str,
        device: Device,
        start: Start,
    ) -> Result<Self, TrainError> {
        let tokenizer = match &start {
            Start::New { .. } => CharTokenizer::from_text(text),
            Start::Resume { checkpoint, files } => {
                let saved = CharTokenizer::from_json(&files.vocab_json).map_err(|e| {
                    TrainError::Data(format!("{}: vocab.json: {e}", checkpoint.display()))
                })?;
                if CharTokenizer::from_text(text) != saved {
                    return Err(TrainError::Data(format!(
                        "the training text's characters differ from the checkpoint's vocabulary ({} characters); resume with the same data.path",
                        saved.vocab_size()
                    )));
                }
                saved
            }
        };
        let data = dataset(&config, &tokenizer, text)?;
        let device = device.autodiff();
        let (run_dir, lock, model, optim, resumed) = match start {
            Start::New { stem } => {
                let run_dir = create_run_dir(&config.run.out, &config.run.name, stem)
                    .map_err(TrainError::Data)?;
                let lock = RunLock::acquire(&run_dir).map_err(TrainError::RunInUse)?;
                let vocab_path = run_dir.join("vocab.json");
                atomic_write(&vocab_path, tokenizer.to_json().as_bytes())
                    .map_err(io(&vocab_path))?;
                device.seed(config.train.seed);
                let model = config.model.gpt(tokenizer.vocab_size()).init(&device);
                (run_dir, lock, model, adamw(&config.train), None)
            }
            Start::Resume { checkpoint, files } => {
                let damaged = |what: &str, e: &dyn std::fmt::Display| {
                    TrainError::Data(format!(
                        "{}: cannot load the {what}: {e}",
                        checkpoint.display()
                    ))
                };
                let gpt = config.model.gpt(tokenizer.vocab_size());
                let model =
                    decode_model(&gpt, files.model, &device).map_err(|e| damaged("model", &e))?;
                let optim = decode_optimizer(&config.train, files.optimizer)
                    .map_err(|e| damaged("optimizer state", &e))?;
                let run_dir = run_dir_of(checkpoint);
                let lock = RunLock::acquire(&run_dir).map_err(TrainError::RunInUse)?;
                let saved: RunConfig = toml::from_str(&files.config_toml).map_err(|e| {
                    TrainError::Data(format!("{}: config.toml: {e}", checkpoint.display()))
                })?;
                let state = continue_metrics(&run_dir, files.state, &config, &saved)?;
                (
                    run_dir,
                    lock,
                    model,
                    optim,
                    Some((checkpoint.to_path_buf(), state)),
                )
            }
        };
        let config_path = run_dir.join("config.toml");
        atomic_write(&config_path, config.to_toml().as_bytes()).map_err(io(&config_path))?;
        let metrics_path = run_dir.join("metrics.jsonl");
        let metrics = MetricsWriter::create(&metrics_path).map_err(io(&metrics_path))?;
        let t = &config.train;
        let schedule = LrSchedule {
            lr: t.lr,
            min_lr: t.min_lr,
            warmup: t.warmup,
            decay_steps: t.steps,
        };
        info!(
            params = model.num_params(),
            vocab = tokenizer.vocab_size(),
            train_tokens = data.tokens(Split::Train).len(),
            val_tokens = data.tokens(Split::Val).len(),
            run_dir = %run_dir.display(),
            resumed_at = resumed.as_ref().map(|(_, s)| s.step),
            "model and data ready"
        );
        Ok(Self {
            checkpoints: Checkpoints::new(&run_dir, t.keep_last),
            start_step: resumed.as_ref().map_or(0, |(_, s)| s.step),
            earlier_train_time: resumed.as_ref().map_or(0.0, |(_, s)| s.train_time_s),
            resumed_from: resumed.as_ref().map(|(path, _)| path.clone()),
            changes: resumed.map_or_else(Vec::new, |(_, s)| s.changes),
            _lock: lock,
            stop: Arc::new(AtomicBool::new(false)),
            sync_phases: false,
            optim,
            config,
            device,
            tokenizer,
            data,
            model,
            schedule,
            run_dir,
            metrics,
        })
    }

    /// Set it (from a signal handler, say) to finish the current step, save a checkpoint and
    /// return.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The step a resumed run continues after (0 for a new run).
    pub fn start_step(&self) -> usize {
        self.start_step
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn tokenizer(&self) -> &CharTokenizer {
        &self.tokenizer
    }

    /// Runs every step of the config, evaluating and sampling when due.
    pub fn train(&mut self, hooks: &mut dyn StepHooks) -> Result<Summary, TrainError> {
        let t = self.config.train.clone();
        let tokens_per_step = (t.batch_size * self.config.model.context) as f64;
        let start = Instant::now();
        let (mut train_time, mut window_time, mut window_steps) = (0.0, 0.0, 0usize);
        // A new run evaluates its initial model; a resumed one already did.
        let mut last_eval = if self.start_step == 0 {
            self.maybe_eval(0, hooks)
                .map_err(|e| self.with_recovery(e, None))?
        } else {
            None
        };
        let mut last_loss = f64::NAN;
        let mut sample = String::new();
        let (mut last_step, mut last_checkpoint, mut stopped) = (self.start_step, None, false);

        for step in self.start_step + 1..=t.steps {
            hooks.begin_step(step);
            let step_start = Instant::now();
            let Update {
                lr,
                loss,
                grad_norm,
                phases,
            } = self
                .step(step)
                .map_err(|e| self.with_recovery(e, last_checkpoint.as_deref()))?;
            let dt = step_start.elapsed().as_secs_f64();
            (train_time, window_time, window_steps) =
                (train_time + dt, window_time + dt, window_steps + 1);
            last_loss = loss;

            let eval_due = t.eval_every > 0 && step.is_multiple_of(t.eval_every) || step == t.steps;
            let eval = if eval_due {
                self.maybe_eval(step, hooks)
                    .map_err(|e| self.with_recovery(e, last_checkpoint.as_deref()))?
            } else {
                None
            };
            last_eval = eval.or(last_eval);
            stopped = self.stop.load(Ordering::Relaxed) && step < t.steps;
            if stopped
                || step == t.steps
                || t.checkpoint_every > 0 && step.is_multiple_of(t.checkpoint_every)
            {
                let path = self.save_checkpoint(step, self.earlier_train_time + train_time)?;
                hooks.on_checkpoint(step, &path);
                last_checkpoint = Some(path);
            }
            // The final sample belongs to the last step too, so that it is accounted in its scope.
            let sample_due =
                step == t.steps || t.sample_every > 0 && step.is_multiple_of(t.sample_every);
            if t.sample_tokens > 0 && sample_due {
                sample = self.sample(step, hooks);
            }

            let mut record = StepRecord {
                step,
                loss,
                lr,
                grad_norm,
                tokens_per_sec: tokens_per_step * window_steps as f64 / window_time,
                ms_per_step: 1e3 * window_time / window_steps as f64,
                rss_bytes: rss_bytes(),
                elapsed_s: start.elapsed().as_secs_f64(),
                train_loss: eval.map(|e| e.train_loss),
                val_loss: eval.map(|e| e.val_loss),
                val_bpc: eval.map(|e| e.val_loss / std::f64::consts::LN_2),
                phases,
                logged: step == 1
                    || step == t.steps
                    || eval.is_some()
                    || (t.log_every > 0 && step.is_multiple_of(t.log_every)),
                ..StepRecord::default()
            };
            hooks.end_step(&mut record).map_err(TrainError::Hook)?;
            if record.logged || stopped {
                let path = self.run_dir.join("metrics.jsonl");
                self.metrics.write(&record).map_err(io(&path))?;
                (window_time, window_steps) = (0.0, 0);
            }
            last_step = step;
            if stopped {
                break;
            }
        }
        let done = last_step - self.start_step;
        Ok(Summary {
            steps: last_step,
            stopped,
            last_checkpoint,
            last_loss,
            last_eval,
            train_time_s: train_time,
            tokens_per_sec: tokens_per_step * done as f64 / train_time.max(f64::MIN_POSITIVE),
            peak_rss_bytes: peak_rss_bytes(),
            sample,
        })
    }

    /// Completes a [`TrainError::NonFinite`] with the way back: the last good checkpoint
    /// (`saved`, the newest this run wrote, or the one it resumed from) and the command that
    /// continues from it with half the learning rate.
    fn with_recovery(&self, error: TrainError, saved: Option<&Path>) -> TrainError {
        let TrainError::NonFinite {
            step, what, value, ..
        } = error
        else {
            return error;
        };
        let lr = self.config.train.lr / 2.0;
        let recovery = match saved.or(self.resumed_from.as_deref()) {
            Some(checkpoint) => format!(
                "The last good checkpoint is {0}; continue from it with a lower learning rate: train --resume {0} --change-optimizer --set train.lr={lr:e}",
                checkpoint.display()
            ),
            None => format!(
                "No checkpoint was saved before it; start again with a lower learning rate (--set train.lr={lr:e}) or check the data"
            ),
        };
        TrainError::NonFinite {
            step,
            what,
            value,
            recovery,
        }
    }

    /// Writes a checkpoint of the model after `step` updates.
    fn save_checkpoint(&self, step: usize, train_time_s: f64) -> Result<PathBuf, TrainError> {
        let failed = |e: &dyn std::fmt::Display| {
            TrainError::Data(format!("step {step}: cannot serialize the checkpoint: {e}"))
        };
        let model = self
            .model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| failed(&e))?;
        let optimizer = self.optim.into_bytes().map_err(|e| failed(&e))?;
        let files = CheckpointFiles {
            model: model.to_vec(),
            optimizer: optimizer.to_vec(),
            state: CheckpointState {
                format_version: FORMAT_VERSION,
                step,
                train_time_s,
                ember_version: env!("CARGO_PKG_VERSION").to_string(),
                changes: self.changes.clone(),
            },
            config_toml: self.config.to_toml(),
            vocab_json: self.tokenizer.to_json(),
        };
        self.checkpoints
            .save(&files)
            .map_err(|error| TrainError::CheckpointWrite {
                step,
                run: self.run_dir.clone(),
                error,
            })
    }

    /// One optimizer update for `step` (1-based) at the scheduled learning rate, timed phase by
    /// phase: the whole training work of a step, without evaluation, checkpoint or sampling.
    pub fn step(&mut self, step: usize) -> Result<Update, TrainError> {
        let t = &self.config.train;
        let lr = self.schedule.at(step - 1);
        let verbose = step <= DEBUG_STEPS && tracing::enabled!(tracing::Level::DEBUG)
            || tracing::enabled!(tracing::Level::TRACE);
        let mut clock = PhaseClock::new(verbose, self.sync_phases || verbose, &self.device, step);

        let mut rng = SplitMix64::keyed(t.seed, Stream::TrainBatches, step as u64);
        let batch = self.data.batch(
            Split::Train,
            t.batch_size,
            self.config.model.context,
            &mut rng,
            &self.device,
        );
        let data = clock.phase("data");
        let loss = self.model.loss(batch.inputs, batch.targets);
        let forward = clock.phase("forward");
        let grads = loss.backward();
        let backward = clock.phase("backward");
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        let grad_norm = clip_global_norm(&self.model, &mut grads, t.grad_clip);
        let loss = f64::from(loss.into_scalar::<f32>());
        for (what, value) in [("loss", loss), ("gradient norm", grad_norm)] {
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    what,
                    value,
                    recovery: String::new(),
                });
            }
        }
        let clip = clock.phase("clip");
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let optimizer = clock.phase("optimizer");
        Ok(Update {
            lr,
            loss,
            grad_norm,
            phases: PhaseTimes {
                data,
                forward,
                backward,
                clip,
                optimizer,
            },
        })
    }

    /// Synchronize the device after every phase so that phase times are exact on asynchronous
    /// backends (GPUs), at some cost in throughput. CPU backends are synchronous anyway.
    pub fn set_exact_phase_timing(&mut self, on: bool) {
        self.sync_phases = on;
    }

    /// nanoGPT's `estimate_loss`: mean loss over `eval_iters` batches of each split, drawn from
    /// their own stream so that evaluating never shifts the training batches.
    fn maybe_eval(
        &mut self,
        step: usize,
        hooks: &mut dyn StepHooks,
    ) -> Result<Option<EvalRecord>, TrainError> {
        let t = &self.config.train;
        if t.eval_iters == 0 {
            return Ok(None);
        }
        let model = self.model.valid();
        let device = self.device.clone().without_autodiff();
        let mean = |split: Split, stream_step: u64| {
            let mut rng = SplitMix64::keyed(t.seed, Stream::EvalBatches, stream_step);
            let total: f64 = (0..t.eval_iters)
                .map(|_| {
                    let b = self.data.batch(
                        split,
                        t.batch_size,
                        self.config.model.context,
                        &mut rng,
                        &device,
                    );
                    f64::from(model.loss(b.inputs, b.targets).into_scalar::<f32>())
                })
                .sum();
            total / t.eval_iters as f64
        };
        let eval = EvalRecord {
            step,
            train_loss: mean(Split::Train, 2 * step as u64),
            val_loss: mean(Split::Val, 2 * step as u64 + 1),
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

    /// `sample_tokens` characters from the current model, starting from a newline.
    fn sample(&mut self, step: usize, hooks: &mut dyn StepHooks) -> String {
        let t = &self.config.train;
        let start = self.tokenizer.encode("\n").unwrap_or_else(|_| vec![0]);
        let mut rng = SplitMix64::keyed(t.seed, Stream::Sampling, step as u64);
        let device = self.device.clone().without_autodiff();
        let ids = generate(
            &self.model.valid(),
            &start,
            t.sample_tokens,
            SamplingConfig::default(),
            &mut rng,
            &device,
            |_| {},
        );
        let text = self.tokenizer.decode(&ids[start.len()..]);
        hooks.on_sample(step, &text);
        text
    }
}

/// How a trainer starts: a new run, or the continuation of a checkpoint.
enum Start<'a> {
    New {
        stem: &'a str,
    },
    Resume {
        checkpoint: &'a Path,
        files: CheckpointFiles,
    },
}

/// Drops the lines a resumed run will log again from `metrics.jsonl`, records there the
/// optimizer settings `config` changes from the checkpoint's `saved` ones, and returns the
/// checkpoint's state with those changes added.
fn continue_metrics(
    run_dir: &Path,
    mut state: CheckpointState,
    config: &RunConfig,
    saved: &RunConfig,
) -> Result<CheckpointState, TrainError> {
    let metrics_path = run_dir.join("metrics.jsonl");
    crate::metrics::truncate_after(&metrics_path, state.step).map_err(io(&metrics_path))?;
    let step = state.step;
    let changes: Vec<SettingChange> = config
        .optimizer_changes(saved)
        .into_iter()
        .map(|(key, from, to)| SettingChange {
            step,
            key,
            from,
            to,
        })
        .collect();
    if !changes.is_empty() {
        let event = ResumeEvent {
            step,
            event: "resumed with changed settings",
            changes: &changes,
        };
        MetricsWriter::create(&metrics_path)
            .and_then(|mut m| m.write(&event))
            .map_err(io(&metrics_path))?;
    }
    state.changes.extend(changes);
    Ok(state)
}

/// The `metrics.jsonl` line of a resume that changed settings.
#[derive(serde::Serialize)]
struct ResumeEvent<'a> {
    step: usize,
    event: &'static str,
    changes: &'a [SettingChange],
}

/// The text split into train and validation tokens with `tokenizer`.
fn dataset(
    config: &RunConfig,
    tokenizer: &CharTokenizer,
    text: &str,
) -> Result<Dataset, TrainError> {
    let tokens = tokenizer
        .encode(text)
        .map_err(|e| TrainError::Data(format!("the training text: {e}")))?;
    Dataset::split(&tokens, config.data.val_fraction, config.model.context)
        .map_err(TrainError::Data)
}

/// What one optimizer update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    pub lr: f64,
    /// Loss of the step's batch, before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub phases: PhaseTimes,
}

/// Milliseconds spent in each phase of a training step.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes {
    /// Drawing the batch and moving it to the device.
    pub data: f64,
    pub forward: f64,
    pub backward: f64,
    /// Global gradient norm and clipping (reads the loss and the norm back).
    pub clip: f64,
    pub optimizer: f64,
}

impl PhaseTimes {
    pub fn total(&self) -> f64 {
        self.data + self.forward + self.backward + self.clip + self.optimizer
    }
}

/// Times the phases of a step, logging them when `log` is set and synchronizing the device
/// first when `sync` is, so that asynchronous backends (GPUs) are timed for what they did, not
/// for what they queued.
struct PhaseClock<'a> {
    log: bool,
    sync: bool,
    device: &'a Device,
    step: usize,
    last: Instant,
}

impl<'a> PhaseClock<'a> {
    fn new(log: bool, sync: bool, device: &'a Device, step: usize) -> Self {
        Self {
            log,
            sync,
            device,
            step,
            last: Instant::now(),
        }
    }

    /// Milliseconds since the previous phase ended.
    fn phase(&mut self, name: &str) -> f64 {
        if self.sync {
            let _ = self.device.sync();
        }
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        if self.log {
            debug!(
                step = self.step,
                phase = name,
                ms = format!("{ms:.2}"),
                "phase done"
            );
        }
        ms
    }
}
