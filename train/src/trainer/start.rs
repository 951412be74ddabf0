//! How a trainer starts: a new run (a new run folder, fresh weights) or the continuation of a
//! checkpoint (its weights, optimizer state and run folder), behind one constructor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::Device;
use tracing::info;

use super::Trainer;
use crate::checkpoint::{
    CheckpointFiles, CheckpointState, Checkpoints, SettingChange, decode_model, decode_optimizer,
    run_dir_of,
};
use crate::cluster::{self, Collective};
use crate::config::RunConfig;
use crate::data::{Data, Dataset, Split};
use crate::error::{TrainError, io};
use crate::lock::RunLock;
use crate::metrics::MetricsWriter;
use crate::optim::adamw;
use crate::run_dir::{atomic_write, create_run_dir};
use crate::schedule::LrSchedule;
use crate::tokenizer::Tokenizer;

impl Trainer {
    /// The one constructor, for `data` loaded as `config` says ([`Data::load`], with the
    /// checkpoint's tokenizer when resuming). `Start::New`: creates the run folder (named after
    /// `stem` unless the config names it) with its `config.toml` and the tokenizer's file, and
    /// builds the model on `device` with autodiff. `Start::Resume`: continues the run the
    /// checkpoint belongs to, in its run folder, from the step after it; `config` must pass
    /// [`RunConfig::resume_conflict`] against the checkpoint's; optimizer settings that differ
    /// from the checkpoint's are logged, recorded in `metrics.jsonl` and carried into every
    /// later checkpoint.
    ///
    /// In order: the ranks' agreement (config and data), the run folder and its lock (rank 0's),
    /// the model and the optimizer, new or from the checkpoint, and the ranks' agreement on the
    /// weights.
    pub fn start(
        mut config: RunConfig,
        data: Data,
        device: Device,
        start: Start,
        cluster: Arc<dyn Collective>,
    ) -> Result<Self, TrainError> {
        let Data {
            tokenizer, dataset, ..
        } = data;
        // The run's config records the tokenizer, so that a resume knows it.
        config.data.tokenizer = Some(tokenizer.kind());
        if cluster.size() > 1 {
            check_ranks_agree(&config, &tokenizer, &dataset, &*cluster)?;
        }
        let owner = cluster.is_root();
        let gpt = config.model.gpt(config.model_vocab(&tokenizer)?);
        let device = device.autodiff();
        let (run_dir, lock, model, optim, resumed) = match start {
            Start::New { stem } => {
                let (run_dir, lock) = if owner {
                    let run_dir = create_run_dir(&config.run.out, &config.run.name, stem)?;
                    let lock = RunLock::acquire(&run_dir)?;
                    if let Some((name, text)) = tokenizer.file() {
                        let path = run_dir.join(name);
                        atomic_write(&path, text.as_bytes()).map_err(io(&path))?;
                    }
                    (run_dir, Some(lock))
                } else {
                    (config.run.out.clone(), None)
                };
                device.seed(config.train.seed);
                let model = gpt.init(&device);
                (run_dir, lock, model, adamw(&config.train), None)
            }
            Start::Resume { checkpoint, files } => {
                let files = *files;
                let model = decode_model(&gpt, files.model, &device, &checkpoint)?;
                let optimizer = files.optimizer.ok_or_else(|| {
                    TrainError::Checkpoint(format!(
                        "{}: read without its optimizer state, which a resumed run needs",
                        checkpoint.display()
                    ))
                })?;
                let optim = decode_optimizer(&config.train, optimizer, &model, &checkpoint)?;
                let run_dir = run_dir_of(&checkpoint);
                let mut state = files.state;
                let lock = if owner {
                    let lock = RunLock::acquire(&run_dir)?;
                    let saved: RunConfig = toml::from_str(&files.config_toml).map_err(|e| {
                        TrainError::Checkpoint(format!(
                            "{}: config.toml: {e}",
                            checkpoint.display()
                        ))
                    })?;
                    state = continue_metrics(&run_dir, state, &config, &saved, cluster.size())?;
                    Some(lock)
                } else {
                    if let Some(change) = ranks_change(&state, cluster.size()) {
                        state.changes.push(change);
                    }
                    None
                };
                (run_dir, lock, model, optim, Some((checkpoint, state)))
            }
        };
        if cluster.size() > 1 {
            cluster::check_agreement(
                &*cluster,
                cluster::weights_checksum(&model),
                "the starting weights",
                "every rank must run the same build of Ember on the same backend",
            )?;
        }
        let metrics = if owner {
            let config_path = run_dir.join("config.toml");
            atomic_write(&config_path, config.to_toml().as_bytes()).map_err(io(&config_path))?;
            let metrics_path = run_dir.join("metrics.jsonl");
            Some(MetricsWriter::create(&metrics_path).map_err(io(&metrics_path))?)
        } else {
            None
        };
        let t = &config.train;
        let schedule = LrSchedule {
            lr: t.lr,
            min_lr: t.min_lr,
            warmup: t.warmup,
            decay_steps: t.steps,
        };
        info!(
            params = model.num_params(),
            vocab = gpt.vocab_size,
            train_tokens = dataset.tokens(Split::Train).len(),
            val_tokens = dataset.tokens(Split::Val).len(),
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
            cluster,
            stop: Arc::new(AtomicBool::new(false)),
            sync_phases: false,
            optim,
            config,
            device,
            sample_prompt: sample_prompt(&tokenizer),
            tokenizer,
            data: dataset,
            model: Some(model),
            schedule,
            run_dir,
            metrics,
        })
    }
}

