//! The memory scope around each training step: it records the step's high-water mark and what
//! it kept, trims every few steps, reads the device pool on GPU backends, and reports a leak.

use std::fmt;

use burn::tensor::{Device, MemoryPoolUsage};
use ember_train::config::{LeakPolicy, MemorySection};
use ember_train::metrics::{DeviceFigures, MemoryFigures, StepRecord};
use ember_train::sys::{mib, peak_rss_bytes, rss_bytes};
use ember_train::{StepHooks, TrainError};
use tracing::warn;

use super::{Counters, ReusingAllocator, Trimmed, spare_host_bytes, trim};

/// Spare memory beyond the largest step's that is not worth a trim: glibc's heap keeps some free
/// space of its own between chunks.
const SPARE_SLACK: usize = 16 << 20;

/// Wraps each training step: records its high-water mark and the bytes it kept, trims every
/// `trim_every` steps when there is more to give back than a step takes again, and after
/// `warmup_steps` holds every step to `tolerance_bytes` of kept memory. Register it first among
/// the hooks so that it opens the step before anything else.
pub struct MemoryScope {
    config: MemorySection,
    counters: &'static Counters,
    device: Device,
    step: usize,
    live_at_begin: usize,
    trimmed_since_log: u64,
    device_trimmed_since_log: u64,
    /// The device pool (GPU backends): highest bytes reserved, and the last usage read.
    device_peak_reserved: u64,
    device_last: Option<MemoryPoolUsage>,
    /// GPU backends: the live bytes after each trim since the last one that did not grow.
    trim_baselines: Vec<usize>,
    /// The most a step has allocated on top of what it started with: the freed memory the
    /// next step will ask for again.
    largest_step: usize,
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
            device_trimmed_since_log: 0,
            device_peak_reserved: 0,
            device_last: None,
            trim_baselines: Vec::new(),
            largest_step: 0,
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
            device: self.device_last.map(|u| DeviceMemory {
                peak_reserved: self.device_peak_reserved,
                in_use: u.bytes_in_use,
                reserved: u.bytes_reserved,
            }),
            after_warmup: self.after_warmup.map(|s| (s.step, s.live as u64, s.rss)),
            last: self.last.map(|s| (s.step, s.live as u64, s.rss)),
            leaky_steps: self.leaky_steps,
        }
    }
}

impl StepHooks for MemoryScope {
    fn before_checkpoint(&mut self, _step: usize) {
        // The checkpoint's own large blocks are not the steps': kept, they would add to its peak.
        // Its records are copies made while the steps' freed memory sits in glibc's heap: given
        // back first, it does not add to the peak either (GPT-2 124M at batch 4 x context 64:
        // 2,508-2,521 -> 2,433-2,439 MiB, BENCHMARKS.md).
        ReusingAllocator::system().pause();
        self.trim();
    }

    fn begin_step(&mut self, step: usize) {
        ReusingAllocator::system().resume();
        self.step = step;
        self.live_at_begin = self.counters.stats().live;
        self.counters.reset_window_peak();
    }

    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), TrainError> {
        let step = self.step;
        let window_peak = self.counters.stats().window_peak;
        self.largest_step = self
            .largest_step
            .max(window_peak.saturating_sub(self.live_at_begin));
        let due = self.config.trim_every > 0 && step.is_multiple_of(self.config.trim_every);
        let trimmed = due && self.worth_trimming();
        if trimmed {
            let given_back = self.trim();
            tracing::debug!(
                step,
                host = given_back.host,
                device = given_back.device,
                "trim"
            );
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
        // GPU backends: the device pool, read after the trim.
        let device = self.device.memory_pool_usage().map(|usage| {
            self.device_peak_reserved = self.device_peak_reserved.max(usage.bytes_reserved);
            self.device_last = Some(usage);
            DeviceFigures {
                device_bytes_in_use: usage.bytes_in_use,
                device_bytes_reserved: usage.bytes_reserved,
                device_trimmed_bytes: self.device_trimmed_since_log,
            }
        });
        record.memory = Some(MemoryFigures {
            live_bytes: stats.live as u64,
            peak_live_bytes: stats.peak as u64,
            step_peak_bytes: stats.window_peak as u64,
            kept_bytes: kept,
            allocations: stats.allocs,
            // Bytes given back since the previous logged line, so that none go unreported.
            trimmed_bytes: self.trimmed_since_log,
            device,
        });
        if record.logged {
            self.trimmed_since_log = 0;
            self.device_trimmed_since_log = 0;
        }
        let leak = if !self.counters.is_active() || self.steps_seen <= self.config.warmup_steps {
            None
        } else if self.device_last.is_none() {
            (kept > self.config.tolerance_bytes as i64).then(|| {
                format!(
                    "step {step} kept {kept} bytes (live {} -> {}, tolerance {}); something made in this step outlives it",
                    self.live_at_begin, stats.live, self.config.tolerance_bytes
                )
            })
        } else if trimmed {
            self.gpu_baseline(step, stats.live)
        } else {
            None
        };
        if let Some(report) = leak {
            self.leaky_steps += 1;
            match self.config.leak_policy {
                LeakPolicy::Warn => warn!("{report}"),
                LeakPolicy::Fail => return Err(TrainError::Hook(format!("memory: {report}"))),
            }
        }
        Ok(())
    }
}

