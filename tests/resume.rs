//! Checkpoints and resume: bit-exact continuation in process and after a SIGTERM, refusal of
//! incompatible configs, damaged files (and the fall back to the newest that verifies),
//! leftovers of a crash, pruning.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TINY, generate_bin, losses, out_err, train_bin, trained_run};
use ember_train::{NoHooks, RunConfig, StepHooks, checkpoint};

fn config(out: &Path, name: &str, steps: usize) -> RunConfig {
    let (steps, name) = (format!("train.steps={steps}"), format!("run.name={name:?}"));
    common::tiny_config(
        out,
        &[
            &steps,
            &name,
            "train.batch_size=8",
            "train.eval_iters=0",
            "train.sample_tokens=0",
            "train.log_every=1",
            "train.checkpoint_every=0",
        ],
    )
}

/// Every weight of a run's latest checkpoint, in parameter order. (The files themselves differ
/// between runs: burnpack records each parameter's random id.)
fn weights(run: &Path) -> Vec<f64> {
    let saved = ember::saved::SavedModel::load(run, &common::cpu()).unwrap();
    let mut all = Weights(Vec::new());
    burn::module::Module::visit(&saved.model, &mut all);
    all.0
}

struct Weights(Vec<f64>);
impl burn::module::ModuleVisitor for Weights {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        self.0.extend(common::values(param.val()));
    }
}

