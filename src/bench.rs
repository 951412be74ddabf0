//! `ember bench`: trains a preset for a fixed number of steps after a warm-up and reports where
//! the time goes, against this machine's measured matmul ceiling.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use ember_kernels::fused::with_workers_polling_on;
use ember_kernels::ops;
use ember_train::config::ConfigBuilder;
use ember_train::data::Data;
use ember_train::sys::peak_rss_bytes;
use ember_train::{PhaseTimes, Start, Trainer};
use serde::Serialize;

use crate::Result;
use crate::backend;
use crate::cluster::Joined;

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchSpec {
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value = "auto", help = crate::backend::DEVICE_HELP)]
    pub device: String,
    #[arg(long, default_value_t = 0, help = crate::backend::THREADS_HELP)]
    pub threads: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Config overrides, as `train --set`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub ember_version: &'static str,
    pub cpu: String,
    pub backend: String,
    pub matmul_engine: Option<String>,
    /// The fused kernels' instruction set (`EMBER_SIMD` or the processor's widest).
    pub kernels_isa: Option<&'static str>,
    pub rayon_threads: usize,
    pub blas_threads: Option<usize>,
    /// Processes training together (MPI ranks; 1 without a launcher), each with the threads above.
    pub ranks: usize,
    pub preset: String,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub context: usize,
    pub batch_size: usize,
    /// Micro-batches of `batch_size` per step.
    pub grad_accum: usize,
    pub params: usize,
    pub warmup_steps: usize,
    pub timed_steps: usize,
    pub median_step_ms: f64,
    pub p10_step_ms: f64,
    pub p90_step_ms: f64,
    /// Tokens per second at the median step time.
    pub tokens_per_sec: f64,
    /// Median of each phase (rank 0's); `other` is the rest of the step.
    pub phases_ms: PhaseTimes,
    pub other_ms: f64,
    /// The gradients' averaging over the ranks as a share of the median step (`phases_ms.comm`).
    pub comm_share: f64,
    /// 6 × matmul parameters × tokens + 12 × layers × d × context × tokens (nanoGPT's estimate).
    pub gflop_per_step: f64,
    pub achieved_gflops: f64,
    /// Best of square f32 products through the Linear layers' engine, all cores (summed over
    /// the ranks, which measure it at the same time).
    pub matmul_ceiling_gflops: f64,
    /// `achieved_gflops / matmul_ceiling_gflops`.
    pub mfu: f64,
    /// Peak resident memory of the process up to the end of the timed steps.
    pub peak_rss_bytes: u64,
}

/// Measures as `spec` says, as one of the ranks `joined` (all of them run it; rank 0's figures
/// are the report).
pub fn run(spec: &BenchSpec, joined: &Joined) -> Result<BenchReport> {
    let mut builder = ConfigBuilder::preset(&spec.preset)?;
    let out = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
    let fixed = [
        format!("train.steps={}", spec.warmup + spec.steps),
        "train.eval_iters=0".into(),
        "train.sample_tokens=0".into(),
        "train.checkpoint_every=0".into(),
        format!("run.out={:?}", out.display().to_string()),
    ];
    for set in fixed.iter().chain(&spec.sets) {
        builder = builder.set(set, "--set")?;
    }
    let config = builder.build()?;
    let selected = backend::select(&spec.device, joined.threads(spec.threads))?;

    let data = Data::load(&config.data, config.model.context, None)?;
    let vocab = config.model_vocab(&data.tokenizer)?;
    let mut trainer = Trainer::start(
        config.clone(),
        data,
        selected.device.clone(),
        Start::New { stem: &spec.preset },
        joined.collective.clone(),
    )?;
    let mut times = Vec::with_capacity(spec.steps);
    let mut phases = Vec::with_capacity(spec.steps);
    selected.run(|| -> Result<()> {
        for step in 1..=spec.warmup + spec.steps {
            let start = Instant::now();
            let update = trainer.step(step)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if step > spec.warmup {
                times.push(ms);
                phases.push(update.phases);
            }
        }
        Ok(())
    })?;
    if joined.collective.is_root() {
        let _ = std::fs::remove_dir_all(&out);
    }
    // Read before the ceiling's large matrices, so that it is the training's peak.
    let peak_rss_bytes = peak_rss_bytes();
    let mut ceiling = [matmul_ceiling(&selected.device)];
    joined.collective.sum_f64(&mut ceiling);
    let ceiling = ceiling[0];

    let m = &config.model;
    let gpt = m.gpt(vocab);
    let tokens = (config.train.sequences_per_step() * m.context) as f64;
    let flops_per_token =
        6.0 * gpt.num_matmul_params() as f64 + 12.0 * (m.n_layer * m.d_model * m.context) as f64;
    let median_step_ms = percentile(&times, 0.5);
    let phase =
        |f: fn(&PhaseTimes) -> f64| percentile(&phases.iter().map(f).collect::<Vec<_>>(), 0.5);
    let phases_ms = PhaseTimes {
        data: phase(|p| p.data),
        forward: phase(|p| p.forward),
        backward: phase(|p| p.backward),
        comm: phase(|p| p.comm),
        clip: phase(|p| p.clip),
        optimizer: phase(|p| p.optimizer),
    };
    let gflop_per_step = flops_per_token * tokens / 1e9;
    let achieved_gflops = gflop_per_step / (median_step_ms / 1e3);
    Ok(BenchReport {
        ember_version: env!("CARGO_PKG_VERSION"),
        cpu: cpu_model(),
        backend: selected.name,
        matmul_engine: selected.matmul,
        kernels_isa: selected.kernels,
        rayon_threads: selected.threads.rayon,
        blas_threads: selected.threads.blas,
        ranks: joined.collective.size(),
        preset: spec.preset.clone(),
        d_model: m.d_model,
        n_layer: m.n_layer,
        n_head: m.n_head,
        context: m.context,
        batch_size: config.train.batch_size,
        grad_accum: config.train.grad_accum,
        params: gpt.num_params(),
        warmup_steps: spec.warmup,
        timed_steps: spec.steps,
        median_step_ms,
        p10_step_ms: percentile(&times, 0.1),
        p90_step_ms: percentile(&times, 0.9),
        tokens_per_sec: tokens / (median_step_ms / 1e3),
        other_ms: median_step_ms - phases_ms.total(),
        comm_share: phases_ms.comm / median_step_ms,
        phases_ms,
        gflop_per_step,
        achieved_gflops,
        matmul_ceiling_gflops: ceiling,
        mfu: achieved_gflops / ceiling,
        peak_rss_bytes,
    })
}