impl MemoryScope {
    /// Whether a due trim has anything to give back that the next step will not take again.
    ///
    /// Between steps the heap holds what the last step freed, and the next step asks for the
    /// same again: handing that back only makes the next step fault it all in (a small-preset
    /// step after a trim took 67 ms against 53, GPT-2's refaults its 154 MB embedding gradient;
    /// BENCHMARKS.md). So on the CPU a trim is skipped while the spare memory is no more than the
    /// largest step's own; memory left over by an evaluation or a sample beyond that is still
    /// given back, and a checkpoint trims before it writes whatever this says. GPU backends
    /// always trim: their leak rule reads the live bytes after each trim.
    fn worth_trimming(&self) -> bool {
        if self.device_last.is_some() {
            return true;
        }
        spare_host_bytes().is_none_or(|spare| spare > self.largest_step + SPARE_SLACK)
    }

    /// Gives freed memory back ([`trim`]), counted in the next logged step's trimmed bytes.
    fn trim(&mut self) -> Trimmed {
        let given_back = trim(&self.device);
        self.trimmed_since_log += given_back.host;
        self.device_trimmed_since_log += given_back.device;
        given_back
    }

    /// The leak rule of GPU backends, applied after each trim to the live bytes it left.
    ///
    /// Their runtimes keep host-side records of device allocations until the pool's cleanup,
    /// and compile a kernel (kept in a cache) the first time a shape appears: on lavapipe a step
    /// keeps about 100 KB until the next trim, and the first sample keeps 5.7 MB for good. Neither
    /// is a leak, so a step is not judged alone there; a leak is the live heap after a trim
    /// rising by more than the steps' tolerance at three trims in a row, which a cache filled
    /// once never does.
    fn gpu_baseline(&mut self, step: usize, live: usize) -> Option<String> {
        const RISES: usize = 3;
        let previous = self.trim_baselines.last().copied();
        self.trim_baselines.push(live);
        // The tolerance is per step, so a trim cycle may keep `trim_every` times as much: on
        // lavapipe the live heap after a trim wanders by about 80 KB from one trim to the next.
        let allowance = self.config.tolerance_bytes as usize * self.config.trim_every;
        let rising = previous.is_some_and(|p| live > p + allowance);
        if !rising {
            self.trim_baselines.clear();
            self.trim_baselines.push(live);
            return None;
        }
        let n = self.trim_baselines.len();
        (n > RISES).then(|| {
            let first = self.trim_baselines[n - 1 - RISES];
            format!(
                "the live heap after each of the last {RISES} trims grew by more than {allowance} bytes (step {step}: {first} -> {live}); something made in these steps outlives them"
            )
        })
    }
}

/// The end-of-run memory report.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySummary {
    pub peak_rss: u64,
    pub peak_live: u64,
    /// The device pool, on backends that report one (GPUs).
    pub device: Option<DeviceMemory>,
    /// (step, live bytes, RSS) at the end of the warm-up.
    pub after_warmup: Option<(usize, u64, u64)>,
    /// (step, live bytes, RSS) at the last step.
    pub last: Option<(usize, u64, u64)>,
    pub leaky_steps: usize,
}

/// A device memory pool at the end of a run, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub peak_reserved: u64,
    pub in_use: u64,
    pub reserved: u64,
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
        write!(
            f,
            "memory: peak RSS {}, peak live {}",
            mib(self.peak_rss),
            mib(self.peak_live)
        )?;
        if let (Some((ws, wl, wr)), Some((ls, ll, lr))) = (self.after_warmup, self.last) {
            write!(
                f,
                " | after warm-up (step {ws}): live {}, RSS {} | step {ls}: live {} ({:+} bytes), RSS {} ({:+.2}%)",
                mib(wl),
                mib(wr),
                mib(ll),
                ll as i64 - wl as i64,
                mib(lr),
                100.0 * self.rss_growth().unwrap_or(0.0)
            )?;
        }
        if let Some(d) = self.device {
            write!(
                f,
                " | device: peak reserved {}, at the end in use {}, reserved {}",
                mib(d.peak_reserved),
                mib(d.in_use),
                mib(d.reserved)
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
