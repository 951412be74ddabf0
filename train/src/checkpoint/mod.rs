//! Checkpoints that never lose work.
//!
//! A checkpoint is a folder `runs/<name>/checkpoints/step-NNNNNNN/` holding everything needed to
//! continue exactly: `model.bpk` and `optimizer.bpk` (burnpack), `state.json` (format version,
//! step, elapsed training time), the resolved `config.toml` and the tokenizer's file
//! (`vocab.json` or `tokenizer.json`; none for GPT-2's, which is built in), and a
//! `manifest.json` with the SHA-256 of each of those files, verified on load.
//!
//! The LR schedule position, the batch stream and the data cursor need no saved state beyond the
//! step: the schedule is a function of the step, and every batch is drawn from a generator keyed
//! by (seed, step) (see `rng.rs`), so a resumed run draws exactly the batches it would have.
//!
//! Writes are crash-safe: the folder is written under a temporary name, every file and the
//! folder are fsync'ed, it is renamed into place, and only then does the `latest` file (itself
//! replaced atomically) point at it. A crash or `kill -9` at any moment leaves the previous
//! checkpoint and `latest` intact; a write that fails (a full disk) removes its temporary
//! folder and leaves them intact too. The last `keep_last` checkpoints are kept.
//!
//! Readers take the checkpoints folder's shared lock (see `lock.rs`) and, given a run folder,
//! fall back from a damaged newest checkpoint to the newest one that verifies.

mod records;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use ember_model::Gpt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::config::RunConfig;
use crate::lock::{CheckpointLock, run_dir_of_checkpoints};
use crate::run_dir::{atomic_write, write_synced};
use crate::sys::free_disk_bytes;
use crate::tokenizer::{TOKENIZER_JSON, Tokenizer, TokenizerKind, VOCAB_JSON};

pub use records::{decode_model, decode_optimizer, write_model};

/// Bumped whenever the layout or meaning of a checkpoint changes: 2 added tokenizers other than
/// characters (the tokenizer's file may be `tokenizer.json`, or absent). Format 1 checkpoints
/// (a `vocab.json` always) still load.
pub const FORMAT_VERSION: u32 = 2;

const MANIFEST: &str = "manifest.json";
const LATEST: &str = "latest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format_version: u32,
    /// Optimizer updates done; a resumed run continues with step `step + 1`.
    pub step: usize,
    pub train_time_s: f64,
    pub ember_version: String,
    /// Settings changed on resume with `--change-optimizer`, oldest first: from this step on
    /// the run is no longer what an uninterrupted one would have been.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<SettingChange>,
    /// The ranks that trained together up to this step (1: one process). A run resumed with
    /// another number trains on as well, but is no longer bit-identical to an uninterrupted one.
    #[serde(default = "one_rank", skip_serializing_if = "is_one_rank")]
    pub ranks: usize,
}

fn one_rank() -> usize {
    1
}

fn is_one_rank(ranks: &usize) -> bool {
    *ranks == 1
}

/// One setting changed when a run was resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingChange {
    /// The checkpoint's step the run resumed from.
    pub step: usize,
    /// `section.key`.
    pub key: String,
    pub from: String,
    pub to: String,
}

/// The files of a checkpoint, as bytes.
pub struct CheckpointFiles {
    pub model: Vec<u8>,
    /// `None` when the checkpoint was read for its model alone ([`Parts::Model`]).
    pub optimizer: Option<Vec<u8>>,
    pub state: CheckpointState,
    pub config_toml: String,
    /// The tokenizer's file, `(name, text)`: `vocab.json` or `tokenizer.json`, none for GPT-2.
    pub tokenizer_file: Option<(String, String)>,
}

impl CheckpointState {
    /// The state of a checkpoint after `step` updates (`train_time_s` of training, `changes`
    /// made on resume), written by this version of Ember.
    pub fn new(step: usize, train_time_s: f64, changes: Vec<SettingChange>) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            step,
            train_time_s,
            ember_version: env!("CARGO_PKG_VERSION").to_string(),
            changes,
            ranks: 1,
        }
    }
}

/// Writes a file at the path it is given.
type FileWriter<'a> = Box<dyn FnOnce(&Path) -> std::io::Result<()> + 'a>;

/// A file of a checkpoint: its bytes, or what writes it to the path it is given (a Burn record
/// serialized straight into its file) with the bytes it is expected to take.
enum FileContents<'a> {
    Bytes(&'a [u8]),
    Written { bytes: u64, write: FileWriter<'a> },
}

impl FileContents<'_> {
    fn len(&self) -> u64 {
        match self {
            FileContents::Bytes(bytes) => bytes.len() as u64,
            FileContents::Written { bytes, .. } => *bytes,
        }
    }
}

