//! Faults a run must survive, each tried with the real binaries: two processes on one run
//! folder, a checkpoint that does not fit on the disk, a divergence to recover from with a
//! lower learning rate, a model too big for the machine, and a reader of its output that goes
//! away.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{generate_bin, out_err, train_bin};

/// A finished 20-step tiny run `r` under `out`, checkpointed at steps 10 and 20.
fn finished_run(out: &Path) -> PathBuf {
    common::trained_run(out, &["--set", "train.checkpoint_every=10"])
}

fn latest(run: &Path) -> String {
    std::fs::read_to_string(run.join("checkpoints/latest")).unwrap()
}

fn failed_with(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{}", out_err(o));
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
    err
}

/// `train` resuming `run` for a million steps, checkpointing only when stopped.
fn endless_resume(run: &str) -> Command {
    train_bin(&[
        "--resume",
        run,
        "--steps",
        "1000000",
        "--set",
        "train.checkpoint_every=0",
    ])
}

#[test]
fn a_run_folder_has_one_trainer_and_readers_never_wait_for_it() {
    let out = tempfile::tempdir().unwrap();
    let run = finished_run(out.path());
    let run_arg = run.to_str().unwrap();
    // A long resumed run holds the folder; it checkpoints only when stopped.
    let first = endless_resume(run_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count()) < 25 {
        assert!(Instant::now() < deadline, "the first run never trained");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second trainer, resumed or new under the same name, is refused, naming the first.
    let holder = format!("in use by process {}", first.id());
    let second = train_bin(&["--resume", run_arg]).output().unwrap();
    failed_with(
        &second,
        &[run_arg, &holder, "wait for it to finish or stop it"],
    );
    let again = train_bin(&[
        "--preset",
        "tiny",
        "--out",
        out.path().to_str().unwrap(),
        "--set",
        "run.name=\"r\"",
    ])
    .output()
    .unwrap();
    failed_with(&again, &["a run of that name already exists"]);
    // Readers of its finished checkpoints do not wait for the run.
    let started = Instant::now();
    let read = generate_bin(&["--run", run_arg, "--max-tokens", "20"])
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", out_err(&read));
    assert!(started.elapsed() < Duration::from_secs(30));

    // SIGKILL leaves no stale lock: the kernel releases it with the process.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    let killed = first.wait_with_output().unwrap();
    assert!(!killed.status.success());
    common::resumes(run_arg, "25", 20);
}

#[test]
fn a_reader_that_goes_away_stops_the_run_with_a_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let run = finished_run(out.path());
    let run_arg = run.to_str().unwrap();
    // `train ... | head`: the reader takes lines until training has begun, then exits.
    let mut train = endless_resume(run_arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(train.stdout.take().unwrap()).lines();
    let first_step = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("step ")));
    assert!(first_step.is_some(), "no step line on standard output");
    drop(lines);
    // Not a panic on the broken pipe: the run ends as on Ctrl-C, after its step, checkpointed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = train.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            train.kill().unwrap();
            panic!("the run went on after its standard output was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    train
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    for needle in ["standard output closed", "stops after this step", run_arg] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let checkpoint = latest(&run);
    let step: usize = checkpoint
        .trim()
        .trim_start_matches("step-")
        .parse()
        .unwrap();
    assert!(
        step > 20,
        "no checkpoint after the first 20 steps: {checkpoint}"
    );
    common::resumes(run_arg, &(step + 2).to_string(), step);
}

