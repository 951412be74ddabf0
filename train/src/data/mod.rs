//! What a run trains on: a tokenizer and its training and validation token streams, and the
//! random windows drawn from them, as nanoGPT's `get_batch`.
//!
//! `data.path` names either a text (a UTF-8 file, or Tiny Shakespeare built in), split by
//! characters (`data.val_fraction`) and encoded when the run starts, or a folder of token files
//! made beforehand, memory-mapped, as large as the disk allows:
//! - `ember prepare`'s: `meta.json` (the tokenizer and the counts), `train.bin`, `val.bin`, and
//!   the tokenizer's file;
//! - nanoGPT's: `train.bin` and `val.bin` of GPT-2 tokens (`uint16`, no header);
//! - llm.c's: shards `*_train_*.bin` and `*_val_*.bin` (a 1 KiB header, then `uint16` GPT-2
//!   tokens), used in name order.

mod meta;
mod tokens;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

pub use meta::{DatasetMeta, FORMAT, Source, TokenWidth};
pub use tokens::{LLMC_MAGIC, LLMC_VERSION, TokenFile, Tokens};

use crate::config::DataSection;
use crate::corpus::{self, TINY_SHAKESPEARE_NAME};
use crate::error::TrainError;
use crate::rng::SplitMix64;
use crate::tokenizer::{Bpe, CharTokenizer, Tokenizer, TokenizerKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// A run's tokenizer and data.
#[derive(Debug)]
pub struct Data {
    pub tokenizer: Tokenizer,
    pub dataset: Dataset,
    /// What the banner says the data is.
    pub name: String,
}

/// The two splits' tokens.
#[derive(Debug)]
pub struct Dataset {
    train: Tokens,
    val: Tokens,
    /// Every token is below it (the tokenizer's vocabulary).
    vocab: usize,
    /// UTF-8 bytes of text per token in the validation split, to turn a loss per token into bits
    /// per byte, a figure that compares across tokenizers.
    val_bytes_per_token: f64,
}

/// A batch of windows: `inputs[i, t]` is followed by `targets[i, t]` in the data.
pub struct Batch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
}

impl Data {
    /// The data `config` names, and its tokenizer: for a new run (`saved` is `None`) the one
    /// `data.tokenizer` asks for (a BPE is learnt from the text), for a resumed one the
    /// checkpoint's, which the data must share. Windows are `context` tokens long.
    pub fn load(
        config: &DataSection,
        context: usize,
        saved: Option<Tokenizer>,
    ) -> Result<Self, TrainError> {
        let path = Path::new(&config.path);
        if !config.path.is_empty() && path.is_dir() {
            Self::from_folder(path, config, saved)?.checked(context)
        } else {
            Self::from_text(&corpus::load_text(&config.path)?, config, context, saved)
        }
    }

    /// [`Data::load`] of a text in memory rather than the one `data.path` names.
    pub fn from_text(
        text: &str,
        config: &DataSection,
        context: usize,
        saved: Option<Tokenizer>,
    ) -> Result<Self, TrainError> {
        Self::encode_text(text, config, saved)?.checked(context)
    }

    /// Refuses a split too short for one window of `context` tokens and its targets.
    fn checked(self, context: usize) -> Result<Self, TrainError> {
        for (name, split) in [("training", Split::Train), ("validation", Split::Val)] {
            let tokens = self.dataset.tokens(split);
            if tokens.windows(context) == 0 {
                return Err(TrainError::Data(format!(
                    "the {name} split has {} tokens but needs more than the context ({context}); \
                     use a longer text or a smaller model.context / data.val_fraction",
                    tokens.len()
                )));
            }
        }
        Ok(self)
    }

    /// A text split by characters, each part encoded (as nanoGPT's `prepare.py` does).
    fn encode_text(
        text: &str,
        config: &DataSection,
        saved: Option<Tokenizer>,
    ) -> Result<Self, TrainError> {
        let kind = config.tokenizer.unwrap_or_default();
        let chars = text.chars().count();
        let n_train = (chars as f64 * (1.0 - config.val_fraction)) as usize;
        let split_at = text
            .char_indices()
            .nth(n_train)
            .map_or(text.len(), |(i, _)| i);
        let (train_text, val_text) = text.split_at(split_at);
        let tokenizer = match saved {
            Some(saved) => {
                check_kind(&saved, kind, &config.path)?;
                if let Tokenizer::Char(c) = &saved
                    && CharTokenizer::from_text(text) != *c
                {
                    return Err(TrainError::Data(format!(
                        "the training text's characters differ from the checkpoint's vocabulary ({} characters); resume with the same data.path",
                        c.vocab_size()
                    )));
                }
                saved
            }
            None => match kind {
                TokenizerKind::Char => Tokenizer::Char(CharTokenizer::from_text(text)),
                TokenizerKind::Gpt2 => Tokenizer::Gpt2,
                TokenizerKind::Bpe => Tokenizer::Bpe(Box::new(Bpe::train(
                    paragraphs(train_text).map(str::to_string),
                    config.vocab_size,
                )?)),
            },
        };
        let encode = |part: &str| {
            tokenizer
                .encode(part)
                .map_err(|e| TrainError::Data(format!("the training text: {e}")))
        };
        let (train, val) = (encode(train_text)?, encode(val_text)?);
        let name = match config.path.as_str() {
            "" => TINY_SHAKESPEARE_NAME.to_string(),
            path => path.to_string(),
        };
        Ok(Self {
            name: format!("{name} ({chars} chars, {} tokens)", train.len() + val.len()),
            dataset: Dataset {
                vocab: tokenizer.vocab_size(),
                val_bytes_per_token: val_text.len() as f64 / val.len().max(1) as f64,
                train: Tokens::Memory(train),
                val: Tokens::Memory(val),
            },
            tokenizer,
        })
    }

