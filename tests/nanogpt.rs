//! nanoGPT interop, checked against fixtures made by nanoGPT's own `model.py`
//! (`tests/fixtures/nanogpt/make_fixture.py`): a nanoGPT state dict loads into Ember and gives
//! nanoGPT's logits, an Ember model with nanoGPT's architecture exports exactly nanoGPT's state
//! dict (names, shapes, the tied head), and `ember import` turns the file into a run folder that
//! `generate` samples from and `train --resume` fine-tunes.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use common::{cpu, out_err, values};
use ember_model::{from_safetensors, to_safetensors};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nanogpt")
        .join(name)
}

/// Ember's logits for the fixture's input, and nanoGPT's.
fn logits_of(variant: &str) -> (Vec<f64>, Vec<f64>) {
    let model_bytes = std::fs::read(fixture(&format!("{variant}.safetensors"))).unwrap();
    let (model, config, _) = from_safetensors(&model_bytes, &cpu(), None).unwrap();
    assert!(
        config.tie_embeddings && !config.head_bias,
        "{variant}: {config:?}"
    );
    assert_eq!(config.bias, variant == "bias");
    let expected_bytes =
        std::fs::read(fixture(&format!("{variant}-expected.safetensors"))).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let idx: Vec<i64> = expected
        .tensor("idx")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<f64> = expected
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(idx, [2, 8]), &cpu());
    (values(model.forward(tokens)), want)
}

#[test]
fn nanogpt_state_dicts_load_and_give_nanogpts_logits() {
    for variant in ["bias", "nobias"] {
        let (got, want) = logits_of(variant);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5,
                "{variant} logit {i}: Ember {g}, nanoGPT {w}"
            );
        }
    }
}

#[test]
fn exports_of_nanogpt_architecture_are_nanogpt_state_dicts() {
    for variant in ["bias", "nobias"] {
        let original = std::fs::read(fixture(&format!("{variant}.safetensors"))).unwrap();
        let (model, config, _) = from_safetensors(&original, &cpu(), None).unwrap();
        let exported = to_safetensors(&model, &config, Default::default()).unwrap();
        let (a, b) = (
            SafeTensors::deserialize(&original).unwrap(),
            SafeTensors::deserialize(&exported).unwrap(),
        );
        let mut names_a = a.names();
        let mut names_b = b.names();
        names_a.sort();
        names_b.sort();
        // What nanoGPT's load_state_dict(strict=True) checks: the same keys, the same shapes.
        assert_eq!(names_a, names_b, "{variant}");
        for name in names_a {
            let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
            assert_eq!(x.shape(), y.shape(), "{variant} {name}");
            assert_eq!(
                x.data(),
                y.data(),
                "{variant} {name}: values differ after the round trip"
            );
        }
    }
}

fn ember(args: &[&str]) -> std::process::Output {
    common::ember_bin(&[]).args(args).output().unwrap()
}

#[test]
fn ember_import_makes_a_run_that_generates_and_fine_tunes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("imported");
    let run_s = run.to_str().unwrap();
    // Fine-tuning text: the one the fixture's vocabulary came from.
    let data = dir.path().join("text.txt");
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    std::fs::write(&data, text.repeat(40)).unwrap();
    let from = fixture("bias.safetensors");
    let imported = ember(&[
        "import",
        "--from",
        from.to_str().unwrap(),
        "--run",
        run_s,
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", out_err(&imported));
    assert!(run.join("checkpoints/step-0000000/model.bpk").exists());

    let sample = common::generate_bin(&[])
        .args([
            "--run",
            run_s,
            "--prompt",
            "Fir",
            "--max-tokens",
            "20",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert!(sample.status.success(), "{}", out_err(&sample));
    assert!(String::from_utf8_lossy(&sample.stdout).starts_with("Fir"));

    let tuned = common::train_bin(&[])
        .args([
            "--resume",
            run_s,
            "--steps",
            "5",
            "--set",
            "train.eval_iters=1",
        ])
        .output()
        .unwrap();
    assert!(tuned.status.success(), "{}", out_err(&tuned));
    assert!(
        run.join("checkpoints/step-0000005/model.bpk").exists(),
        "{}",
        out_err(&tuned)
    );
}

#[test]
fn import_refuses_a_vocabulary_of_the_wrong_size() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("v.txt");
    std::fs::write(&vocab, "abc").unwrap();
    let run = dir.path().join("r");
    let from = fixture("nobias.safetensors");
    let out = ember(&[
        "import",
        "--from",
        from.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--vocab",
        vocab.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out_err(&out).contains("the vocabulary has 3 characters but the model's embedding has"),
        "{}",
        out_err(&out)
    );
}
