//! What a run reports: one JSON object per logged step in `metrics.jsonl`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

/// One step's figures. Timings cover the training work of the steps since the previous logged
/// step (batch, forward, backward, clipping, update), not evaluation or sampling.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepRecord {
    /// Optimizer updates done, counting this one (1-based; 0 is the model before training).
    pub step: usize,
    /// Loss of this step's batch, before its update.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub ms_per_step: f64,
    pub rss_bytes: u64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Bits per character of the validation loss (`val_loss / ln 2`), the figure character-level
    /// language-model papers report (character-level runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpc: Option<f64>,
    /// Bits per byte of UTF-8 text of the validation loss, for every tokenizer: the figure that
    /// compares runs with different tokenizers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    /// Where this step's training time went (not written to `metrics.jsonl`).
    #[serde(skip)]
    pub phases: crate::timing::PhaseTimes,
    /// Whether this record goes to `metrics.jsonl` (every `log_every` steps, evals, first, last).
    #[serde(skip)]
    pub logged: bool,
    /// What the step did with memory, when a memory scope watches the run.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFigures>,
}

/// A step's memory, as the memory scope measured it (all in bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MemoryFigures {
    /// Heap bytes allocated and not freed at the end of the step.
    pub live_bytes: u64,
    /// Highest live bytes since the process started.
    pub peak_live_bytes: u64,
    /// Highest live bytes during this step.
    pub step_peak_bytes: u64,
    /// Live bytes the step added (negative: freed).
    pub kept_bytes: i64,
    /// Allocations since the process started.
    pub allocations: u64,
    /// RSS given back to the OS by the trims since the previous logged line.
    pub trimmed_bytes: u64,
    /// The device's memory pool, on backends that have one (GPUs).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceFigures>,
}

/// A device memory pool after a step (GPU backends), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DeviceFigures {
    pub device_bytes_in_use: u64,
    pub device_bytes_reserved: u64,
    /// What the pool's cleanup freed since the previous logged line.
    pub device_trimmed_bytes: u64,
}

/// The loss estimate of an evaluation, as nanoGPT's `estimate_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalRecord {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// The validation loss in bits per byte of text.
    pub val_bpb: f64,
}

/// Drops the lines of steps after `step` (logged after the checkpoint a run resumes from, so
/// that they are not doubled), and events at `step` itself (an earlier resume from the same
/// checkpoint, whose steps are dropped), rewriting the file atomically. A missing file is left
/// missing.
pub fn truncate_after(path: &Path, step: usize) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let keep: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| Some((v["step"].as_u64()? as usize, v.get("event").is_some())))
                .is_some_and(|(s, event)| s < step || s == step && !event)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    crate::run_dir::atomic_write(path, keep.as_bytes())
}

/// Appends records to `metrics.jsonl`, one line each, flushed so that a crash loses nothing
/// already logged and `tail -f` follows the run.
pub struct MetricsWriter {
    out: BufWriter<File>,
}

impl MetricsWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
