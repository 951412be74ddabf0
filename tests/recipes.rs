//! What training recipes at GPT-2's scale need, checked on the tiny preset: gradient
//! accumulation equals one batch of all its micro-batches; dropout acts in training steps only;
//! both stay bit-exact across a resume. CI also runs the first two on wgpu (lavapipe).

mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use common::{TINY, losses, out_err, train_bin};
use ember_model::GptConfig;
use ember_train::NoHooks;

/// The device's random generator is one per process: the tests that seed it and draw weights
/// from it take turns, or one's seeding lands between the other's seeding and drawing (on
/// wgpu, whose initialisation is slower, two runs then started from different weights).
static DEVICE_RNG: Mutex<()> = Mutex::new(());

fn device_rng() -> MutexGuard<'static, ()> {
    DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// The losses and final weights of a 6-step tiny run named `name` with `sets`.
fn run(out: &Path, name: &str, sets: &[&str]) -> (Vec<(u64, f64)>, Vec<f64>) {
    let name = format!("run.name={name:?}");
    let mut all = vec![
        name.as_str(),
        "train.steps=6",
        "train.eval_iters=2",
        "train.eval_every=0",
        "train.sample_tokens=0",
        "train.log_every=1",
        "train.checkpoint_every=0",
    ];
    all.extend(sets);
    let config = common::tiny_config(out, &all);
    let mut trainer = common::new_trainer(config, ember_train::corpus::TINY_SHAKESPEARE);
    trainer.train(&mut NoHooks).unwrap();
    let saved = ember::saved::SavedModel::load(trainer.run_dir(), &common::cpu()).unwrap();
    let mut weights = Vec::new();
    ember_model::with_values(&saved.model, |_, data| weights.extend(data.iter::<f64>()));
    (losses(trainer.run_dir()), weights)
}

#[test]
fn accumulated_micro_batches_equal_one_batch_of_them_all() {
    let _turn = device_rng();
    let out = tempfile::tempdir().unwrap();
    let (whole_losses, whole) = run(out.path(), "whole", &["train.batch_size=8"]);
    for (name, sets) in [
        ("two", ["train.batch_size=4", "train.grad_accum=2"]),
        ("four", ["train.batch_size=2", "train.grad_accum=4"]),
    ] {
        let (accumulated_losses, accumulated) = run(out.path(), name, &sets);
        assert_eq!(accumulated_losses.len(), whole_losses.len());
        for ((step, a), (_, b)) in accumulated_losses.iter().zip(&whole_losses) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{name}: step {step}: loss {a} accumulated, {b} in one batch"
            );
        }
        let worst = accumulated
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-5, "{name}: weights differ by up to {worst:e}");
    }
}

#[test]
fn dropout_acts_in_training_steps_only() {
    let _turn = device_rng();
    let out = tempfile::tempdir().unwrap();
    let (plain, _) = run(out.path(), "plain", &[]);
    let (dropped, _) = run(out.path(), "dropped", &["model.dropout=0.3"]);
    // The same initial model, so step 1's loss differs only by dropout.
    assert_ne!(
        plain[0].1, dropped[0].1,
        "dropout changed nothing in training"
    );

    // What evaluation and sampling run (`valid()`, a plain device) has no dropout: it gives the
    // logits of the same weights with dropout 0.
    let device = common::cpu().autodiff();
    device.seed(7);
    let model = GptConfig::new(65, 32, 2, 4, 16)
        .with_dropout(0.3)
        .init(&device);
    let ids: Vec<i64> = (0..32).map(|i| (i * 7) % 65).collect();
    let tokens = |device: &burn::tensor::Device| {
        Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [2, 16]), device)
    };
    let training = common::values(model.forward(tokens(&device)));
    let plain_device = device.clone().without_autodiff();
    let evaluated = common::values(model.valid().forward(tokens(&plain_device)));
    let mut without = model.clone();
    without.dropout = 0.0;
    for block in &mut without.blocks {
        (block.attn.dropout, block.mlp.dropout) = (0.0, 0.0);
    }
    let reference = common::values(without.valid().forward(tokens(&plain_device)));
    assert_eq!(evaluated, reference, "evaluation ran with dropout");
    assert_ne!(training, evaluated, "training ran without dropout");
}

#[test]
fn dropout_and_accumulation_resume_bit_exactly() {
    let out = tempfile::tempdir().unwrap();
    let out_s = out.path().to_str().unwrap();
    let sets = [
        "--set",
        "model.dropout=0.2",
        "--set",
        "train.grad_accum=2",
        "--set",
        "train.batch_size=4",
        "--out",
        out_s,
    ];
    let train = |name: &str, steps: &str| {
        let o = train_bin(&TINY)
            .args(sets)
            .args(["--steps", steps, "--set", &format!("run.name={name:?}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", out_err(&o));
    };
    train("whole", "12");
    train("halves", "6");
    common::resumes(out.path().join("halves").to_str().unwrap(), "12", 6);
    let (a, b) = (
        losses(&out.path().join("whole")),
        losses(&out.path().join("halves")),
    );
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "per-step losses differ after the resume");
}

#[test]
fn bad_values_are_refused_in_one_line() {
    for (set, expect) in [
        (
            "train.grad_accum=0",
            "train.grad_accum: expected a positive integer",
        ),
        (
            "model.dropout=1.0",
            "model.dropout: expected a probability 0 <= p < 1, got 1",
        ),
        (
            "model.dropout=-0.1",
            "model.dropout: expected a probability 0 <= p < 1, got -0.1",
        ),
        (
            "model.activation=\"relu\"",
            "unknown variant `relu`, expected `gelu` or `gelu_tanh`",
        ),
    ] {
        let o = train_bin(&TINY).args(["--set", set]).output().unwrap();
        let err = out_err(&o);
        assert!(!o.status.success(), "{set} accepted");
        assert!(err.contains(expect), "{set}: expected {expect:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{set}: not one line: {err}");
    }
}