struct StopAt(usize, Arc<AtomicBool>);
impl StepHooks for StopAt {
    fn begin_step(&mut self, step: usize) {
        if step == self.0 {
            self.1.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn stopping_and_resuming_is_bit_exact() {
    let out = tempfile::tempdir().unwrap();
    let text = ember_train::corpus::TINY_SHAKESPEARE;
    let mut whole = common::new_trainer(config(out.path(), "whole", 20), text);
    whole.train(&mut NoHooks).unwrap();

    let halves = config(out.path(), "halves", 20);
    let mut first = common::new_trainer(halves.clone(), text);
    let summary = first.train(&mut StopAt(10, first.stop_flag())).unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.steps, 10);
    let ckpt = summary.last_checkpoint.unwrap();
    assert!(
        ckpt.ends_with("checkpoints/step-0000010"),
        "{}",
        ckpt.display()
    );
    // The first trainer holds the run folder until it is dropped, as a process until it exits.
    drop(first);
    let mut second = common::start_on(halves, text, common::cpu(), Some(&ckpt));
    assert_eq!(second.start_step(), 10);
    let summary = second.train(&mut NoHooks).unwrap();
    assert_eq!((summary.steps, summary.stopped), (20, false));

    let (a, b) = (losses(whole.run_dir()), losses(second.run_dir()));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "per-step losses differ");
    assert!(
        weights(whole.run_dir()) == weights(second.run_dir()),
        "final weights differ"
    );
}

#[test]
fn sigterm_saves_a_checkpoint_and_the_run_resumes_exactly() {
    let out = tempfile::tempdir().unwrap();
    let out_arg = out.path().to_str().unwrap();
    let reference = train_bin(&TINY)
        .args(["--out", out_arg, "--set", "run.name=\"ref\""])
        .output()
        .unwrap();
    assert!(reference.status.success(), "{}", out_err(&reference));

    let child = train_bin(&TINY)
        .args([
            "--out",
            out_arg,
            "--set",
            "run.name=\"cut\"",
            "--set",
            "train.checkpoint_every=0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = out.path().join("cut");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count()) < 5 {
        assert!(Instant::now() < deadline, "the run never logged 5 steps");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = child.wait_with_output().unwrap();
    let text = out_err(&stopped);
    assert!(stopped.status.success(), "{text}");
    assert!(
        text.contains("stopped: ") && text.contains("continue with: train --resume"),
        "{text}"
    );
    let cut_at = losses(&run).last().unwrap().0;
    assert!(
        cut_at < 80,
        "the signal came too late to test anything ({cut_at})"
    );

    let resumed = train_bin(&["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", out_err(&resumed));
    assert!(out_err(&resumed).contains(&format!("resuming after step {cut_at}")));
    assert_eq!(losses(&out.path().join("ref")), losses(&run));
    assert!(
        weights(&out.path().join("ref")) == weights(&run),
        "final weights differ"
    );
}

#[test]
fn resume_refuses_a_different_model_or_data_and_allows_more_steps() {
    let out = tempfile::tempdir().unwrap();
    let run = trained_run(out.path(), &[]);
    let run_arg = run.to_str().unwrap();
    let refuse = |args: &[&str], needle: &str| {
        let o = train_bin(&["--resume", run_arg])
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{needle}: {}",
            out_err(&o)
        );
    };
    refuse(
        &["--set", "model.d_model=32"],
        "--resume: model.d_model is 64 in the checkpoint but 32 now",
    );
    refuse(
        &["--set", "train.lr=0.5"],
        "train.lr is 0.001 in the checkpoint but 0.5 now",
    );
    let other = out.path().join("other.txt");
    std::fs::write(&other, "zzz ".repeat(100)).unwrap();
    refuse(
        &["--data", other.to_str().unwrap()],
        "data.path is \"\" in the checkpoint",
    );
    refuse(&["--preset", "small"], "cannot be used with");
    let before = losses(&run);
    let more = train_bin(&["--resume", run_arg, "--steps", "25"])
        .output()
        .unwrap();
    assert!(more.status.success(), "{}", out_err(&more));
    let after = losses(&run);
    assert_eq!(after.len(), 25);
    assert_eq!(after[..20], before[..]);
}

#[test]
fn damaged_or_half_written_checkpoints_are_handled() {
    let out = tempfile::tempdir().unwrap();
    let run = trained_run(
        out.path(),
        &[
            "--set",
            "train.checkpoint_every=5",
            "--set",
            "train.keep_last=2",
        ],
    );
    let ckpts = run.join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["latest", "step-0000015", "step-0000020", "write.lock"]
    );

    // A crash in the middle of writing the next checkpoint leaves a temporary folder behind;
    // `latest` still names the last complete one, which loads.
    std::fs::create_dir(ckpts.join(".tmp-step-0000025-999")).unwrap();
    std::fs::write(ckpts.join(".tmp-step-0000025-999/model.bpk"), b"partial").unwrap();
    assert_eq!(
        checkpoint::resolve(&run).unwrap(),
        ckpts.join("step-0000020")
    );
    assert!(checkpoint::load(&ckpts.join("step-0000020")).is_ok());

    // A damaged optimizer file passes a resume over to an older checkpoint, but not a reader of
    // the model alone (generate, eval, export), which neither reads nor verifies it.
    let optimizer = ckpts.join("step-0000020/optimizer.bpk");
    let intact = std::fs::read(&optimizer).unwrap();
    let mut damaged = intact.clone();
    damaged[intact.len() / 2] ^= 1;
    std::fs::write(&optimizer, &damaged).unwrap();
    let opened = checkpoint::open(&run).unwrap();
    assert!(opened.dir.ends_with("step-0000015"), "{:?}", opened.dir);
    assert!(
        opened.skipped[0].contains("optimizer.bpk: checksum mismatch"),
        "{:?}",
        opened.skipped
    );
    let model_only = checkpoint::open_parts(&run, checkpoint::Parts::Model).unwrap();
    assert!(model_only.dir.ends_with("step-0000020"));
    assert!(model_only.skipped.is_empty() && model_only.files.optimizer.is_none());
    let o = generate_bin(&["--run", run.to_str().unwrap(), "--max-tokens", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
    assert!(!out_err(&o).contains("warning"), "{}", out_err(&o));
    std::fs::write(&optimizer, &intact).unwrap();

    // A flipped byte is caught by the manifest: resuming the run names the damaged checkpoint
    // and continues from the newest one that verifies.
    let model = ckpts.join("step-0000020/model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let o = train_bin(&["--resume", run.to_str().unwrap(), "--steps", "22"])
        .output()
        .unwrap();
    let text = out_err(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("step-0000020/model.bpk: checksum mismatch")
            && text.contains("step-0000015, the newest checkpoint that verifies")
            && text.contains("resuming after step 15"),
        "{text}"
    );
    // The damaged checkpoint was rewritten by the resumed run (same step), so damage them all:
    // with none left to verify, a one-line error.
    for step in ["step-0000015", "step-0000020", "step-0000022"] {
        let path = ckpts.join(step).join("state.json");
        if path.exists() {
            std::fs::write(&path, b"{}").unwrap();
        }
    }
    let o = train_bin(&["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(text.contains("no checkpoint verifies"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    // A checkpoint named explicitly is that one or an error, never another.
    let o = train_bin(&["--resume", ckpts.join("step-0000022").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        out_err(&o).contains("step-0000022/state.json: checksum mismatch"),
        "{}",
        out_err(&o)
    );
}
