//! The one error type of ember-train: what failed (the config, the data, the run folder, a
//! checkpoint, a hook, a diverging loss) and what to do about it, in one line.

use std::path::{Path, PathBuf};

use crate::sys::mib;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config value, file or flag that cannot work: where it came from (`path:line:col`,
    /// `--set`, `--steps`...), the `section.key` at fault when there is one, and why.
    #[error("{origin}: {}{message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Config {
        origin: String,
        key: Option<String>,
        message: String,
    },
    /// A character the vocabulary does not contain, at character `index` of the text encoded.
    #[error("character {ch:?} (U+{:04X}) at character {index} is not in the vocabulary", *ch as u32)]
    UnknownChar { ch: char, index: usize },
    /// The training text, a vocabulary or a split that cannot be used.
    #[error("{0}")]
    Data(String),
    /// A run folder that cannot be created or used.
    #[error("{0}")]
    RunFolder(String),
    /// Another process is training in the run folder, or writing its checkpoints.
    #[error("{0}")]
    InUse(String),
    /// A checkpoint that cannot be found, read, verified or decoded.
    #[error("{0}")]
    Checkpoint(String),
    /// A checkpoint that could not be written. Its temporary folder is gone and the previous
    /// checkpoint and `latest` are as they were.
    #[error(
        "step {step}: cannot write checkpoint {name} in {}: {error}; it needs {} and {} is free there (the previous checkpoint and `latest` are kept); free some space, then continue with: train --resume {}",
        dir.display(), mib(*needed), free.map_or_else(|| "an unknown amount".to_string(), mib), run.display()
    )]
    CheckpointWrite {
        step: usize,
        /// The checkpoints folder, and the run folder it belongs to.
        dir: PathBuf,
        run: PathBuf,
        name: String,
        /// Bytes the checkpoint's files take, and the bytes free on that disk.
        needed: u64,
        free: Option<u64>,
        error: std::io::Error,
    },
    /// Ranks training together that cannot: they disagree on the config, the data or the
    /// weights, or the run's shape does not divide among them.
    #[error("{0}")]
    Cluster(String),
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
