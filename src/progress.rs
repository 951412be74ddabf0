//! What a person watching a run sees: an indicatif bar on a terminal, plain log lines otherwise
//! (CI logs, `| tee`, nohup), with eval results and samples printed as they come.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use ember_train::metrics::{EvalRecord, StepRecord};
use ember_train::sys::mib;
use ember_train::{StepHooks, TrainError};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    steps: usize,
    /// When the checkpoint being written was started.
    checkpoint_started: Option<Instant>,
}

impl Progress {
    /// A bar when stdout is a terminal, log lines otherwise.
    pub fn new(steps: usize) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self {
            bar,
            steps,
            checkpoint_started: None,
        }
    }

    /// Prints above the bar (or plainly).
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(line.as_ref()),
            None => crate::say!("{}", line.as_ref()),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl StepHooks for Progress {
    fn end_step(&mut self, r: &mut StepRecord) -> Result<(), TrainError> {
        let live = r.memory.map(|m| m.live_bytes);
        let figures = format!(
            "loss {:.4} | lr {:.2e} | {:.0} tok/s | {:.1} ms/step | rss {}{}",
            r.loss,
            r.lr,
            r.tokens_per_sec,
            r.ms_per_step,
            mib(r.rss_bytes),
            live.map(|b| format!(" | live {}", mib(b)))
                .unwrap_or_default()
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.step as u64);
                bar.set_message(figures);
            }
            None if r.logged => {
                let eta = r.elapsed_s / r.step as f64 * (self.steps - r.step) as f64;
                crate::say!("step {}/{} | {figures} | eta {eta:.0}s", r.step, self.steps);
            }
            None => {}
        }
        Ok(())
    }

    fn on_eval(&mut self, e: &EvalRecord) {
        self.println(format!(
            "eval step {}: train loss {:.4}, val loss {:.4}",
            e.step, e.train_loss, e.val_loss
        ));
    }

    fn before_checkpoint(&mut self, _step: usize) {
        self.checkpoint_started = Some(Instant::now());
    }

    /// The checkpoint's folder, its size and how long it took to write: at GPT-2's size a
    /// checkpoint is 1.5 GB and seconds of the run.
    fn on_checkpoint(&mut self, step: usize, path: &Path) {
        let took = self
            .checkpoint_started
            .take()
            .map(|start| format!(", {:.2} s", start.elapsed().as_secs_f64()))
            .unwrap_or_default();
        self.println(format!(
            "checkpoint step {step}: {} ({}{took})",
            path.display(),
            mib(folder_bytes(path))
        ));
    }

    fn on_sample(&mut self, step: usize, text: &str) {
        self.println(format!("---- sample at step {step} ----\n{text}\n----"));
    }
}

/// The bytes of the files in `dir` (a checkpoint's folder holds no subfolders).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}
