//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use burn::module::{ModuleMapper, Param};
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use ember_train::cluster::Solo;
use ember_train::config::ConfigBuilder;
use ember_train::data::Data;
use ember_train::rng::SplitMix64;
use ember_train::{RunConfig, Start, Trainer};
use std::sync::Arc;

/// The CPU device the tests run on, through the same selection the binaries use (which also
/// links the BLAS engine): ndarray, or `EMBER_TEST_DEVICE` (e.g. `flex` in a `--features flex`
/// build).
pub fn cpu() -> Device {
    let name = std::env::var("EMBER_TEST_DEVICE").unwrap_or_else(|_| "ndarray".into());
    ember::backend::select(&name, 0)
        .expect("the test device is compiled in")
        .device
}

/// That describing `model`'s parameters (`ember_model::parameters`, what a checkpoint is checked
/// against before it is loaded) initializes none of them, and that what it says of each, dtype
/// and shape, is what the parameter is once initialized.
pub fn parameters_are_described_without_initializing(model: &ember_model::Gpt) {
    let lazily = ember_model::parameters(model);
    assert!(lazily.len() > 10);
    let mut initialized = Vec::new();
    ember_model::with_values(model, |p, values| {
        assert_eq!(values.dtype(), p.dtype, "{}", p.path);
        initialized.push(p);
    });
    assert_eq!(lazily, initialized);
    // Burn's parameters that were read are initialized now; before, they were not.
    assert!(model.wte.weight.is_initialized());
}

/// A new run of `config` on `text`, on the test CPU device.
pub fn new_trainer(config: RunConfig, text: &str) -> Trainer {
    start_on(config, text, cpu(), None)
}

/// A run of `config` on `text` on `device`: new, or resumed from `checkpoint`.
pub fn start_on(
    config: RunConfig,
    text: &str,
    device: Device,
    checkpoint: Option<&Path>,
) -> Trainer {
    let (saved, start) = match checkpoint {
        Some(dir) => {
            let files = ember_train::checkpoint::load(dir).expect("the checkpoint loads");
            let (_, tokenizer) = files.config_and_tokenizer(dir).expect("its tokenizer");
            let checkpoint = dir.to_path_buf();
            (
                Some(tokenizer),
                Start::Resume {
                    checkpoint,
                    files: Box::new(files),
                },
            )
        }
        None => (None, Start::New { stem: "test" }),
    };
    let data = Data::from_text(text, &config.data, config.model.context, saved).expect("the data");
    Trainer::start(config, data, device, start, Arc::new(Solo)).expect("the run starts")
}

/// A tensor's values as f64, whatever its dtype.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Replaces every float parameter with uniform values in `[-scale, scale]` (LayerNorm scales
/// included), so that comparisons are not hidden by GPT-2's tiny initial weights.
pub struct Randomize {
    pub rng: SplitMix64,
    pub scale: f64,
}

impl ModuleMapper for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            let (shape, device) = (t.shape(), t.device());
            let n = shape.num_elements();
            let v: Vec<f64> = (0..n)
                .map(|_| (self.rng.unit_f64() * 2.0 - 1.0) * self.scale)
                .collect();
            let (dtype, grad): (FloatDType, bool) = (t.dtype().into(), t.is_require_grad());
            Tensor::<D>::from_data(TensorData::new(v, shape), &device)
                .cast(dtype)
                .set_require_grad(grad)
        })
    }
}

/// The tiny preset writing its runs under `out`, with `sets` (`section.key=value`) on top.
pub fn tiny_config(out: &Path, sets: &[&str]) -> RunConfig {
    let out = format!("run.out={:?}", out.display().to_string());
    sets.iter()
        .copied()
        .chain([out.as_str()])
        .try_fold(ConfigBuilder::preset("tiny").unwrap(), |b, set| {
            b.set(set, "test")
        })
        .and_then(ConfigBuilder::build)
        .unwrap()
}

/// A finished command's stdout and stderr together, for assertion messages.
pub fn out_err(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `train` binary with `args`.
pub fn train_bin(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_train"));
    cmd.args(args);
    cmd
}

/// The `generate` binary with `args`.
pub fn generate_bin(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_generate"));
    cmd.args(args);
    cmd
}

/// The `ember` binary with `args`.
pub fn ember_bin(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
    cmd.args(args);
    cmd
}

/// A quick tiny-preset run: 80 steps of 8 sequences, no evaluation or samples, every step logged.
pub const TINY: [&str; 12] = [
    "--preset",
    "tiny",
    "--steps",
    "80",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.eval_iters=0",
    "--set",
    "train.log_every=1",
    "--set",
    "train.sample_tokens=0",
];

/// A finished 20-step [`TINY`] run named `r` under `out`, with `extra` arguments.
pub fn trained_run(out: &Path, extra: &[&str]) -> PathBuf {
    let o = train_bin(&TINY)
        .args([
            "--steps",
            "20",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "run.name=\"r\"",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
    out.join("r")
}

/// (step, loss) of every step line of a run's `metrics.jsonl` (event lines have no loss).
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    metric(run, "loss")
}

/// (step, value) of every line of a run's `metrics.jsonl` that has `key` (`val_loss` only on
/// evaluated steps).
pub fn metric(run: &Path, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v[key].as_f64()?)))
        .collect()
}

/// Makes `cmd`'s writes fail past `bytes` per file (EFBIG), as a full disk makes them fail with
/// ENOSPC; SIGXFSZ is ignored so that the write returns the error instead of killing the process.
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `train --resume RUN --steps STEPS` and checks that it succeeded, continuing after step
/// `after`.
pub fn resumes(run: &str, steps: &str, after: usize) {
    let o = train_bin(&["--resume", run, "--steps", steps])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
    let log = out_err(&o);
    assert!(
        log.contains(&format!("resuming after step {after}")),
        "{log}"
    );
}