/// GFLOP/s of the best of a few large square products on `device`, with every core, through
/// the engine the model's Linear layers use (`ember_kernels::ops::linear`: the fused kernel on
/// the CPU backends, the backend's matmul elsewhere).
pub fn matmul_ceiling(device: &Device) -> f64 {
    let mut best: f64 = 0.0;
    for n in [1024, 2048] {
        let a = Tensor::<2>::random([n, n], Distribution::Default, device);
        let b = Tensor::<2>::random([n, n], Distribution::Default, device);
        // As the steps run them: with the other workers polling for work.
        let product = || {
            with_workers_polling_on(device, || {
                ops::linear(a.clone(), b.clone(), None).into_data()
            })
        };
        let _ = product();
        for _ in 0..8 {
            let start = Instant::now();
            let _ = product();
            let secs = start.elapsed().as_secs_f64();
            best = best.max(2.0 * (n * n * n) as f64 / secs / 1e9);
        }
    }
    best
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.phases_ms;
        writeln!(
            f,
            "{} on {} ({}{}; {} rayon threads{})",
            self.preset,
            self.backend,
            self.matmul_engine.as_deref().unwrap_or("device kernels"),
            self.kernels_isa
                .map(|isa| format!("; kernels {isa}"))
                .unwrap_or_default(),
            self.rayon_threads,
            match self.ranks {
                1 => String::new(),
                n => format!(" in each of {n} MPI ranks"),
            }
        )?;
        writeln!(
            f,
            "  {} params, batch {}{} x context {}, {} timed steps after {} warm-up",
            self.params,
            self.batch_size,
            if self.grad_accum > 1 {
                format!(" x {} micro-batches", self.grad_accum)
            } else {
                String::new()
            },
            self.context,
            self.timed_steps,
            self.warmup_steps
        )?;
        writeln!(
            f,
            "  {:.0} tokens/s | step median {:.2} ms (p10 {:.2}, p90 {:.2})",
            self.tokens_per_sec, self.median_step_ms, self.p10_step_ms, self.p90_step_ms
        )?;
        writeln!(
            f,
            "  phases (median ms): data {:.2} | forward {:.2} | backward {:.2} | {}clip {:.2} | optimizer {:.2} | other {:.2}",
            p.data,
            p.forward,
            p.backward,
            match self.ranks {
                1 => String::new(),
                _ => format!(
                    "all-reduce {:.2} ({:.1}% of the step) | ",
                    p.comm,
                    100.0 * self.comm_share
                ),
            },
            p.clip,
            p.optimizer,
            self.other_ms
        )?;
        writeln!(
            f,
            "  {:.2} GFLOP/step -> {:.1} GFLOP/s = {:.1}% of the {:.1} GFLOP/s matmul ceiling",
            self.gflop_per_step,
            self.achieved_gflops,
            100.0 * self.mfu,
            self.matmul_ceiling_gflops
        )?;
        write!(
            f,
            "  peak RSS {:.1} MiB",
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}
