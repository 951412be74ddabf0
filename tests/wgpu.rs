//! The GPU code path, run for real: with `--features wgpu` the same model and loop train on wgpu
//! (Mesa's lavapipe in CI, a software Vulkan driver, so no GPU is needed), follow the CPU's
//! losses from the same checkpoint, record the device's memory pool, and `generate` samples on
//! it. `.ci/run` installs lavapipe and runs this file.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::{generate_bin, losses, out_err, train_bin};
use ember::memory::{GLOBAL_COUNTERS, MemoryScope, TrackingAllocator};
use ember_train::metrics::StepRecord;
use ember_train::{NoHooks, RunConfig, StepHooks, TrainError};

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

/// The allocation counters are process-wide: the tests that train in this process take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Largest difference allowed between a step's loss on wgpu and on ndarray, relative to the loss.
/// Measured on lavapipe: at most 4.7e-7 over these steps (f32 sums in another order); the bound
/// leaves room for other drivers while still failing on any real difference in the model.
const LOSS_TOLERANCE: f64 = 1e-4;

fn wgpu() -> burn::tensor::Device {
    ember::backend::select("wgpu", 0)
        .expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers libvulkan1)")
        .device
}

/// The tiny preset, small batches, logging every step; `steps` in all.
fn config(out: &Path, steps: usize) -> RunConfig {
    common::tiny_config(
        out,
        &[
            &format!("train.steps={steps}"),
            "train.batch_size=8",
            "train.eval_every=6",
            "train.eval_iters=2",
            "train.sample_every=0",
            "train.sample_tokens=30",
            "train.checkpoint_every=2",
            "train.keep_last=100",
            "train.log_every=1",
            "run.name=\"r\"",
            "memory.trim_every=4",
        ],
    )
}

#[test]
fn wgpu_follows_ndarray_from_the_same_checkpoint_and_generates() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let text = &ember_train::corpus::TINY_SHAKESPEARE[..200_000];
    // Two steps on the CPU give both backends the same weights and optimizer state.
    let mut first = common::new_trainer(config(out.path(), 2), text);
    first.train(&mut NoHooks).unwrap();
    let run = first.run_dir().to_path_buf();
    drop(first);
    let start = run.join("checkpoints/step-0000002");
    let resume_on = |device: burn::tensor::Device| {
        let mut scope = MemoryScope::new(
            config(out.path(), 12).memory,
            &GLOBAL_COUNTERS,
            device.clone(),
        );
        let mut trainer = common::start_on(config(out.path(), 12), text, device, Some(&start));
        let summary = trainer.train(&mut scope).unwrap();
        (losses(&run), summary, scope.summary())
    };
    let (cpu_losses, _, cpu_memory) = resume_on(common::cpu());
    let (gpu_losses, gpu, gpu_memory) = resume_on(wgpu());

    assert_eq!(cpu_losses.len(), 12);
    assert_eq!(gpu_losses.len(), 12);
    for ((step, a), (_, b)) in cpu_losses.iter().zip(&gpu_losses) {
        assert!(
            (a - b).abs() <= LOSS_TOLERANCE * a.abs(),
            "step {step}: ndarray {a}, wgpu {b}"
        );
    }
    let largest = cpu_losses
        .iter()
        .zip(&gpu_losses)
        .map(|((_, a), (_, b))| (a - b).abs() / a.abs())
        .fold(0.0, f64::max);
    println!("largest relative loss difference, wgpu against ndarray: {largest:.2e}");
    assert!(gpu.last_eval.is_some() && !gpu.sample.is_empty());

    // The step scope read the device pool; the CPU has none.
    assert!(cpu_memory.device.is_none());
    let device = gpu_memory.device.expect("wgpu reports its memory pool");
    assert!(device.peak_reserved > 0 && device.in_use > 0, "{device:?}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"device_bytes_reserved\""));

    // The wgpu checkpoint generates on wgpu.
    let o = generate_bin(&[
        "--run",
        run.to_str().unwrap(),
        "--device",
        "wgpu",
        "--max-tokens",
        "40",
        "--prompt",
        "ROMEO:",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).chars().count() > 40);
}

#[test]
fn the_train_binary_trains_on_wgpu_and_says_which_adapter() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let o = train_bin(&[
        "--preset",
        "tiny",
        "--steps",
        "8",
        "--device",
        "wgpu",
        "--out",
        out.path().to_str().unwrap(),
        "--set",
        "train.eval_iters=2",
        "--set",
        "train.sample_tokens=20",
    ])
    .output()
    .unwrap();
    let text = out_err(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("backend wgpu | adapter "), "{text}");
    assert!(text.contains("device: peak reserved"), "{text}");
}

#[test]
fn no_vulkan_driver_is_one_line_that_says_what_to_install() {
    // The Vulkan loader is told to look for drivers where there are none.
    let o = train_bin(&["--preset", "tiny", "--device", "wgpu"])
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--device wgpu: no graphics adapter found")
            && err.contains("mesa-vulkan-drivers")
            && err.contains("--device ndarray"),
        "{err}"
    );
}

/// Keeps 256 KiB at the end of every step after step 20, as a leaking step would.
struct LeakFrom20(Vec<Vec<u8>>);

impl StepHooks for LeakFrom20 {
    fn end_step(&mut self, record: &mut StepRecord) -> Result<(), TrainError> {
        if record.step > 20 {
            self.0.push(vec![1; 256 << 10]);
        }
        Ok(())
    }
}

#[test]
fn a_wgpu_run_keeps_nothing_and_a_leak_is_caught_at_the_trims() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let config = |steps: usize| {
        common::tiny_config(
            out.path(),
            &[
                &format!("train.steps={steps}"),
                "train.batch_size=8",
                "train.eval_every=20",
                "train.eval_iters=2",
                "train.sample_every=20",
                "train.sample_tokens=20",
                "memory.trim_every=4",
                "memory.leak_policy=\"fail\"",
            ],
        )
    };
    let text = &ember_train::corpus::TINY_SHAKESPEARE[..200_000];
    let mut trainer = common::start_on(config(48), text, wgpu(), None);
    let mut scope = MemoryScope::new(config(48).memory, &GLOBAL_COUNTERS, wgpu());
    trainer
        .train(&mut scope)
        .expect("no step keeps memory past the trims");
    assert_eq!(scope.summary().leaky_steps, 0);

    let mut trainer = common::start_on(config(60), text, wgpu(), None);
    let scope = MemoryScope::new(config(60).memory, &GLOBAL_COUNTERS, wgpu());
    let mut hooks = (LeakFrom20(Vec::new()), scope);
    match trainer.train(&mut hooks) {
        Err(TrainError::Hook(report)) => assert!(
            report.contains("step 32: ") && report.contains("after each of the last 3 trims grew"),
            "{report}"
        ),
        other => panic!("expected the leak to stop the run at step 32, got {other:?}"),
    }
}