    /// A folder of token files (see the module's doc).
    fn from_folder(
        dir: &Path,
        config: &DataSection,
        saved: Option<Tokenizer>,
    ) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::Data(format!("{}: {why}", dir.display()));
        let meta_path = dir.join("meta.json");
        let (tokenizer, train, val, val_bytes_per_token) = if meta_path.is_file() {
            let meta = DatasetMeta::read(&meta_path)?;
            let tokenizer = match meta.tokenizer.file_name() {
                Some(file) => {
                    let path = dir.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| bad(format!("{file}: cannot read the tokenizer: {e}")))?;
                    Tokenizer::from_file(meta.tokenizer, Some(&text), &path.to_string_lossy())?
                }
                None => Tokenizer::from_file(meta.tokenizer, None, "")?,
            };
            if tokenizer.vocab_size() != meta.vocab_size {
                return Err(bad(format!(
                    "meta.json says {} tokens but the tokenizer has {}",
                    meta.vocab_size,
                    tokenizer.vocab_size()
                )));
            }
            let file = |name: &str, want: u64| -> Result<Tokens, TrainError> {
                let f = TokenFile::raw(&dir.join(name), meta.dtype)?;
                if f.len() as u64 != want {
                    return Err(bad(format!(
                        "{name} holds {} tokens but meta.json says {want}: an interrupted copy?",
                        f.len()
                    )));
                }
                Ok(Tokens::Files(vec![f]))
            };
            let train = file("train.bin", meta.train_tokens)?;
            let val = file("val.bin", meta.val_tokens)?;
            let per_token = meta.val_bytes as f64 / meta.val_tokens.max(1) as f64;
            (tokenizer, train, val, per_token)
        } else {
            let (train, val) = gpt2_files(dir)?;
            let per_token = gpt2_bytes_per_token(&val)?;
            (Tokenizer::Gpt2, train, val, per_token)
        };
        // A resumed run's own tokenizer first: changing data.tokenizer is no way out there.
        if let Some(saved) = saved
            && saved != tokenizer
        {
            return Err(bad(format!(
                "these tokens were made with a {} tokenizer{}, not the checkpoint's ({}); resume with the dataset the run was trained on",
                tokenizer.kind(),
                if tokenizer.kind() == saved.kind() {
                    " of another vocabulary"
                } else {
                    ""
                },
                saved.kind()
            )));
        }
        check_kind(
            &tokenizer,
            config.tokenizer.unwrap_or(tokenizer.kind()),
            &config.path,
        )?;
        let name = format!(
            "{} ({} + {} tokens, {})",
            dir.display(),
            train.len(),
            val.len(),
            tokenizer.kind()
        );
        Ok(Self {
            name,
            dataset: Dataset {
                vocab: tokenizer.vocab_size(),
                train,
                val,
                val_bytes_per_token,
            },
            tokenizer,
        })
    }
}

/// Refuses a tokenizer other than the one `data.tokenizer` names (`wanted`).
fn check_kind(tokenizer: &Tokenizer, wanted: TokenizerKind, path: &str) -> Result<(), TrainError> {
    if tokenizer.kind() == wanted {
        return Ok(());
    }
    Err(TrainError::Config {
        origin: "data.tokenizer".into(),
        key: None,
        message: format!(
            "`{wanted}` was asked for but {} is {} data; leave data.tokenizer unset or set it to `{}`",
            if path.is_empty() { "the run's" } else { path },
            tokenizer.kind(),
            tokenizer.kind()
        ),
    })
}

/// nanoGPT's `train.bin`/`val.bin` or llm.c's shards in `dir`, both GPT-2 tokens.
fn gpt2_files(dir: &Path) -> Result<(Tokens, Tokens), TrainError> {
    let bad = |why: String| TrainError::Data(format!("{}: {why}", dir.display()));
    let (train, val) = (dir.join("train.bin"), dir.join("val.bin"));
    if train.is_file() || val.is_file() {
        if dir.join("meta.pkl").is_file() {
            return Err(bad(
                "nanoGPT's meta.pkl holds a character vocabulary as a Python pickle, which Ember does not read; \
                 train on the text instead, or prepare it with `ember prepare --tokenizer char`"
                    .into(),
            ));
        }
        let raw = |p: &Path| TokenFile::raw(p, TokenWidth::Uint16).map(|f| Tokens::Files(vec![f]));
        return Ok((raw(&train)?, raw(&val)?));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(format!("cannot read the folder: {e}")))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    names.sort();
    let shards = |which: &str| -> Result<Tokens, TrainError> {
        let files = names
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(which))
            })
            .map(|p| TokenFile::llmc(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tokens::Files(files))
    };
    let (train, val) = (shards("_train_")?, shards("_val_")?);
    if train.is_empty() || val.is_empty() {
        return Err(bad(
            "not a token dataset: expected ember prepare's meta.json, nanoGPT's train.bin and val.bin, \
             or llm.c's *_train_*.bin and *_val_*.bin shards"
                .into(),
        ));
    }
    Ok((train, val))
}

