//! Who may use a run folder: one training process for the whole run, and readers of its
//! checkpoints only while no checkpoint is being written.
//!
//! Both are operating-system file locks (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::lock`), so a process that crashes or is killed never leaves a stale lock
//! behind: the kernel releases it with the process.
//!
//! - `RUN/run.lock`: held exclusively by `train` from the moment it creates or resumes the run
//!   until it exits. The holder writes its process id and command line into the file, so that a
//!   second `train` on the same run can say who has it.
//! - `RUN/checkpoints/write.lock`: held exclusively while a checkpoint is written and old ones
//!   are pruned, and shared by readers (`generate`, `ember export`, `ember eval`, `--resume`)
//!   while they read one. Readers never wait for a training run, only for the second or so a
//!   checkpoint takes to write, and then they are told instead of waiting.

use std::fs::{File, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use crate::TrainError;

const RUN_LOCK: &str = "run.lock";
const WRITE_LOCK: &str = "write.lock";

/// The exclusive hold of one training process on a run folder, released on drop.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the run folder `run_dir` for this process, or says which process has it.
    pub fn acquire(run_dir: &Path) -> Result<Self, TrainError> {
        let path = run_dir.join(RUN_LOCK);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                TrainError::RunFolder(format!("{}: cannot open the run lock: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::InUse(format!(
                    "{}: this run is in use by {}; wait for it to finish or stop it, then try again",
                    run_dir.display(),
                    holder(run_dir)
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(TrainError::RunFolder(format!(
                    "{}: cannot lock the run: {e}",
                    path.display()
                )));
            }
        }
        let args: Vec<String> = std::env::args().collect();
        let note = format!("pid {}: {}\n", std::process::id(), args.join(" "));
        // Who holds the lock is a courtesy to the next process; failing to say it is no reason
        // to refuse the run.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Self { _file: file })
    }
}

/// The process holding the run lock of `run_dir`, as it described itself.
fn holder(run_dir: &Path) -> String {
    let note = std::fs::read_to_string(run_dir.join(RUN_LOCK)).unwrap_or_default();
    let described = note
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("pid "))
        .and_then(|rest| rest.split_once(": "));
    match described {
        Some((pid, command)) => format!("process {pid} (`{command}`)"),
        None => "another process".to_string(),
    }
}

/// A hold on the checkpoints of a run: exclusive for the writer, shared for readers. Released
/// on drop.
#[derive(Debug)]
pub struct CheckpointLock {
    _file: File,
}

impl CheckpointLock {
    /// Waits until no reader is reading, then holds the checkpoints folder `dir` exclusively.
    /// Readers hold it only while they read files, so the wait is short.
    pub fn write(dir: &Path) -> std::io::Result<Self> {
        let file = open(dir)?;
        file.lock()?;
        Ok(Self { _file: file })
    }

    /// Holds the checkpoints folder `dir` for reading, or says which process is writing to it.
    /// A folder that has no lock file (a checkpoint copied elsewhere) is read without one.
    pub fn read(dir: &Path) -> Result<Option<Self>, TrainError> {
        if !dir.join(WRITE_LOCK).exists() {
            return Ok(None);
        }
        // Read-only: a shared lock needs no write access, so checkpoints on a read-only disk
        // (a mounted archive, say) stay readable.
        let path = dir.join(WRITE_LOCK);
        let file = File::open(&path).map_err(crate::error::io(&path))?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Err(TrainError::InUse(format!(
                "{}: {} is writing a checkpoint right now; try again in a moment",
                dir.display(),
                holder(&run_dir_of_checkpoints(dir))
            ))),
            Err(TryLockError::Error(e)) => Err(TrainError::Checkpoint(format!(
                "{}: cannot lock the checkpoints for reading: {e}",
                dir.display()
            ))),
        }
    }
}

fn open(dir: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(WRITE_LOCK))
}

/// The run folder a checkpoints folder belongs to.
pub(crate) fn run_dir_of_checkpoints(dir: &Path) -> PathBuf {
    dir.parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_held_by_one_process_and_readers_wait_for_no_run() {
        let dir = std::env::temp_dir().join(format!("ember-lock-{}", std::process::id()));
        let ckpts = dir.join("checkpoints");
        std::fs::create_dir_all(&ckpts).unwrap();
        let held = RunLock::acquire(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process is refused too.
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("in use by process {}", std::process::id())),
            "{err}"
        );
        // Training holds the run, not its checkpoints: reading them is allowed.
        assert!(CheckpointLock::read(&ckpts).unwrap().is_none());
        let writing = CheckpointLock::write(&ckpts).unwrap();
        let err = CheckpointLock::read(&ckpts).unwrap_err().to_string();
        assert!(err.contains("is writing a checkpoint right now"), "{err}");
        drop(writing);
        let reading = CheckpointLock::read(&ckpts).unwrap();
        assert!(reading.is_some());
        drop((held, reading));
        RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
