//! The training loop, phase by phase as nanoGPT's: evaluate when due, draw a batch, forward and
//! backward (once per micro-batch, the gradients summed), clip the global gradient norm, step
//! AdamW with the scheduled learning rate, log.
//!
//! # The step scope
//! Each step is bracketed by [`StepHooks::begin_step`] and [`StepHooks::end_step`]. Everything a
//! step allocates (forward, backward, update, and, when due, evaluation, sampling and, later,
//! checkpointing) happens between the two, in that order; `end_step` is the last thing a step
//! does, so that a hook that accounts for memory sees every byte the step kept. Nothing of a
//! step may allocate after its `end_step`.
//!
//! # Ranks
//! With ranks training together ([`crate::cluster`]), every rank runs this same loop: each
//! takes its share of every micro-batch's rows, the gradients and the loss are averaged before
//! clipping, evaluation is shared out, and rank 0 alone writes the run folder (metrics,
//! checkpoints) and samples.

mod checkpointing;
mod evaluate;
mod start;

pub use evaluate::bits_per_byte;
pub use start::Start;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, s};
use ember_kernels::fused::with_workers_polling_on;
use ember_model::Gpt;

use crate::checkpoint::{Checkpoints, SettingChange};
use crate::cluster::{self, Collective};
use crate::config::RunConfig;
use crate::data::{Batch, Dataset, Split};
use crate::error::{TrainError, io};
use crate::hooks::StepHooks;
use crate::lock::RunLock;
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::optim::{self, clip_global_norm};
use crate::rng::{SplitMix64, Stream};
use crate::schedule::LrSchedule;
use crate::sys::{peak_rss_bytes, rss_bytes};
use crate::timing::{PhaseClock, PhaseTimes};
use crate::tokenizer::{Tokenizer, TokenizerKind};

/// Steps whose phases are logged at debug level (all steps at trace level).
const DEBUG_STEPS: usize = 5;

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
    tokenizer: Tokenizer,
    /// The samples' first token(s): a newline, encoded once at the start, so that whatever the
    /// tokenizer builds on first use (GPT-2's 10 MB of tables) is not counted against a step.
    sample_prompt: Vec<u32>,
    data: Dataset,
    /// The model; `None` only while the optimizer holds it (see [`Trainer::model`]).
    model: Option<Gpt>,
    optim: ModuleOptimizer,
    schedule: LrSchedule,
    run_dir: PathBuf,
    /// `metrics.jsonl`, on rank 0 (the other ranks write nothing).
    metrics: Option<MetricsWriter>,
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
    /// The ranks training together ([`cluster::Solo`] for one process).
    cluster: Arc<dyn Collective>,
    /// This process's hold on the run folder, for as long as the trainer lives (rank 0's).
    _lock: Option<RunLock>,
}

impl Trainer {
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

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The settings changed on resume over the run's life (empty for an uninterrupted run).
    pub fn changes(&self) -> &[SettingChange] {
        &self.changes
    }