#[test]
fn a_checkpoint_being_written_is_not_read() {
    let out = tempfile::tempdir().unwrap();
    let run = finished_run(out.path());
    // This process plays the trainer, in the middle of writing a checkpoint.
    let _run = ember_train::lock::RunLock::acquire(&run).unwrap();
    let writing = ember_train::lock::CheckpointLock::write(&run.join("checkpoints")).unwrap();
    let o = generate_bin(&["--run", run.to_str().unwrap()])
        .output()
        .unwrap();
    let pid = format!("process {}", std::process::id());
    failed_with(
        &o,
        &["is writing a checkpoint right now", &pid, "try again"],
    );
    drop(writing);
    let o = generate_bin(&["--run", run.to_str().unwrap(), "--max-tokens", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
}

#[test]
fn a_checkpoint_that_does_not_fit_keeps_the_previous_one() {
    let out = tempfile::tempdir().unwrap();
    let run = finished_run(out.path());
    let run_arg = run.to_str().unwrap();
    // No file may grow past 100 KB (the tiny model's record is 250 KB).
    let mut cmd = train_bin(&["--resume", run_arg, "--steps", "30"]);
    common::limit_file_size(&mut cmd, 100_000);
    let o = cmd.output().unwrap();
    let err = failed_with(
        &o,
        &[
            "step 30: cannot write checkpoint step-0000030",
            "it needs 0.7 MiB",
            "the previous checkpoint and `latest` are kept",
            &format!("continue with: train --resume {run_arg}"),
        ],
    );
    assert_eq!(err.matches("File too large").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(latest(&run), "step-0000020");

    // With the space back, the run resumes from the checkpoint that was kept.
    common::resumes(run_arg, "30", 20);
    assert_eq!(latest(&run), "step-0000030");
}

#[test]
fn a_divergence_is_recovered_from_the_last_good_checkpoint_with_a_lower_lr() {
    let out = tempfile::tempdir().unwrap();
    let run = finished_run(out.path());
    let run_arg = run.to_str().unwrap();
    // Without the flag, the optimizer's settings are the checkpoint's.
    let o = train_bin(&["--resume", run_arg, "--set", "train.lr=1e30"])
        .output()
        .unwrap();
    failed_with(
        &o,
        &[
            "train.lr is 0.001 in the checkpoint",
            "add --change-optimizer",
        ],
    );

    // A learning rate that blows up: the run stops at the step, names the last good checkpoint
    // and the command to continue from it.
    let o = train_bin(&[
        "--resume",
        run_arg,
        "--steps",
        "40",
        "--change-optimizer",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.warmup=0",
    ])
    .output()
    .unwrap();
    let good = run.join("checkpoints/step-0000020");
    let command = format!(
        "train --resume {} --change-optimizer --set train.lr=",
        good.display()
    );
    failed_with(&o, &["is NaN", "The last good checkpoint is", &command]);

    // The command, with a learning rate of our choosing, continues the run.
    let o = train_bin(&[
        "--resume",
        good.to_str().unwrap(),
        "--steps",
        "30",
        "--change-optimizer",
        "--set",
        "train.lr=5e-4",
    ])
    .output()
    .unwrap();
    let text = out_err(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("changed on resume: train.lr 0.001 -> 0.0005")
            && text.contains("no longer identical to an uninterrupted one"),
        "{text}"
    );
    // metrics.jsonl: 20 steps, the change (the abandoned attempt's is gone), 10 more steps.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let events: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("\"event\""))
        .collect();
    assert_eq!(events.len(), 1, "{metrics}");
    assert!(events[0].contains(r#""key":"train.lr","from":"0.001","to":"0.0005""#));
    assert_eq!(metrics.lines().count(), 31, "{metrics}");
    // The checkpoint carries the change.
    let state = std::fs::read_to_string(run.join("checkpoints/step-0000030/state.json")).unwrap();
    assert!(
        state.contains("\"changes\"") && state.contains("0.0005"),
        "{state}"
    );
}

#[test]
fn a_model_that_cannot_fit_is_refused_before_it_is_built() {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let o = train_bin(&[
        "--out",
        out.path().to_str().unwrap(),
        "--set",
        "model.d_model=16384",
        "--set",
        "model.n_layer=64",
        "--set",
        "model.n_head=16",
    ])
    .output()
    .unwrap();
    failed_with(
        &o,
        &[
            "this run needs about",
            "is available",
            "parameters",
            "--skip-memory-check",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Nothing was created.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
