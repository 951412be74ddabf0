//! What a person watching a run sees: an indicatif bar on a terminal, plain log lines otherwise
//! (CI logs, `| tee`, nohup), with eval results and samples printed as they come.

use std::io::IsTerminal;
use std::time::Duration;

use ember_train::metrics::{EvalRecord, StepRecord};
use ember_train::sys::mib;
use ember_train::{StepHooks, TrainError};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    steps: usize,
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
        Self { bar, steps }
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

    fn on_checkpoint(&mut self, step: usize, path: &std::path::Path) {
        self.println(format!("checkpoint step {step}: {}", path.display()));
    }

    fn on_sample(&mut self, step: usize, text: &str) {
        self.println(format!("---- sample at step {step} ----\n{text}\n----"));
    }
}
