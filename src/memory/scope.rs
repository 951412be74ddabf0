use std::fmt;

use burn::tensor::Device;
use ember_train::StepHooks;
use ember_train::config::{LeakPolicy, MemorySection};
use ember_train::metrics::StepRecord;
use ember_train::sys::{peak_rss_bytes, rss_bytes};
use serde_json::json;
use tracing::warn;

use super::{Counters, trim};

/// Wraps each training step: records its high-water mark and the bytes it kept, trims every
/// `trim_every` steps, and after `warmup_steps` holds every step to `tolerance_bytes` of kept
/// memory. Register it first among the hooks so that it opens the step before anything else.
pub struct MemoryScope {
    config: MemorySection,
    counters: &'static Counters,
    device: Device,
    step: usize,
    live_at_begin: usize,
    trimmed_since_log: u64,
    after_warmup: Option<Snapshot>,
    last: Option<Snapshot>,
    leaky_steps: usize,
    /// Steps this scope has closed. The warm-up counts from the first step of this process, not
    /// step 1: a resumed run's first steps allocate what a new run's did (optimizer state
    /// rebuilt from the checkpoint, caches), and were reported as leaks.
    steps_seen: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Snapshot {
    step: usize,
    live: usize,
    rss: u64,
}

impl MemoryScope {
    pub fn new(config: MemorySection, counters: &'static Counters, device: Device) -> Self {
        if !counters.is_active() {
            warn!(
                "allocation tracking is off: register ember::memory::TrackingAllocator as the #[global_allocator] to account for memory per step"
            );
        }
        Self {
            config,
            counters,
            device,
            step: 0,
            live_at_begin: 0,
            trimmed_since_log: 0,
            after_warmup: None,
            last: None,
            leaky_steps: 0,
            steps_seen: 0,
        }
    }

    /// What the run did with memory, for the end-of-run report.
    pub fn summary(&self) -> MemorySummary {
        let stats = self.counters.stats();
        MemorySummary {
            peak_rss: peak_rss_bytes(),
            peak_live: stats.peak as u64,
            after_warmup: self.after_warmup.map(|s| (s.step, s.live as u64, s.rss)),
            last: self.last.map(|s| (s.step, s.live as u64, s.rss)),
            leaky_steps: self.leaky_steps,
        }
    }
}

impl StepHooks for MemoryScope {
    fn begin_step(&mut self, step: usize) {
        self.step = step;
        self.live_at_begin = self.counters.stats().live;
        self.counters.reset_window_peak();
    }

    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), String> {
        let step = self.step;
        if self.config.trim_every > 0 && step.is_multiple_of(self.config.trim_every) {
            let given_back = trim(&self.device);
            tracing::debug!(step, given_back, "trim");
            self.trimmed_since_log += given_back;
        }
        let stats = self.counters.stats();
        let kept = stats.live as i64 - self.live_at_begin as i64;
        let snapshot = Snapshot {
            step,
            live: stats.live,
            rss: rss_bytes(),
        };
        self.last = Some(snapshot);
        self.steps_seen += 1;
        if self.steps_seen == self.config.warmup_steps.max(1) {
            self.after_warmup = Some(snapshot);
        }
        let extra = &mut record.extra;
        extra.insert("live_bytes".into(), json!(stats.live));
        extra.insert("peak_live_bytes".into(), json!(stats.peak));
        extra.insert("step_peak_bytes".into(), json!(stats.window_peak));
        extra.insert("kept_bytes".into(), json!(kept));
        extra.insert("allocations".into(), json!(stats.allocs));
        // Bytes given back since the previous logged line, so that none go unreported.
        extra.insert("trimmed_bytes".into(), json!(self.trimmed_since_log));
        if record.logged {
            self.trimmed_since_log = 0;
        }
        if self.counters.is_active()
            && self.steps_seen > self.config.warmup_steps
            && kept > self.config.tolerance_bytes as i64
        {
            self.leaky_steps += 1;
            let report = format!(
                "step {step} kept {kept} bytes (live {} -> {}, tolerance {}); something made in this step outlives it",
                self.live_at_begin, stats.live, self.config.tolerance_bytes
            );
            match self.config.leak_policy {
                LeakPolicy::Warn => warn!("{report}"),
                LeakPolicy::Fail => return Err(format!("memory: {report}")),
            }
        }
        Ok(())
    }
}

/// The end-of-run memory report.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySummary {
    pub peak_rss: u64,
    pub peak_live: u64,
    /// (step, live bytes, RSS) at the end of the warm-up.
    pub after_warmup: Option<(usize, u64, u64)>,
    /// (step, live bytes, RSS) at the last step.
    pub last: Option<(usize, u64, u64)>,
    pub leaky_steps: usize,
}

impl MemorySummary {
    /// RSS growth from the end of the warm-up to the last step, as a fraction.
    pub fn rss_growth(&self) -> Option<f64> {
        let ((_, _, warm), (_, _, last)) = (self.after_warmup?, self.last?);
        Some((last as f64 - warm as f64) / warm as f64)
    }
}

impl fmt::Display for MemorySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "memory: peak RSS {:.1} MiB, peak live {:.1} MiB",
            mib(self.peak_rss),
            mib(self.peak_live)
        )?;
        if let (Some((ws, wl, wr)), Some((ls, ll, lr))) = (self.after_warmup, self.last) {
            write!(
                f,
                " | after warm-up (step {ws}): live {:.2} MiB, RSS {:.1} MiB | step {ls}: live {:.2} MiB ({:+} bytes), RSS {:.1} MiB ({:+.2}%)",
                mib(wl),
                mib(wr),
                mib(ll),
                ll as i64 - wl as i64,
                mib(lr),
                100.0 * self.rss_growth().unwrap_or(0.0)
            )?;
        }
        if self.leaky_steps > 0 {
            write!(
                f,
                " | {} steps kept memory past the tolerance",
                self.leaky_steps
            )?;
        }
        Ok(())
    }
}
