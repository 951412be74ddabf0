//! Hugging Face GPT-2 interop, checked against a fixture made by transformers' own
//! `GPT2LMHeadModel` (`tests/fixtures/hf/make_fixture.py`): its `save_pretrained` folder loads
//! into Ember and gives transformers' logits, Ember exports it back tensor for tensor (the
//! script's `--check-export` loads such an export in transformers and compares its logits),
//! `ember import --hf` makes a run that generates and fine-tunes (GPT-2's tokenizer for GPT-2's
//! vocabulary, also from the Hub's naming), and every bad folder is one line that leaves nothing.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use common::{cpu, out_err, values};
use ember_model::{Activation, GptConfig, from_hf, to_hf};
use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's config.json and model.safetensors.
fn tiny_gpt2() -> (String, Vec<u8>) {
    let dir = fixture().join("tiny-gpt2");
    let config = String::from_utf8(read(dir.join("config.json"))).unwrap();
    (config, read(dir.join("model.safetensors")))
}

#[test]
fn a_save_pretrained_folder_gives_transformers_logits() {
    let (config_json, weights) = tiny_gpt2();
    let (model, config) = from_hf(&config_json, &weights, &cpu()).unwrap();
    assert_eq!(config.activation, Activation::GeluTanh);
    assert!(config.tie_embeddings && config.bias && !config.head_bias);
    assert_eq!(
        (config.vocab_size, config.d_model, config.n_layer),
        (96, 32, 2)
    );

    let expected: serde_json::Value =
        serde_json::from_slice(&read(fixture().join("expected.json"))).unwrap();
    let rows = expected["tokens"].as_array().unwrap();
    let tokens: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|t| t.as_i64().unwrap()))
        .collect();
    let t = tokens.len() / rows.len();
    let want: Vec<f64> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .flat_map(|p| p.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(tokens, [rows.len(), t]), &cpu());
    let got = values(model.forward(input));
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-5,
        "largest logit difference from transformers: {worst:e}"
    );
}

#[test]
fn an_export_is_the_folder_transformers_saved() {
    let (config_json, weights) = tiny_gpt2();
    let (model, config) = from_hf(&config_json, &weights, &cpu()).unwrap();
    let (exported_json, exported) = to_hf(&model, &config).unwrap();
    let (a, b) = (
        SafeTensors::deserialize(&weights).unwrap(),
        SafeTensors::deserialize(&exported).unwrap(),
    );
    let (mut names_a, mut names_b) = (a.names(), b.names());
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b);
    for name in names_a {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert_eq!(
            x.data(),
            y.data(),
            "{name}: values differ after the round trip"
        );
    }
    let (original, written): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&config_json).unwrap(),
        serde_json::from_str(&exported_json).unwrap(),
    );
    for key in [
        "model_type",
        "architectures",
        "vocab_size",
        "n_embd",
        "n_layer",
        "n_head",
        "n_positions",
        "activation_function",
        "layer_norm_epsilon",
        "tie_word_embeddings",
    ] {
        assert_eq!(original[key], written[key], "config.json {key}");
    }
    // And the export reads back as the same model.
    let (_, again) = from_hf(&exported_json, &exported, &cpu()).unwrap();
    assert_eq!(again, config);
}

/// `ember import --hf FOLDER --run RUN` with `extra` arguments.
fn import_hf(folder: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let (folder, run) = (folder.to_str().unwrap(), run.to_str().unwrap());
    common::ember_bin(&["import", "--hf", folder, "--run", run])
        .args(extra)
        .output()
        .unwrap()
}

/// The fixture's 96 tokens as characters: printable ASCII and the newline.
fn char_vocabulary(dir: &Path) -> PathBuf {
    let chars: String = (32u8..127).map(char::from).chain(['\n']).collect();
    let path = dir.join("vocab.txt");
    std::fs::write(&path, chars).unwrap();
    path
}

#[test]
fn import_hf_makes_a_run_that_generates_and_fine_tunes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("tuned");
    let vocab = char_vocabulary(dir.path());
    let recipe = dir.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        "[model]\ndropout = 0.1\n[train]\nlr = 3e-5\nmin_lr = 3e-6\nbatch_size = 2\ngrad_accum = 2\neval_iters = 1\n",
    )
    .unwrap();
    // Fine-tuning text over the vocabulary's characters.
    let data = dir.path().join("text.txt");
    let chars = std::fs::read_to_string(&vocab).unwrap();
    std::fs::write(
        &data,
        format!("{chars}To be, or not to be, that is the question.\n").repeat(30),
    )
    .unwrap();
    let o = import_hf(
        &fixture().join("tiny-gpt2"),
        &run,
        &[
            "--vocab",
            vocab.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--config",
            recipe.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", out_err(&o));
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    for line in [
        "activation = \"gelu_tanh\"",
        "dropout = 0.1",
        "grad_accum = 2",
        "d_model = 32",
    ] {
        assert!(config.contains(line), "{line} not in {config}");
    }

    let sample = common::generate_bin(&["--run", run.to_str().unwrap(), "--prompt", "To"])
        .args(["--max-tokens", "10", "--seed", "1"])
        .output()
        .unwrap();
    assert!(sample.status.success(), "{}", out_err(&sample));
    assert!(String::from_utf8_lossy(&sample.stdout).starts_with("To"));
    let tuned = common::train_bin(&["--resume", run.to_str().unwrap(), "--steps", "3"])
        .output()
        .unwrap();
    assert!(tuned.status.success(), "{}", out_err(&tuned));
    assert!(out_err(&tuned).contains("3 steps x 4 seqs (2 micro-batches of 2)"));
    assert!(run.join("checkpoints/step-0000003/model.bpk").exists());
}

/// A GPT-2-vocabulary model (tiny otherwise) as a Hugging Face folder under `dir`; with the Hub's
/// naming (no `transformer.` prefix, the attention masks stored) when `hub`.
fn gpt2_vocabulary_folder(dir: &Path, hub: bool) -> PathBuf {
    let config = GptConfig::new(50_257, 8, 1, 2, 16)
        .with_tie_embeddings(true)
        .with_head_bias(false)
        .with_activation(Activation::GeluTanh);
    let model = config.init(&cpu());
    let (json, mut weights) = to_hf(&model, &config).unwrap();
    if hub {
        let file = SafeTensors::deserialize(&weights).unwrap();
        let mask: Vec<u8> = vec![0; 16 * 16 * 4];
        let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| (name.trim_start_matches("transformer.").to_string(), view))
            .collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![1, 1, 16, 16],
            &mask,
        )
        .unwrap();
        tensors.push(("h.0.attn.bias".into(), view));
        weights = safetensors::serialize(tensors, None).unwrap();
    }
    let folder = dir.join(if hub { "hub" } else { "saved" });
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("config.json"), json).unwrap();
    std::fs::write(folder.join("model.safetensors"), weights).unwrap();
    folder
}