/// UTF-8 bytes per token of GPT-2 tokens, counted by decoding them.
fn gpt2_bytes_per_token(tokens: &Tokens) -> Result<f64, TrainError> {
    let mut bytes = 0u64;
    tokens.for_each_block(|block| {
        bytes += crate::tokenizer::gpt2::decode_bytes(block).len() as u64
    })?;
    Ok(bytes as f64 / tokens.len().max(1) as f64)
}

/// `text` in pieces of about a paragraph, for a BPE trainer (which counts words piece by piece).
fn paragraphs(text: &str) -> impl Iterator<Item = &str> + Send {
    text.split_inclusive("\n\n")
}

impl Dataset {
    pub fn tokens(&self, split: Split) -> &Tokens {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Tokens held in memory (a text's; token files are mapped, and only the windows drawn are
    /// read).
    pub fn tokens_in_memory(&self) -> usize {
        [&self.train, &self.val]
            .iter()
            .map(|t| match t {
                Tokens::Memory(t) => t.len(),
                Tokens::Files(_) => 0,
            })
            .sum()
    }

    /// UTF-8 bytes of text per validation token (1 for ASCII characters).
    pub fn val_bytes_per_token(&self) -> f64 {
        self.val_bytes_per_token
    }

    /// What ranks training together compare to agree that they hold the same data with
    /// `tokenizer`: the tokenizer, the splits' lengths and 256 tokens spread over each split
    /// (reading every token of a dataset of gigabytes would take longer than training starts).
    pub fn fingerprint(&self, tokenizer: &Tokenizer) -> Result<u64, TrainError> {
        let mut summary = format!("{} {} ", tokenizer.kind(), self.vocab).into_bytes();
        if let Some((name, text)) = tokenizer.file() {
            summary.extend_from_slice(name.as_bytes());
            summary.extend_from_slice(text.as_bytes());
        }
        let mut sampled = Vec::new();
        for tokens in [&self.train, &self.val] {
            summary.extend_from_slice(&tokens.len().to_le_bytes());
            let spread = tokens.windows(0).max(1);
            for i in 0..256u64 {
                tokens.window(i * spread / 256, 0, self.vocab, &mut sampled)?;
            }
        }
        summary.extend(sampled.iter().flat_map(|t| t.to_le_bytes()));
        Ok(crate::cluster::fingerprint(&summary))
    }

    /// `batch_size` windows of `context` tokens at uniformly drawn offsets.
    pub fn batch(
        &self,
        split: Split,
        batch_size: usize,
        context: usize,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Result<Batch, TrainError> {
        let tokens = self.tokens(split);
        let mut windows = Vec::with_capacity(batch_size * (context + 1));
        for _ in 0..batch_size {
            let index = rng.below(tokens.windows(context) as usize) as u64;
            tokens.window(index, context, self.vocab, &mut windows)?;
        }
        let (mut inputs, mut targets) = (
            Vec::with_capacity(batch_size * context),
            Vec::with_capacity(batch_size * context),
        );
        for window in windows.chunks_exact(context + 1) {
            inputs.extend(window[..context].iter().map(|&t| i64::from(t)));
            targets.extend(window[1..].iter().map(|&t| i64::from(t)));
        }
        let tensor =
            |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [batch_size, context]), device);
        Ok(Batch {
            inputs: tensor(inputs),
            targets: tensor(targets),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokenizer: Option<TokenizerKind>) -> DataSection {
        DataSection {
            tokenizer,
            ..DataSection::default()
        }
    }

    #[test]
    fn a_text_is_split_by_characters_then_encoded() {
        let d = Data::from_text(&"ab".repeat(50), &config(None), 8, None).unwrap();
        let (train, val) = (d.dataset.tokens(Split::Train), d.dataset.tokens(Split::Val));
        assert_eq!((train.len(), val.len()), (90, 10));
        assert_eq!(d.dataset.val_bytes_per_token(), 1.0);
        let text = "Hello world. ".repeat(30);
        let gpt2 = Data::from_text(&text, &config(Some(TokenizerKind::Gpt2)), 8, None).unwrap();
        assert!(gpt2.dataset.tokens(Split::Train).len() < 90);
        assert!(gpt2.dataset.val_bytes_per_token() > 3.0);
    }

    #[test]
    fn a_split_shorter_than_a_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        let mut c = config(None);
        c.path = path.to_string_lossy().into_owned();
        let err = Data::load(&c, 10, None).unwrap_err();
        assert!(
            err.to_string().contains("validation split has 10 tokens"),
            "{err}"
        );
    }
}