impl CheckpointFiles {
    /// The run's config and tokenizer as the checkpoint `dir` holds them: the tokenizer's kind
    /// is the config's `data.tokenizer` (for checkpoints from before there were kinds, the one
    /// its file is for).
    pub fn config_and_tokenizer(&self, dir: &Path) -> Result<(RunConfig, Tokenizer), TrainError> {
        let config: RunConfig = toml::from_str(&self.config_toml)
            .map_err(|e| TrainError::Checkpoint(format!("{}: config.toml: {e}", dir.display())))?;
        let file = self.tokenizer_file.as_ref();
        let kind = config.data.tokenizer.unwrap_or(match file {
            Some((name, _)) if name == TOKENIZER_JSON => TokenizerKind::Bpe,
            _ => TokenizerKind::Char,
        });
        let source = dir.join(kind.file_name().unwrap_or(VOCAB_JSON));
        let tokenizer = Tokenizer::from_file(
            kind,
            file.map(|(_, text)| text.as_str()),
            &source.to_string_lossy(),
        )?;
        Ok((config, tokenizer))
    }
}

/// The checkpoints of one run.
pub struct Checkpoints {
    dir: PathBuf,
    keep_last: usize,
}

impl Checkpoints {
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        Self {
            dir: run_dir.join("checkpoints"),
            keep_last: keep_last.max(1),
        }
    }

    /// Writes the checkpoint of `model` and `optim` in `state` with the run's `config` and
    /// vocabulary (what [`load`], [`decode_model`] and [`decode_optimizer`] read back)
    /// atomically, points `latest` at it and prunes old ones; returns its folder. On failure
    /// nothing is left half-written ([`TrainError::CheckpointWrite`]).
    ///
    /// Each record is serialized straight into its file, one after the other, from the weights'
    /// and the moments' own buffers ([`write_model`], and the optimizer's state recorded by
    /// `optim::Moments`): a checkpoint adds neither a copy of them nor their serialized bytes to
    /// the process's memory.
    pub fn save(
        &self,
        model: &Gpt,
        optim: &ModuleOptimizer,
        state: &CheckpointState,
        config: &RunConfig,
        tokenizer: &Tokenizer,
    ) -> Result<PathBuf, TrainError> {
        let name = format!("step-{:07}", state.step);
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let record_error = |e: burn::store::RecordError| std::io::Error::other(e.to_string());
        let params = model.num_params() as u64;
        let state_json = serde_json::to_vec_pretty(state).expect("the state serializes");
        let config_toml = config.to_toml();
        let tokenizer_file = tokenizer.file();
        let mut entries: Vec<(&str, FileContents<'_>)> = vec![
            (
                "model.bpk",
                FileContents::Written {
                    bytes: 4 * params,
                    write: Box::new(|path| write_model(model, path).map_err(std::io::Error::other)),
                },
            ),
            (
                "optimizer.bpk",
                FileContents::Written {
                    bytes: 8 * params,
                    write: Box::new(|path| optim.save(path).map_err(record_error)),
                },
            ),
            ("state.json", FileContents::Bytes(&state_json)),
            ("config.toml", FileContents::Bytes(config_toml.as_bytes())),
        ];
        if let Some((name, text)) = &tokenizer_file {
            entries.push((name, FileContents::Bytes(text.as_bytes())));
        }
        let needed = entries.iter().map(|(_, c)| c.len()).sum();
        let result = fs::create_dir_all(&self.dir)
            .and_then(|()| CheckpointLock::write(&self.dir))
            .and_then(|_lock| self.write(&name, &tmp, entries));
        result.map_err(|error| {
            // Never leave a half-written folder behind; what failed is the error to report.
            let _ = fs::remove_dir_all(&tmp);
            TrainError::CheckpointWrite {
                step: state.step,
                run: run_dir_of_checkpoints(&self.dir),
                dir: self.dir.clone(),
                needed,
                free: free_disk_bytes(&self.dir),
                name,
                error,
            }
        })
    }

    /// The steps of [`Self::save`] under the write lock.
    fn write(
        &self,
        name: &str,
        tmp: &Path,
        entries: Vec<(&str, FileContents<'_>)>,
    ) -> std::io::Result<PathBuf> {
        if tmp.exists() {
            fs::remove_dir_all(tmp)?;
        }
        fs::create_dir(tmp)?;
        // Each file is hashed on another thread while the next is written: a record's file is
        // hashed by reading it back, a second of a GPT-2 124M checkpoint.
        let manifest = std::thread::scope(|scope| {
            let mut digests = Vec::new();
            for (file, contents) in entries {
                let path = tmp.join(file);
                let digest = match contents {
                    FileContents::Bytes(bytes) => {
                        write_synced(&path, bytes)?;
                        scope.spawn(move || Ok(sha256(bytes)))
                    }
                    FileContents::Written { write, .. } => {
                        write(&path)?;
                        fs::File::open(&path)?.sync_all()?;
                        scope.spawn(move || sha256_of_file(&path))
                    }
                };
                digests.push((file.to_string(), digest));
            }
            digests
                .into_iter()
                .map(|(file, digest)| Ok((file, digest.join().expect("hashing does not panic")?)))
                .collect::<std::io::Result<BTreeMap<String, String>>>()
        })?;
        let manifest = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        write_synced(&tmp.join(MANIFEST), &manifest)?;
        fs::File::open(tmp)?.sync_all()?;
        let dest = self.dir.join(name);
        if dest.exists() {
            // A checkpoint of the same step from an earlier, interrupted attempt: replace it.
            fs::remove_dir_all(&dest)?;
        }
        fs::rename(tmp, &dest)?;
        fs::File::open(&self.dir)?.sync_all()?;
        atomic_write(&self.dir.join(LATEST), name.as_bytes())?;
        self.prune(name)?;
        Ok(dest)
    }

    /// Removes all but the newest `keep_last` checkpoints (never `keep`), and leftovers of
    /// interrupted writes.
    fn prune(&self, keep: &str) -> std::io::Result<()> {
        let mut steps: Vec<String> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                fs::remove_dir_all(self.dir.join(&name))?;
            } else if name.starts_with("step-") {
                steps.push(name);
            }
        }
        steps.sort();
        let excess = steps.len().saturating_sub(self.keep_last);
        for name in steps.into_iter().take(excess).filter(|n| n != keep) {
            fs::remove_dir_all(self.dir.join(name))?;
        }
        Ok(())
    }
}