#[test]
fn gpt2s_vocabulary_imports_with_gpt2s_tokenizer_from_either_naming() {
    let dir = tempfile::tempdir().unwrap();
    for hub in [false, true] {
        let folder = gpt2_vocabulary_folder(dir.path(), hub);
        let run = dir.path().join(format!("run-{hub}"));
        let o = import_hf(&folder, &run, &[]);
        assert!(o.status.success(), "hub naming {hub}: {}", out_err(&o));
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(config.contains("tokenizer = \"gpt2\""), "{config}");
        let sample = common::generate_bin(&["--run", run.to_str().unwrap(), "--prompt", "Hello"])
            .args(["--max-tokens", "5", "--seed", "1"])
            .output()
            .unwrap();
        assert!(sample.status.success(), "{}", out_err(&sample));
        assert!(String::from_utf8_lossy(&sample.stdout).starts_with("Hello"));
    }
}

/// `ember import --hf` of the fixture changed by `damage`: it must fail with one line holding
/// `expect`, and create no run folder.
fn refused(damage: impl Fn(&Path), expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    std::fs::create_dir(&folder).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join("tiny-gpt2").join(name), folder.join(name)).unwrap();
    }
    damage(&folder);
    let vocab = char_vocabulary(dir.path());
    let run = dir.path().join("run");
    let o = import_hf(&folder, &run, &["--vocab", vocab.to_str().unwrap()]);
    let err = out_err(&o);
    assert!(!o.status.success(), "accepted: {err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(!run.exists(), "a run folder was left behind");
}

fn edit_config(folder: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&read(path.clone())).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn bad_hugging_face_folders_are_one_line_each() {
    refused(
        |f| {
            edit_config(f, |c| {
                c["model_type"] = "llama".into();
                c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            })
        },
        "model_type \"llama\" (LlamaForCausalLM) is not GPT-2",
    );
    refused(
        |f| edit_config(f, |c| c["n_positions"] = 8.into()),
        "transformer.wpe.weight: expected F32 [8, 32], found F32 [16, 32]",
    );
    refused(
        |f| edit_config(f, |c| c["n_embd"] = 48.into()),
        "the model's shape needs 62016 parameters but the file holds 29056 values",
    );
    refused(
        |f| edit_config(f, |c| c["n_layer"] = 1.into()),
        "transformer.h.1.attn.c_attn.bias (and 11 more) belongs to no part of a GPT-2",
    );
    refused(
        |f| edit_config(f, |c| c["activation_function"] = "relu".into()),
        "activation_function \"relu\"",
    );
    refused(
        |f| {
            let path = f.join("model.safetensors");
            let bytes = read(path.clone());
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let kept: Vec<_> = file
                .tensors()
                .into_iter()
                .filter(|(name, _)| name != "transformer.h.1.mlp.c_fc.bias")
                .collect();
            std::fs::write(path, safetensors::serialize(kept, None).unwrap()).unwrap();
        },
        "transformer.h.1.mlp.c_fc.bias",
    );
    refused(
        |f| std::fs::remove_file(f.join("model.safetensors")).unwrap(),
        "model.safetensors: cannot read",
    );
    refused(
        |f| std::fs::write(f.join("config.json"), "{\"model_type\": \"gpt2\"}").unwrap(),
        "not a GPT-2 config: missing field",
    );
}

#[test]
fn a_vocabulary_that_does_not_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("v.txt");
    std::fs::write(&vocab, "abc").unwrap();
    let run = dir.path().join("r");
    let from = fixture().join("tiny-gpt2");
    let o = import_hf(&from, &run, &["--vocab", vocab.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        out_err(&o).contains("the vocabulary has 3 characters but the model's embedding has 96"),
        "{}",
        out_err(&o)
    );
    assert!(!run.exists());
    // Without a vocabulary: not GPT-2's, and no tokenizer.json in the folder.
    let o = import_hf(&from, &run, &[]);
    assert!(
        out_err(&o).contains("are not GPT-2's 50257"),
        "{}",
        out_err(&o)
    );
}
