//! `ember prepare`: text files (or folders of them) into a dataset folder that `train --data`
//! memory-maps: `train.bin` and `val.bin` (little-endian `uint16` tokens, nanoGPT's format, or
//! `uint32` for a vocabulary above 65,536), `meta.json` ([`DatasetMeta`]) and the tokenizer's
//! file.
//!
//! As nanoGPT's `prepare.py`: the text is split by characters (the last `val_fraction` is
//! validation) and each part is encoded, and documents (input files) are separated by the
//! end-of-text token when the tokenizer has one, as nanoGPT's openwebtext does. One file of Tiny
//! Shakespeare gives exactly nanoGPT's `data/shakespeare` tokens.
//!
//! It streams: each input is read twice (once to check, count and fingerprint it, once to encode
//! it), a MiB at a time, and encoded on every core in pieces that end where GPT-2's split pattern
//! always ends a piece (before a line break that follows a non-space character), so that encoding
//! the pieces apart gives the tokens of the whole. Memory stays bounded however large the input.
//!
//! It is atomic: everything is written into `OUT.partial-PID` beside `OUT`, fsync'ed, and renamed
//! into place only when complete. A failure (a full disk, a bad input, Ctrl-C) removes it; a
//! `kill -9` leaves it under that name, which `train` never reads, and the next prepare of the
//! same `OUT` removes it.

mod inputs;

pub use inputs::expand as input_files;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::TrainError;
use crate::data::{DatasetMeta, FORMAT, Source, TokenWidth};
use crate::tokenizer::{Bpe, CharTokenizer, Tokenizer, TokenizerKind};

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareSpec {
    /// Text files, or folders of them.
    pub inputs: Vec<PathBuf>,
    /// The dataset folder to create (it must not exist).
    pub out: PathBuf,
    pub tokenizer: TokenizerKind,
    /// The BPE vocabulary's size (`bpe` only).
    pub vocab_size: usize,
    pub val_fraction: f64,
}

/// Text per piece encoded at once.
const PIECE: usize = 1 << 20;
/// A piece is cut anywhere (between characters) when no safe place comes within this much text:
/// a line this long may tokenize differently where it is cut.
const LONGEST_PIECE: usize = 16 << 20;

