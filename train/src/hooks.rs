//! Observers of the training loop: what runs at the start and end of every step, after an
//! evaluation, a sample or a checkpoint (the progress display, the memory scope).

use std::path::Path;

use crate::TrainError;
use crate::metrics::{EvalRecord, StepRecord};

/// Observers of the loop: progress display, memory accounting. Every method has a no-op default.
pub trait StepHooks {
    /// First thing in step `step` (1-based).
    fn begin_step(&mut self, _step: usize) {}
    /// Last thing in a step; may add fields to the record before it is logged. An error stops
    /// the run (a memory scope in `fail` mode reports its leaking step this way).
    fn end_step(&mut self, _record: &mut StepRecord) -> Result<(), TrainError> {
        Ok(())
    }
    fn on_eval(&mut self, _eval: &EvalRecord) {}
    fn on_sample(&mut self, _step: usize, _text: &str) {}
    /// Just before step `step`'s checkpoint is written: memory held for reuse can go back
    /// first, so that it does not add to the checkpoint's peak.
    fn before_checkpoint(&mut self, _step: usize) {}
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
    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), TrainError> {
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
    fn before_checkpoint(&mut self, step: usize) {
        self.0.before_checkpoint(step);
        self.1.before_checkpoint(step);
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
    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), TrainError> {
        (**self).end_step(record)
    }
    fn on_eval(&mut self, eval: &EvalRecord) {
        (**self).on_eval(eval);
    }
    fn on_sample(&mut self, step: usize, text: &str) {
        (**self).on_sample(step, text);
    }
    fn before_checkpoint(&mut self, step: usize) {
        (**self).before_checkpoint(step);
    }
    fn on_checkpoint(&mut self, step: usize, path: &Path) {
        (**self).on_checkpoint(step, path);
    }
}
