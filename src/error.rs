//! The one error type of the `ember` library: what failed in choosing a backend, reading a
//! saved model, evaluating, importing, benchmarking or drawing a report. The binaries add
//! context with `anyhow` at their edge.

use std::path::{Path, PathBuf};

use ember_model::ModelError;
use ember_train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Training, its config, data, run folder or checkpoints.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A safetensors file that is not a model Ember can read or write.
    #[error("{}: {error}", path.display())]
    Model { path: PathBuf, error: ModelError },
    /// A `--device` that this build or this machine cannot run.
    #[error("{0}")]
    Backend(String),
    /// Ranks that cannot train together: MPI that does not start, or a launcher's job in a
    /// build without MPI.
    #[error("{0}")]
    Cluster(String),
    /// A command-line value that cannot work (`--batch-size 0`, a `--run` that is no folder).
    #[error("{0}")]
    Usage(String),
    /// A text, vocabulary or model that do not fit together.
    #[error("{0}")]
    Data(String),
    /// A `metrics.jsonl` line that is not a step's figures (`path:line: why`).
    #[error("{0}")]
    Metrics(String),
    /// A report picture that could not be drawn or written.
    #[error("{}: cannot draw: {why}", path.display())]
    Draw { path: PathBuf, why: String },
    // The io::Error is part of the message, not a `source`, so that `{:#}` says it once.
    #[error("{}: {what}: {error}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Maps an io::Error on `path` to [`Error::Io`]; `what` says what was being done (`cannot read`).
pub(crate) fn io<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |error| Error::Io {
        path: path.to_path_buf(),
        what,
        error,
    }
}