    /// Runs every step of the config, evaluating and sampling when due.
    pub fn train(&mut self, hooks: &mut dyn StepHooks) -> Result<Summary, TrainError> {
        let t = self.config.train.clone();
        let tokens_per_step = (t.sequences_per_step() * self.config.model.context) as f64;
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

            let eval_due = due(t.eval_every, step) || step == t.steps;
            let eval = if eval_due {
                self.maybe_eval(step, hooks)
                    .map_err(|e| self.with_recovery(e, last_checkpoint.as_deref()))?
            } else {
                None
            };
            last_eval = eval.or(last_eval);
            // A stop seen by one rank stops every rank after this same step.
            stopped =
                cluster::any(&*self.cluster, self.stop.load(Ordering::Relaxed)) && step < t.steps;
            if stopped || step == t.steps || due(t.checkpoint_every, step) {
                hooks.before_checkpoint(step);
                let path = self.save_checkpoint(step, self.earlier_train_time + train_time)?;
                if let Some(path) = path {
                    hooks.on_checkpoint(step, &path);
                    last_checkpoint = Some(path);
                }
            }
            // The final sample belongs to the last step too, so that it is accounted in its scope.
            let sample_due = step == t.steps || due(t.sample_every, step);
            if t.sample_tokens > 0 && sample_due && self.cluster.is_root() {
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
                val_bpc: eval
                    .filter(|_| self.tokenizer.kind() == TokenizerKind::Char)
                    .map(|e| e.val_loss / std::f64::consts::LN_2),
                val_bpb: eval.map(|e| e.val_bpb),
                phases,
                logged: step == 1 || step == t.steps || eval.is_some() || due(t.log_every, step),
                ..StepRecord::default()
            };
            hooks.end_step(&mut record)?;
            if record.logged || stopped {
                if let Some(metrics) = &mut self.metrics {
                    let path = self.run_dir.join("metrics.jsonl");
                    metrics.write(&record).map_err(io(&path))?;
                }
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

    /// One optimizer update for `step` (1-based) at the scheduled learning rate, timed phase by
    /// phase: the whole training work of a step, without evaluation, checkpoint or sampling.
    pub fn step(&mut self, step: usize) -> Result<Update, TrainError> {
        let t = &self.config.train;
        let lr = self.schedule.at(step - 1);
        let verbose = step <= DEBUG_STEPS && tracing::enabled!(tracing::Level::DEBUG)
            || tracing::enabled!(tracing::Level::TRACE);
        let mut clock = PhaseClock::new(verbose, self.sync_phases || verbose, &self.device, step);

        // The step's whole batch, as one process draws it whatever the accumulation and the
        // ranks, so that `grad_accum = N` trains on the sequences of `batch_size * N` without
        // accumulation, and N ranks on those of one process. This rank's share of each
        // micro-batch is `share` rows at `offset`.
        let (ranks, rank) = (self.cluster.size(), self.cluster.rank());
        let share = t.batch_size / ranks;
        let offset = rank * share;
        let mut rng = SplitMix64::keyed(t.seed, Stream::TrainBatches, step as u64);
        let batch = self.data.batch(
            Split::Train,
            t.sequences_per_step(),
            self.config.model.context,
            &mut rng,
            &self.device,
        )?;
        if self.config.model.dropout > 0.0 {
            // Dropout's masks come from the device's generator: keyed by the step, a resumed run
            // draws the masks an uninterrupted one would; and by the rank, whose rows are others.
            let key = (step * ranks + rank) as u64;
            let key = SplitMix64::keyed(t.seed, Stream::Dropout, key).next_u64();
            self.device.seed(key);
        }
        let data = clock.phase("data");
        let (forward, backward, mut loss, mut accumulated) =
            with_workers_polling_on(&self.device, || {
                self.micro_batches(&batch, (share, offset), &mut clock)
            });
        let mut grads = accumulated.grads();
        let comm = if ranks > 1 {
            cluster::average_gradients(self.model(), &mut grads, &*self.cluster);
            let mut sum = [loss];
            self.cluster.sum_f64(&mut sum);
            loss = sum[0] / ranks as f64;
            clock.phase("comm")
        } else {
            0.0
        };
        let clipping = clip_global_norm(self.model(), &grads, t.grad_clip);
        let grad_norm = clipping.norm;
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
        // Handed over, not cloned: with no other holder of the parameters and moments, AdamW
        // updates them in place instead of faulting in fresh memory for new ones every step.
        let model = self
            .model
            .take()
            .expect("the trainer holds its model between steps");
        let optim = &mut self.optim;
        self.model = Some(with_workers_polling_on(&self.device, || {
            optim::step(optim, lr, model, grads, clipping.scale)
        }));
        let optimizer = clock.phase("optimizer");
        Ok(Update {
            lr,
            loss,
            grad_norm,
            phases: PhaseTimes {
                data,
                forward,
                backward,
                comm,
                clip,
                optimizer,
            },
        })
    }

    /// The forward and backward passes of a step's micro-batches, `share` rows at `offset` of
    /// each: the seconds of both phases, the summed loss (each micro-batch's scaled by 1/N) and
    /// the summed gradients.
    fn micro_batches(
        &self,
        batch: &Batch,
        (share, offset): (usize, usize),
        clock: &mut PhaseClock,
    ) -> (f64, f64, f64, GradientsAccumulator<Gpt>) {
        let (micro, n) = (self.config.train.batch_size, self.config.train.grad_accum);
        let model = self.model();
        let (mut forward, mut backward, mut loss) = (0.0, 0.0, 0.0);
        let mut accumulated = GradientsAccumulator::<Gpt>::new();
        for i in 0..n {
            let rows = i * micro + offset..i * micro + offset + share;
            let (inputs, targets) = (batch.inputs.clone(), batch.targets.clone());
            let (inputs, targets) = (inputs.slice(s![rows.clone()]), targets.slice(s![rows]));
            let mut micro_loss = model.loss(inputs, targets);
            if n > 1 {
                micro_loss = micro_loss.div_scalar(n as f64);
            }
            forward += clock.phase("forward");
            let grads = GradientsParams::from_grads(micro_loss.backward(), model);
            loss += f64::from(micro_loss.into_scalar::<f32>());
            // Adds into the sum; the first micro-batch's gradients are moved in, not copied.
            accumulated.accumulate(model, grads);
            backward += clock.phase("backward");
        }
        (forward, backward, loss, accumulated)
    }

    /// The model being trained.
    fn model(&self) -> &Gpt {
        self.model
            .as_ref()
            .expect("the trainer holds its model between steps")
    }

    /// Synchronize the device after every phase so that phase times are exact on asynchronous
    /// backends (GPUs), at some cost in throughput. CPU backends are synchronous anyway.
    pub fn set_exact_phase_timing(&mut self, on: bool) {
        self.sync_phases = on;
    }
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

/// Whether something done every `every` steps (0: never) is due at `step`.
fn due(every: usize, step: usize) -> bool {
    every > 0 && step.is_multiple_of(every)
}
