//! The `train` binary end to end, and its answers to bad input.

mod common;

use std::path::Path;
use std::process::Output;

use ember_kernels::cpu::Isa;

fn train(out: &Path, args: &[&str]) -> Output {
    common::train_bin(&[])
        .args(["--preset", "tiny", "--out"])
        .arg(out)
        .args([
            "--set",
            "train.sample_tokens=0",
            "--set",
            "train.eval_iters=1",
        ])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects a one-line error containing every `needle`, and no run folder.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let o = train(out.path(), args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    }
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "a run folder was created"
    );
}

#[test]
fn trains_and_writes_the_run_folder() {
    let out = tempfile::tempdir().unwrap();
    let o = train(
        out.path(),
        &[
            "--steps",
            "4",
            "--set",
            "train.eval_every=2",
            "--set",
            "run.name=r",
            "--set",
            "train.sample_tokens=5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("backend ndarray | kernels "), "{stdout}");
    assert!(stdout.contains(" | matmul Linear "), "{stdout}");
    assert!(stdout.contains("---- sample at step 4 ----"), "{stdout}");
    let run = out.path().join("r");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let config: ember_train::RunConfig = toml::from_str(&config).unwrap();
    assert_eq!((config.train.steps, config.model.d_model), (4, 64));
    let vocab = std::fs::read_to_string(run.join("vocab.json")).unwrap();
    assert!(
        ember_train::tokenizer::CharTokenizer::from_json(&vocab, "vocab.json")
            .unwrap()
            .vocab_size()
            > 20
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 4]
    );
    for key in [
        "step",
        "loss",
        "lr",
        "tokens_per_sec",
        "ms_per_step",
        "rss_bytes",
        "elapsed_s",
        "grad_norm",
    ] {
        assert!(
            lines.iter().all(|l| l[key].is_number()),
            "{key} missing: {metrics}"
        );
    }
    assert!(lines[1]["val_loss"].is_number() && lines[1]["train_loss"].is_number());
    assert!(lines[0].get("val_loss").is_none());
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let out = tempfile::tempdir().unwrap();
    assert!(
        train(out.path(), &["--steps", "1", "--set", "run.name=keep"])
            .status
            .success()
    );
    let metrics = out.path().join("keep/metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let o = train(out.path(), &["--steps", "2", "--set", "run.name=keep"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
}

#[test]
fn config_file_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[model]\nd_model = 64\nd_modl = 3\n").unwrap();
    fails_with(
        &["--config", unknown.to_str().unwrap()],
        &["unknown.toml:3:1", "model.d_modl", "unknown field `d_modl`"],
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[train]\nlr = \"fast\"\n").unwrap();
    fails_with(
        &["--config", bad.to_str().unwrap()],
        &[
            "bad.toml:2:6",
            "train.lr",
            "invalid type: string \"fast\", expected f64",
        ],
    );
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[train\nlr = 1\n").unwrap();
    fails_with(&["--config", syntax.to_str().unwrap()], &["syntax.toml:1:"]);
    fails_with(
        &["--config", "/nonexistent/x.toml"],
        &["/nonexistent/x.toml: cannot read config file"],
    );
}

#[test]
fn override_and_flag_errors_name_their_source() {
    fails_with(
        &["--set", "model.n_head=3"],
        &["--set: model.n_head: d_model (64) must be a multiple of n_head (3)"],
    );
    fails_with(
        &["--set", "train.nope=1"],
        &["--set: train.nope: unknown field `nope`"],
    );
    fails_with(
        &["--set", "train.steps=-4"],
        &["--set: train.steps: invalid value"],
    );
    fails_with(
        &["--set", "steps"],
        &["--set: `steps` is not of the form section.key=value"],
    );
    fails_with(
        &["--set", "data.val_fraction=1.5"],
        &["--set: data.val_fraction: expected a fraction"],
    );
    fails_with(&["--preset", "huge"], &["--preset: unknown preset `huge`"]);
    fails_with(
        &["--device", "flex"],
        &[
            "the flex backend is not compiled into this build",
            "--features flex",
        ],
    );
    fails_with(&["--device", "tpu"], &["--device tpu: unknown backend"]);
}

#[test]
fn an_instruction_set_the_processor_cannot_run_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let refused = |isa: &str| {
        let o = common::train_bin(&["--preset", "tiny", "--steps", "1", "--out"])
            .arg(out.path())
            .env("EMBER_SIMD", isa)
            .output()
            .unwrap();
        assert!(!o.status.success(), "EMBER_SIMD={isa} ran");
        stderr(&o)
    };
    assert_eq!(
        refused("sse9"),
        "error: EMBER_SIMD=sse9: expected one of avx512, avx2, scalar\n"
    );
    for isa in Isa::ALL.into_iter().filter(|isa| !isa.supported()) {
        let err = refused(isa.name());
        assert!(err.contains("this processor lacks"), "{err}");
    }
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn data_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        &["--data", "/nonexistent/text.txt"],
        &["/nonexistent/text.txt: cannot read the training text"],
    );
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"abc\xff\xfe").unwrap();
    fails_with(
        &["--data", binary.to_str().unwrap()],
        &["binary.txt: not UTF-8 text (invalid byte at offset 3)"],
    );
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    fails_with(
        &["--data", short.to_str().unwrap()],
        &["training split has 8 tokens but needs more than the context (64)"],
    );
}

#[test]
fn print_config_shows_every_resolved_key_and_trains_nothing() {
    let out = tempfile::tempdir().unwrap();
    let o = train(
        out.path(),
        &["--print-config", "--set", "train.lr=3e-4", "--steps", "7"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8(o.stdout).unwrap();
    // A valid config: it parses back, with the preset, the flags and the defaults resolved.
    let config: ember_train::RunConfig = toml::from_str(&printed).unwrap();
    assert_eq!(
        (config.model.d_model, config.train.lr, config.train.steps),
        (64, 3e-4, 7)
    );
    assert_eq!(config.train.eval_iters, 1, "the --set layer");
    assert_eq!(config.train.batch_size, 32, "a default");
    assert!(printed.contains("[memory]\ntrim_every = 10"), "{printed}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
