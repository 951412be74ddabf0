//! Run reports and evaluation on a file: the series a report draws, several runs compared,
//! malformed metrics named by line, and `ember eval` on text in and out of the vocabulary.

mod common;

use common::out_err;
use std::path::Path;

use ember::report::{ReportOptions, differing_keys, load_run, write_svg};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A run folder with these metrics lines and a config whose `train.lr` is `lr`.
fn run_dir(root: &Path, name: &str, lines: &[&str], lr: f64) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("metrics.jsonl"), &(lines.join("\n") + "\n"));
    write(
        &dir.join("config.toml"),
        &format!("[train]\nlr = {lr}\nsteps = 3\n[run]\nname = \"{name}\"\n"),
    );
    dir
}

#[test]
fn a_report_has_the_series_of_the_metrics_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(
        root.path(),
        "a",
        &[
            r#"{"step":1,"loss":4.0,"lr":0.001,"tokens_per_sec":1000.0,"rss_bytes":1048576,"live_bytes":524288}"#,
            r#"{"step":2,"loss":3.0,"lr":0.002,"tokens_per_sec":1100.0,"rss_bytes":2097152,"live_bytes":524288,"train_loss":2.9,"val_loss":3.1,"val_bpc":4.47,"val_bpb":4.4}"#,
        ],
        1e-3,
    );
    let run = load_run(&dir).unwrap();
    assert_eq!(run.name, "a");
    assert_eq!(run.get("loss"), [(1.0, 4.0), (2.0, 3.0)]);
    assert_eq!(run.get("val_loss"), [(2.0, 3.1)]);
    assert_eq!(run.get("val_bpb"), [(2.0, 4.4)]);
    assert_eq!(run.get("lr"), [(1.0, 0.001), (2.0, 0.002)]);
    assert_eq!(run.get("live_bytes").len(), 2);
    assert_eq!(
        run.config.get("train.lr").map(String::as_str),
        Some("0.001")
    );

    let out = dir.join("report.svg");
    write_svg(&[run], &out, ReportOptions { log_loss: true }).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    for label in [
        "loss",
        "bits per byte (val)",
        "learning rate",
        "throughput",
        "memory",
        "step",
        "tokens/s",
        "MiB",
    ] {
        assert!(svg.contains(label), "no {label:?} in the picture");
    }
}

#[test]
fn runs_with_different_lengths_and_fields_compare_with_their_differing_keys() {
    let root = tempfile::tempdir().unwrap();
    let a = run_dir(
        root.path(),
        "base",
        &[
            r#"{"step":1,"loss":4.0,"lr":0.001}"#,
            r#"{"step":2,"loss":3.5,"lr":0.001}"#,
        ],
        1e-3,
    );
    // Longer, and without the memory fields an older run would lack.
    let b = run_dir(
        root.path(),
        "higher-lr",
        &[
            r#"{"step":1,"loss":4.0,"lr":0.003}"#,
            r#"{"step":2,"loss":3.2,"lr":0.003}"#,
            r#"{"step":3,"loss":2.9,"lr":0.003,"val_loss":3.0}"#,
        ],
        3e-3,
    );
    let runs = [load_run(&a).unwrap(), load_run(&b).unwrap()];
    assert_eq!(
        differing_keys(&runs),
        [
            vec!["train.lr=0.001".to_string()],
            vec!["train.lr=0.003".to_string()]
        ]
    );
    let out = root.path().join("compare.svg");
    write_svg(&runs, &out, ReportOptions::default()).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("base: train.lr=0.001") && svg.contains("higher-lr: train.lr=0.003"));
}

#[test]
fn a_malformed_metrics_line_is_named_by_its_line_number() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(
        root.path(),
        "bad",
        &[r#"{"step":1,"loss":4.0}"#, r#"{"step":2,"loss":"#],
        1e-3,
    );
    let err = load_run(&dir).unwrap_err().to_string();
    assert!(err.contains("metrics.jsonl:2: not a JSON object"), "{err}");
    let dir = run_dir(root.path(), "nostep", &[r#"{"loss":4.0}"#], 1e-3);
    let err = load_run(&dir).unwrap_err().to_string();
    assert!(err.contains("metrics.jsonl:1: no numeric `step`"), "{err}");
}

#[test]
fn a_run_writes_its_report_and_eval_scores_a_file() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().to_str().unwrap();
    let trained = common::train_bin(&[])
        .args([
            "--preset",
            "tiny",
            "--steps",
            "20",
            "--out",
            out,
            "--set",
            "run.name=\"r\"",
        ])
        .args([
            "--set",
            "train.eval_iters=2",
            "--set",
            "train.eval_every=10",
            "--set",
            "train.sample_tokens=0",
        ])
        .output()
        .unwrap();
    let log = out_err(&trained);
    assert!(trained.status.success(), "{log}");
    assert!(
        log.contains("best val loss") && log.contains("report "),
        "{log}"
    );
    let run = root.path().join("r");
    assert!(run.join("report.svg").exists(), "{log}");
    assert!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .contains("\"val_bpc\"")
    );

    let text = root.path().join("text.txt");
    write(&text, &ember_train::corpus::TINY_SHAKESPEARE[..5000]);
    let eval_text = || {
        common::ember_bin(&["eval", "--run", run.to_str().unwrap()])
            .args(["--data", text.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let eval = eval_text();
    let said = out_err(&eval);
    assert!(eval.status.success(), "{said}");
    assert!(
        said.contains("5000 tokens, 4999 predicted")
            && said.contains("bits per byte")
            && said.contains("bits per character"),
        "{said}"
    );

    write(&text, "First line\nsecond é\n");
    let refused = eval_text();
    let said = out_err(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains("text.txt:2:8: character 'é' (U+00E9) is not in the vocabulary"),
        "{said}"
    );
}
