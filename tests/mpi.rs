//! Data-parallel training over MPI (`--features mpi`), through `mpirun` and the release
//! binaries: two ranks train the single process's run, resume bit-exactly (and on one process),
//! a killed rank ends the job with the last checkpoint intact, ranks that disagree are refused,
//! and `ember bench` reports the all-reduce. Without the feature, a launcher's job is refused.
//!
//! Needs OpenMPI's `mpirun` (Debian: `apt install openmpi-bin libopenmpi-dev libclang-dev`).

mod common;

use std::process::Command;

use common::out_err;

/// `train` with `args` as one process (no launcher).
fn alone(args: &[&str]) -> Command {
    common::train_bin(args)
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use super::{alone, out_err};
    use crate::common::{self, losses};

    /// `mpirun` as CI runs it: as root, on 2 cores with more ranks than cores allowed, and
    /// without the shared-memory single copy that containers forbid. The job's processes follow.
    fn launcher() -> Command {
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe"])
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
        cmd
    }

    /// `mpirun -np N` of `binary` with `args`.
    fn mpirun(np: usize, binary: &str, args: &[&str]) -> Command {
        let mut cmd = launcher();
        cmd.arg("-np").arg(np.to_string()).arg(binary).args(args);
        cmd
    }

    fn train(np: usize, args: &[&str]) -> Command {
        mpirun(np, env!("CARGO_BIN_EXE_train"), args)
    }

    /// A tiny run named `name` under `out`: `steps` steps of 8 sequences, one thread per rank,
    /// a short evaluation every 4 steps and a checkpoint every 4.
    fn run_args(out: &Path, name: &str, steps: usize) -> Vec<String> {
        let mut args: Vec<String> = [
            "--preset",
            "tiny",
            "--device",
            "ndarray",
            "--threads",
            "1",
            "--steps",
            &steps.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            &format!("run.name={name:?}"),
        ]
        .map(String::from)
        .to_vec();
        for set in [
            "train.batch_size=8",
            "train.eval_iters=4",
            "train.eval_every=4",
            "train.checkpoint_every=4",
            "train.log_every=1",
            "train.sample_tokens=0",
        ] {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        args
    }

    fn strs(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }

    fn succeeded(o: Output) -> String {
        assert!(o.status.success(), "{}", out_err(&o));
        out_err(&o)
    }

    /// (step, validation loss) of every evaluated step.
    fn val_losses(run: &Path) -> Vec<(u64, f64)> {
        common::metric(run, "val_loss")
    }

    #[test]
    fn two_ranks_train_the_single_process_run() {
        let out = tempfile::tempdir().unwrap();
        let one = run_args(out.path(), "one", 12);
        let two = run_args(out.path(), "two", 12);
        succeeded(alone(&strs(&one)).output().unwrap());
        let log = succeeded(train(2, &strs(&two)).output().unwrap());
        // Rank 1 prints nothing: one banner, one summary.
        assert_eq!(log.matches("model d=").count(), 1, "{log}");
        assert_eq!(log.matches("---- run summary").count(), 1, "{log}");
        assert!(log.contains("2 ranks (2 here), 4 rows each"), "{log}");

        let (a, b) = (
            losses(&out.path().join("one")),
            losses(&out.path().join("two")),
        );
        assert_eq!(a.len(), 12);
        assert_eq!(a.len(), b.len());
        // The same batches, averaged in another order: equal to float tolerance.
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() < 1e-4,
                "step {step}: {x} alone, {y} on 2 ranks"
            );
        }
        let (a, b) = (
            val_losses(&out.path().join("one")),
            val_losses(&out.path().join("two")),
        );
        assert_eq!(a.len(), b.len());
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() < 1e-4,
                "step {step}: val {x} alone, {y} on 2 ranks"
            );
        }
        // Only rank 0 wrote: one run folder each.
        let mut runs: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        runs.sort();
        assert_eq!(runs, ["one", "two"]);
    }

    #[test]
    fn a_two_rank_run_resumes_bit_exactly_and_on_one_process() {
        let out = tempfile::tempdir().unwrap();
        succeeded(
            train(2, &strs(&run_args(out.path(), "whole", 12)))
                .output()
                .unwrap(),
        );
        succeeded(
            train(2, &strs(&run_args(out.path(), "halves", 8)))
                .output()
                .unwrap(),
        );
        let halves = out.path().join("halves");
        let copy = out.path().join("alone");
        copy_dir(&halves, &copy);

        let log = succeeded(
            train(2, &["--resume", halves.to_str().unwrap(), "--steps", "12"])
                .output()
                .unwrap(),
        );
        assert!(log.contains("resuming after step 8"), "{log}");
        assert!(!log.contains("no longer identical"), "{log}");
        assert_eq!(losses(&out.path().join("whole")), losses(&halves));
        assert_eq!(val_losses(&out.path().join("whole")), val_losses(&halves));

        // The same checkpoint continued by one process: trains on, and says what changed.
        let log = succeeded(
            alone(&["--resume", copy.to_str().unwrap(), "--steps", "12"])
                .output()
                .unwrap(),
        );
        assert!(
            log.contains("note: changed on resume: ranks 2 -> 1; from here on this run is no longer identical"),
            "{log}"
        );
        let (whole, continued) = (losses(&out.path().join("whole")), losses(&copy));
        assert_eq!(continued.len(), 12);
        assert_eq!(whole[..8], continued[..8]);
        for ((step, x), (_, y)) in whole.iter().zip(&continued).skip(8) {
            assert!((x - y).abs() < 1e-3, "step {step}: {x} vs {y}");
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else if entry.file_type().unwrap().is_symlink() {
                let link = std::fs::read_link(entry.path()).unwrap();
                std::os::unix::fs::symlink(link, target).unwrap();
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// The process of `mpirun` (`parent`) that is rank `rank`, from its environment.
    fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        std::fs::read_dir("/proc").ok()?.find_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The parent is the 4th field, after the command name in parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let has_rank = environ
                .split(|&b| b == 0)
                .any(|var| var == wanted.as_bytes());
            (ppid == parent && has_rank).then_some(pid)
        })
    }

    #[test]
    fn a_killed_rank_ends_the_job_and_the_last_checkpoint_resumes() {
        let out = tempfile::tempdir().unwrap();
        let mut args = run_args(out.path(), "r", 100_000);
        args.extend(["--set".into(), "train.checkpoint_every=2".into()]);
        let run = out.path().join("r");
        let logs = out.path().join("log");
        let mut job = train(2, &strs(&args))
            .stdout(Stdio::from(std::fs::File::create(&logs).unwrap()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !run.join("checkpoints/step-0000004").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint"
            );
            assert!(job.try_wait().unwrap().is_none(), "the job ended early");
            std::thread::sleep(Duration::from_millis(100));
        }
        let victim = rank_pid(job.id(), 1).expect("rank 1 is a child of mpirun");
        // SAFETY: a plain kill(2) of a process this test started (through mpirun).
        assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);

        let killed = Instant::now();
        let status = loop {
            if let Some(status) = job.try_wait().unwrap() {
                break status;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "the job did not end within a minute of rank 1's death"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let o = job.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            std::fs::read_to_string(&logs).unwrap(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!status.success(), "{said}");
        assert!(said.contains("rank 1"), "the rank is not named: {said}");
        // Rank 0, stopped by the launcher while it waits for rank 1, says what to do.
        assert!(
            said.contains("note: rank 0: SIGTERM during step")
                && said.contains(&format!("train --resume {}", run.display())),
            "{said}"
        );

        // The latest checkpoint verifies and the run goes on from it, on 2 ranks.
        let latest = ember_train::checkpoint::open(&run).expect("the last checkpoint is intact");
        assert!(latest.fallback_note().is_none());
        let step = latest.files.state.step;
        let log = succeeded(
            train(
                2,
                &[
                    "--resume",
                    run.to_str().unwrap(),
                    "--steps",
                    &(step + 2).to_string(),
                ],
            )
            .output()
            .unwrap(),
        );
        assert!(
            log.contains(&format!("resuming after step {step}")),
            "{log}"
        );
    }

    #[test]
    fn ranks_that_disagree_are_refused_at_start() {
        let out = tempfile::tempdir().unwrap();
        let args = run_args(out.path(), "r", 4);
        let bin = env!("CARGO_BIN_EXE_train");
        // Another model on rank 1 (MPMD: one command line per rank).
        let mut cmd = mpirun(1, bin, &strs(&args));
        cmd.args([":", "-np", "1", bin])
            .args(strs(&args))
            .args(["--set", "model.n_layer=2"]);
        let o = cmd.output().unwrap();
        assert!(!o.status.success());
        assert!(
            out_err(&o).contains("the config of rank 1 differs from rank 0's"),
            "{}",
            out_err(&o)
        );

        // The same data.path naming another text on each rank (another working folder).
        let (a, b) = (out.path().join("a"), out.path().join("b"));
        for (dir, text) in [(&a, "to be or not to be\n"), (&b, "that is the question\n")] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("text.txt"), text.repeat(400)).unwrap();
        }
        let mut data = args.clone();
        data.extend(["--data".into(), "text.txt".into()]);
        let o = launcher()
            .args(["-np", "1", "-wdir", a.to_str().unwrap(), bin])
            .args(strs(&data))
            .args([":", "-np", "1", "-wdir", b.to_str().unwrap(), bin])
            .args(strs(&data))
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            out_err(&o).contains("the data of rank 1 differs from rank 0's"),
            "{}",
            out_err(&o)
        );

        // A batch whose rows do not divide among the ranks.
        let mut odd = args.clone();
        odd.extend(["--set".into(), "train.batch_size=5".into()]);
        let o = train(2, &strs(&odd)).output().unwrap();
        assert!(!o.status.success());
        assert!(
            out_err(&o).contains("train.batch_size = 5 does not divide among 2 ranks"),
            "{}",
            out_err(&o)
        );
        // Nothing was created by the refused jobs.
        assert!(!out.path().join("r").exists());
    }

    #[test]
    fn bench_reports_the_all_reduce_share() {
        let o = mpirun(
            2,
            env!("CARGO_BIN_EXE_ember"),
            &[
                "bench",
                "--preset",
                "tiny",
                "--threads",
                "1",
                "--device",
                "ndarray",
                "--warmup",
                "1",
                "--steps",
                "3",
            ],
        )
        .output()
        .unwrap();
        let log = succeeded(o);
        assert!(
            log.contains("1 rayon threads in each of 2 MPI ranks"),
            "{log}"
        );
        assert!(log.contains("% of the step)"), "{log}");
        assert_eq!(log.matches("tokens/s").count(), 1, "{log}");
    }
}

/// Without the `mpi` feature, a process that an MPI launcher started as one of several says to
/// rebuild instead of training alone.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_launchers_job_without_mpi_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let one_step = |world: &str| {
        let out = out.path().to_str().unwrap();
        alone(&["--preset", "tiny", "--steps", "1", "--out", out])
            .args([
                "--set",
                "train.eval_iters=0",
                "--set",
                "train.sample_tokens=0",
            ])
            .env("OMPI_COMM_WORLD_SIZE", world)
            .output()
            .unwrap()
    };
    let o = one_step("2");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("(OMPI_COMM_WORLD_SIZE=2) but this build of Ember has no MPI")
            && err.contains("cargo build --release --features mpi"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    // A job of one process is a plain run.
    let o = one_step("1");
    assert!(o.status.success(), "{}", out_err(&o));
}