/// The checkpoint folder `path` names: a run folder (its latest checkpoint), its `checkpoints`
/// folder, or a checkpoint folder itself.
pub fn resolve(path: &Path) -> Result<PathBuf, TrainError> {
    if path.join(MANIFEST).is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = checkpoints_dir(path);
    let latest = dir.join(LATEST);
    let name = fs::read_to_string(&latest).map_err(|_| {
        TrainError::Checkpoint(format!("{}: no checkpoint here (expected a run folder, its checkpoints folder or a step-N folder)", path.display()))
    })?;
    let ckpt = dir.join(name.trim());
    if ckpt.join(MANIFEST).is_file() {
        Ok(ckpt)
    } else {
        Err(TrainError::Checkpoint(format!(
            "{}: points at {}, which is not a checkpoint",
            latest.display(),
            ckpt.display()
        )))
    }
}

/// A checkpoint read and verified, and the newer ones passed over because they were damaged.
pub struct Opened {
    pub dir: PathBuf,
    pub files: CheckpointFiles,
    /// Why each newer checkpoint was passed over, newest first.
    pub skipped: Vec<String>,
}

impl Opened {
    /// What to tell the user when newer checkpoints were passed over.
    pub fn fallback_note(&self) -> Option<String> {
        (!self.skipped.is_empty()).then(|| {
            format!(
                "{}; using {}, the newest checkpoint that verifies",
                self.skipped.join("; "),
                self.dir.display()
            )
        })
    }
}

/// What of a checkpoint a reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything: what a resumed run needs.
    All,
    /// The model alone, for generation, evaluation and export: the optimizer's state (two thirds
    /// of the bytes, 1 GB at GPT-2 124M) is neither read nor verified, and a checkpoint whose
    /// optimizer file alone is damaged still serves its model.
    Model,
}

/// Reads and verifies the checkpoint `path` names (see [`resolve`]) under the checkpoints' read
/// lock. A checkpoint folder named itself is that checkpoint or an error; given a run folder or
/// its checkpoints folder, a latest checkpoint that fails verification is passed over for the
/// newest older one that verifies, and the reasons are returned in [`Opened::skipped`].
pub fn open(path: &Path) -> Result<Opened, TrainError> {
    open_parts(path, Parts::All)
}