/// A newline's tokens (token 0 if the tokenizer has no newline), decoded once too: both build
/// what the tokenizer keeps for later (see [`Trainer`]'s `sample_prompt`).
fn sample_prompt(tokenizer: &Tokenizer) -> Vec<u32> {
    let prompt = tokenizer.encode("\n").unwrap_or_else(|_| vec![0]);
    let _ = tokenizer.decode(&prompt);
    prompt
}

/// How a trainer starts: a new run, or the continuation of a checkpoint.
pub enum Start<'a> {
    /// A new run folder named `<stem>-<UTC time>` (unless `run.name` is set).
    New { stem: &'a str },
    /// The checkpoint folder `checkpoint`, whose files were read and verified.
    Resume {
        checkpoint: PathBuf,
        /// Boxed: the state and file bytes are most of the enum's size.
        files: Box<CheckpointFiles>,
    },
}

/// Refuses ranks that would not train the same run: another config (the threads aside, which
/// each rank sets for its own machine, and the run folder, which is rank 0's alone), other data,
/// or a batch whose rows do not divide among them.
fn check_ranks_agree(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    dataset: &Dataset,
    cluster: &dyn Collective,
) -> Result<(), TrainError> {
    let mut shared = config.clone();
    shared.run.threads = 0;
    (shared.run.out, shared.run.name) = Default::default();
    cluster::check_agreement(
        cluster,
        cluster::fingerprint(shared.to_toml().as_bytes()),
        "the config",
        "start every rank with the same config file, preset and --set options",
    )?;
    cluster::check_agreement(
        cluster,
        dataset.fingerprint(tokenizer)?,
        "the data",
        "give every rank the same data.path, with identical files on every node",
    )?;
    let (rows, ranks) = (config.train.batch_size, cluster.size());
    if !rows.is_multiple_of(ranks) {
        return Err(TrainError::Cluster(format!(
            "train.batch_size = {rows} does not divide among {ranks} ranks (each takes an equal share of every batch's rows); \
             use a batch size that is a multiple of {ranks}, or another number of ranks"
        )));
    }
    Ok(())
}

/// The record of a resume with another number of ranks than the checkpoint's, if it is one.
fn ranks_change(state: &CheckpointState, ranks: usize) -> Option<SettingChange> {
    (state.ranks != ranks).then(|| SettingChange {
        step: state.step,
        key: "ranks".into(),
        from: state.ranks.to_string(),
        to: ranks.to_string(),
    })
}

/// Drops the lines a resumed run will log again from `metrics.jsonl`, records there the
/// optimizer settings `config` changes from the checkpoint's `saved` ones (and the number of
/// `ranks`, if other than the checkpoint's), and returns the checkpoint's state with those
/// changes added.
fn continue_metrics(
    run_dir: &Path,
    mut state: CheckpointState,
    config: &RunConfig,
    saved: &RunConfig,
    ranks: usize,
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
        .chain(ranks_change(&state, ranks))
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
