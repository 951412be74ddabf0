//! The one error type of ember-train: what failed (the run folder, a checkpoint, the data, a
//! hook, a diverging loss) and what to do about it, in one line.

use std::path::{Path, PathBuf};

use crate::checkpoint::SaveError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Data(String),
    /// Another process is training in the run folder.
    #[error("{0}")]
    RunInUse(String),
    /// A step hook stopped the run (a memory scope in `fail` mode, for one).
    #[error("{0}")]
    Hook(String),
    // The io::Error is part of the message, not a `source`: an error chain printed with `{:#}`
    // would say it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("step {step}: {error}; free some space, then continue with: train --resume {}", run.display())]
    CheckpointWrite {
        step: usize,
        run: PathBuf,
        error: SaveError,
    },
    #[error("step {step}: the {what} is {value}; training stopped before the update. {recovery}")]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
        /// What to do next: the last good checkpoint and the command to continue from it.
        recovery: String,
    },
}

/// Maps an io::Error on `path` to [`TrainError::Io`].
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    }
}