/// Prepares the dataset; `progress` is called with the bytes of text read and the tokens
/// written so far, and `stop` (set by Ctrl-C) abandons the work, leaving nothing behind.
pub fn prepare(
    spec: &PrepareSpec,
    progress: &dyn Fn(u64, u64),
    stop: &AtomicBool,
) -> Result<DatasetMeta, TrainError> {
    if !(spec.val_fraction > 0.0 && spec.val_fraction < 1.0) {
        return Err(TrainError::Data(format!(
            "--val-fraction {}: expected a fraction strictly between 0 and 1",
            spec.val_fraction
        )));
    }
    if spec.out.exists() {
        return Err(TrainError::Data(format!(
            "{}: already exists; choose another --out (nothing was overwritten)",
            spec.out.display()
        )));
    }
    let files = inputs::expand(&spec.inputs)?;
    // First pass: check, count and fingerprint every input (and gather a vocabulary of
    // characters).
    let mut chars = std::collections::BTreeSet::new();
    let char_level = spec.tokenizer == TokenizerKind::Char;
    let sources = files
        .iter()
        .map(|f| {
            inputs::scan(f, |text| {
                if char_level {
                    chars.extend(text.chars());
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total_chars: u64 = sources.iter().map(|s| s.chars).sum();
    if total_chars == 0 {
        return Err(TrainError::Data(
            "the inputs hold no text; nothing to prepare".into(),
        ));
    }
    let train_chars = (total_chars as f64 * (1.0 - spec.val_fraction)) as u64;
    let tokenizer = match spec.tokenizer {
        TokenizerKind::Char => Tokenizer::Char(CharTokenizer::from_chars(chars)),
        TokenizerKind::Gpt2 => Tokenizer::Gpt2,
        TokenizerKind::Bpe => {
            let text = training_text(&files, train_chars);
            Tokenizer::Bpe(Box::new(Bpe::train(text, spec.vocab_size)?))
        }
    };
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());
    let partial = partial_dir(&spec.out)?;
    remove_stale_partials(&spec.out);
    let written = (|| {
        if let Some(parent) = partial.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_error(parent))?;
        }
        std::fs::create_dir(&partial).map_err(write_error(&partial))?;
        let mut splits = [
            SplitWriter::create(&partial.join("train.bin"), width)?,
            SplitWriter::create(&partial.join("val.bin"), width)?,
        ];
        let mut encoder = Encoder {
            tokenizer: &tokenizer,
            safe_cuts: !char_level,
            pending: Vec::new(),
            splits: &mut splits,
            read: 0,
            progress,
            stop,
        };
        // Characters of text before the current piece, against the split point.
        let mut seen = 0u64;
        for (i, file) in files.iter().enumerate() {
            let mut document = String::new();
            let mut split = usize::from(seen >= train_chars);
            inputs::for_each_text(file, |mut text, _| {
                let n = text.chars().count() as u64;
                if split == 0 && seen + n > train_chars {
                    // The split falls in this piece: what comes before it ends the training
                    // split (whatever of the document is still waiting included).
                    let before = (train_chars - seen) as usize;
                    let at = text
                        .char_indices()
                        .nth(before)
                        .map_or(text.len(), |(b, _)| b);
                    document.push_str(&text[..at]);
                    encoder.cut(&mut document, 0, true)?;
                    text = &text[at..];
                    split = 1;
                }
                seen += n;
                document.push_str(text);
                encoder.cut(&mut document, split, false)
            })?;
            encoder.cut(&mut document, split, true)?;
            if i + 1 < files.len()
                && let Some(eot) = tokenizer.eot()
            {
                encoder.pending.push(Job::Eot(split, eot));
            }
        }
        encoder.flush()?;
        let [train, val] = splits;
        let (train, val) = (train.finish()?, val.finish()?);
        let meta = DatasetMeta {
            format: FORMAT.to_string(),
            tokenizer: tokenizer.kind(),
            vocab_size: tokenizer.vocab_size(),
            dtype: width,
            eot: tokenizer.eot(),
            train_tokens: train.0,
            val_tokens: val.0,
            train_bytes: train.1,
            val_bytes: val.1,
            val_fraction: spec.val_fraction,
            sources: sources
                .iter()
                .map(|s| Source {
                    path: s.path.display().to_string(),
                    bytes: s.bytes,
                    sha256: s.sha256.clone(),
                })
                .collect(),
        };
        let write = |name: &str, text: &str| {
            let path = partial.join(name);
            crate::run_dir::write_synced(&path, text.as_bytes()).map_err(write_error(&path))
        };
        if let Some((name, text)) = tokenizer.file() {
            write(name, &text)?;
        }
        write("meta.json", &meta.to_json())?;
        File::open(&partial)
            .and_then(|d| d.sync_all())
            .map_err(write_error(&partial))?;
        std::fs::rename(&partial, &spec.out).map_err(write_error(&spec.out))?;
        if let Some(parent) = spec.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(meta)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    written
}

/// `OUT.partial-PID`, beside `out` (on the same disk, so that the rename is atomic).
fn partial_dir(out: &Path) -> Result<PathBuf, TrainError> {
    let name = out.file_name().ok_or_else(|| {
        TrainError::Data(format!(
            "--out {}: expected a folder path such as data/shakespeare",
            out.display()
        ))
    })?;
    let partial = format!("{}.partial-{}", name.to_string_lossy(), std::process::id());
    Ok(out.with_file_name(partial))
}

/// Removes the `OUT.partial-PID` folders of prepares that were killed (`kill -9`, a lost
/// machine): their process is gone, `train` never reads them, and they hold a half dataset's
/// disk. A folder whose process still runs (another prepare, or a reused PID) is left alone.
fn remove_stale_partials(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_string_lossy()
            .strip_prefix(&prefix)
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !crate::sys::process_alive(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| {
        TrainError::Data(format!(
            "{}: cannot write: {e}; nothing was kept (free some space or fix the path, then run again)",
            path.display()
        ))
    }
}

/// The training part of the inputs (their first `train_chars` characters) in pieces of about a
/// paragraph, for learning a BPE. Read again from the files: the whole text is never held.
fn training_text(files: &[PathBuf], train_chars: u64) -> impl Iterator<Item = String> + Send {
    let files = files.to_vec();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<String>(16);
    std::thread::spawn(move || {
        let mut left = train_chars;
        for file in files {
            let sent = inputs::for_each_text(&file, |text, _| {
                if left == 0 {
                    return Err(TrainError::Data("done".into()));
                }
                let n = text.chars().count() as u64;
                let text = match n <= left {
                    true => text,
                    false => {
                        &text[..text
                            .char_indices()
                            .nth(left as usize)
                            .map_or(text.len(), |(b, _)| b)]
                    }
                };
                left -= n.min(left);
                for paragraph in text.split_inclusive("\n\n") {
                    sender
                        .send(paragraph.to_string())
                        .map_err(|_| TrainError::Data("stopped".into()))?;
                }
                Ok(())
            });
            if sent.is_err() {
                break;
            }
        }
    });
    receiver.into_iter()
}

/// What to write next, in order.
enum Job {
    /// Text to encode into a split (0 train, 1 val).
    Text(usize, String),
    /// The end-of-text token between two documents.
    Eot(usize, u32),
}

/// A job's tokens, and the bytes of text they came from.
struct Encoded {
    split: usize,
    tokens: Vec<u32>,
    bytes: u64,
}

/// Cuts documents into pieces and encodes them in parallel batches, in order.
struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    /// Whether pieces must end where the split pattern ends one (byte-level tokenizers); a
    /// character-level text may be cut anywhere.
    safe_cuts: bool,
    pending: Vec<Job>,
    splits: &'a mut [SplitWriter; 2],
    read: u64,
    progress: &'a dyn Fn(u64, u64),
    stop: &'a AtomicBool,
}

impl Encoder<'_> {
    /// Moves whole pieces of `document` (all of it if `end`) into the queue for `split`, and
    /// encodes the queue once there is a batch for every core.
    fn cut(&mut self, document: &mut String, split: usize, end: bool) -> Result<(), TrainError> {
        while document.len() >= PIECE || (end && !document.is_empty()) {
            let at = match end && document.len() < PIECE {
                true => document.len(),
                false => self.cut_point(document),
            };
            let rest = document.split_off(at);
            self.pending
                .push(Job::Text(split, std::mem::replace(document, rest)));
        }
        if self.pending.len() >= 4 * rayon::current_num_threads() {
            self.flush()?;
        }
        Ok(())
    }

    /// Where to end the next piece of `text`: the last safe place in its first `PIECE` bytes (the
    /// first one after, for a longer line; a character boundary past `LONGEST_PIECE`).
    fn cut_point(&self, text: &str) -> usize {
        let boundary = |at: usize| {
            (at..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len())
        };
        if !self.safe_cuts {
            return boundary(PIECE.min(text.len()));
        }
        let safe = |i: &usize| {
            *i > 0
                && text.as_bytes()[*i] == b'\n'
                && !text[..*i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace)
        };
        let limit = PIECE.min(text.len());
        (1..limit)
            .rev()
            .find(safe)
            .or_else(|| (limit..text.len().min(LONGEST_PIECE)).find(safe))
            .unwrap_or_else(|| boundary(LONGEST_PIECE.min(text.len())))
    }

    /// Encodes the queue on every core and writes the tokens in order.
    fn flush(&mut self) -> Result<(), TrainError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(TrainError::Data("interrupted; nothing was kept".into()));
        }
        let jobs = std::mem::take(&mut self.pending);
        let encoded: Vec<Encoded> = jobs
            .into_par_iter()
            .map(|job| match job {
                Job::Text(split, text) => Ok(Encoded {
                    split,
                    tokens: self.tokenizer.encode(&text)?,
                    bytes: text.len() as u64,
                }),
                Job::Eot(split, eot) => Ok(Encoded {
                    split,
                    tokens: vec![eot],
                    bytes: 0,
                }),
            })
            .collect::<Result<_, TrainError>>()?;
        for e in encoded {
            self.splits[e.split].write(&e.tokens, e.bytes)?;
            self.read += e.bytes;
        }
        let tokens = self.splits.iter().map(|s| s.tokens).sum();
        (self.progress)(self.read, tokens);
        Ok(())
    }
}

/// One split's token file being written.
struct SplitWriter {
    path: PathBuf,
    out: BufWriter<File>,
    width: TokenWidth,
    tokens: u64,
    /// Bytes of text encoded into this split.
    bytes: u64,
}

impl SplitWriter {
    fn create(path: &Path, width: TokenWidth) -> Result<Self, TrainError> {
        let file = File::create(path).map_err(write_error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            width,
            tokens: 0,
            bytes: 0,
        })
    }

    fn write(&mut self, tokens: &[u32], bytes: u64) -> Result<(), TrainError> {
        let result = match self.width {
            TokenWidth::Uint16 => tokens.iter().try_for_each(|&t| {
                let t = u16::try_from(t).expect("the width holds the vocabulary");
                self.out.write_all(&t.to_le_bytes())
            }),
            TokenWidth::Uint32 => tokens
                .iter()
                .try_for_each(|&t| self.out.write_all(&t.to_le_bytes())),
        };
        result.map_err(write_error(&self.path))?;
        self.tokens += tokens.len() as u64;
        self.bytes += bytes;
        Ok(())
    }

    /// Flushes and fsyncs the file; its token and text byte counts.
    fn finish(self) -> Result<(u64, u64), TrainError> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| write_error(&self.path)(e.into_error()))?;
        file.sync_all().map_err(write_error(&self.path))?;
        Ok((self.tokens, self.bytes))
    }
}