/// [`open`], reading and verifying only the files `parts` names.
pub fn open_parts(path: &Path, parts: Parts) -> Result<Opened, TrainError> {
    if path.join(MANIFEST).is_file() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let _lock = CheckpointLock::read(parent.unwrap_or(Path::new(".")))?;
        return Ok(Opened {
            files: load_parts(path, parts)?,
            dir: path.to_path_buf(),
            skipped: Vec::new(),
        });
    }
    let _lock = CheckpointLock::read(&checkpoints_dir(path))?;
    let latest = resolve(path)?;
    let mut skipped = Vec::new();
    for candidate in std::iter::once(latest.clone()).chain(older_than(&latest)) {
        match load_parts(&candidate, parts) {
            Ok(files) => {
                return Ok(Opened {
                    dir: candidate,
                    files,
                    skipped,
                });
            }
            Err(reason) => skipped.push(reason.to_string()),
        }
    }
    Err(TrainError::Checkpoint(format!(
        "{}: no checkpoint verifies ({})",
        checkpoints_dir(path).display(),
        skipped.join("; ")
    )))
}

/// The checkpoints folder of a run folder, or the folder itself if it holds `latest`.
fn checkpoints_dir(path: &Path) -> PathBuf {
    if path.join(LATEST).is_file() {
        path.to_path_buf()
    } else {
        path.join("checkpoints")
    }
}

/// The `step-N` folders beside `checkpoint` with a lower step, newest first.
fn older_than(checkpoint: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (checkpoint.parent(), checkpoint.file_name()) else {
        return Vec::new();
    };
    let mut older: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            n.to_string_lossy().starts_with("step-") && n.as_os_str() < name
        })
        .map(|e| e.path())
        .collect();
    older.sort();
    older.reverse();
    older
}

/// The run folder a checkpoint folder belongs to.
pub fn run_dir_of(checkpoint: &Path) -> PathBuf {
    checkpoint
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads a checkpoint and verifies every file against the manifest.
pub fn load(dir: &Path) -> Result<CheckpointFiles, TrainError> {
    load_parts(dir, Parts::All)
}

/// Reads the files of a checkpoint `parts` names and verifies them against the manifest.
fn load_parts(dir: &Path, parts: Parts) -> Result<CheckpointFiles, TrainError> {
    let damaged = |file: &str, why: &dyn std::fmt::Display| {
        TrainError::Checkpoint(format!("{}: {why}", dir.join(file).display()))
    };
    let read = |file: &str| fs::read(dir.join(file)).map_err(|e| damaged(file, &e));
    let manifest: BTreeMap<String, String> = serde_json::from_slice(&read(MANIFEST)?)
        .map_err(|e| damaged(MANIFEST, &format!("unreadable manifest: {e}")))?;
    // Every file the manifest lists is one this build reads, and is verified below: a damaged
    // name must not make a listed file look absent (a tokenizer file is optional).
    const FILES: [&str; 6] = [
        "state.json",
        "model.bpk",
        "optimizer.bpk",
        "config.toml",
        VOCAB_JSON,
        TOKENIZER_JSON,
    ];
    if let Some(unknown) = manifest.keys().find(|k| !FILES.contains(&k.as_str())) {
        return Err(damaged(
            MANIFEST,
            &format!("lists {unknown:?}, which is not a checkpoint file: the manifest is damaged"),
        ));
    }
    let verified = |file: &str| {
        let bytes = read(file)?;
        match manifest.get(file) {
            None => Err(damaged(file, &"missing from the manifest")),
            Some(want) if sha256(&bytes) != *want => {
                Err(damaged(file, &"checksum mismatch, the file is damaged"))
            }
            Some(_) => Ok(bytes),
        }
    };
    let state: CheckpointState = serde_json::from_slice(&verified("state.json")?)
        .map_err(|e| damaged("state.json", &format!("unreadable: {e}")))?;
    if !(1..=FORMAT_VERSION).contains(&state.format_version) {
        return Err(TrainError::Checkpoint(format!(
            "{}: checkpoint format {} is not supported by this build (format {FORMAT_VERSION})",
            dir.display(),
            state.format_version
        )));
    }
    let text =
        |file: &str| String::from_utf8(verified(file)?).map_err(|_| damaged(file, &"not UTF-8"));
    let tokenizer_file = [VOCAB_JSON, TOKENIZER_JSON]
        .into_iter()
        .find(|name| manifest.contains_key(*name))
        .map(|name| Ok::<_, TrainError>((name.to_string(), text(name)?)))
        .transpose()?;
    Ok(CheckpointFiles {
        model: verified("model.bpk")?,
        optimizer: match parts {
            Parts::All => Some(verified("optimizer.bpk")?),
            Parts::Model => None,
        },
        config_toml: text("config.toml")?,
        tokenizer_file,
        state,
    })
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// [`sha256`] of a file's contents, read a MiB at a time.
fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
