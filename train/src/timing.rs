//! Where a training step's time goes: the phases of a step, timed one after the other.

use std::time::Instant;

use burn::tensor::Device;
use tracing::debug;

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
    /// Averaging the gradients over the ranks (0 for one process).
    pub comm: f64,
}

impl PhaseTimes {
    pub fn total(&self) -> f64 {
        self.data + self.forward + self.backward + self.comm + self.clip + self.optimizer
    }
}

/// Times the phases of a step, logging them when `log` is set and synchronizing the device
/// first when `sync` is, so that asynchronous backends (GPUs) are timed for what they did, not
/// for what they queued.
pub(crate) struct PhaseClock<'a> {
    log: bool,
    sync: bool,
    device: &'a Device,
    step: usize,
    last: Instant,
}

impl<'a> PhaseClock<'a> {
    pub(crate) fn new(log: bool, sync: bool, device: &'a Device, step: usize) -> Self {
        Self {
            log,
            sync,
            device,
            step,
            last: Instant::now(),
        }
    }

    /// Milliseconds since the previous phase ended.
    pub(crate) fn phase(&mut self, name: &str) -> f64 {
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
