//! `meta.json`, the description `ember prepare` writes beside a dataset's `train.bin` and
//! `val.bin`: how the tokens were made (tokenizer, vocabulary, width), how many there are and how
//! many bytes of text they stand for (for bits per byte), and where the text came from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::tokenizer::TokenizerKind;

/// The `format` of the meta.json this build writes and reads.
pub const FORMAT: &str = "ember-tokens-1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMeta {
    pub format: String,
    pub tokenizer: TokenizerKind,
    /// Tokens the tokenizer has; every id in the files is below it.
    pub vocab_size: usize,
    /// `uint16` (nanoGPT's format) or `uint32` (a vocabulary above 65,536).
    pub dtype: TokenWidth,
    /// The token between documents, if the tokenizer has one.
    pub eot: Option<u32>,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// UTF-8 bytes of the text each split was made from.
    pub train_bytes: u64,
    pub val_bytes: u64,
    /// The fraction of the text (by characters) in the validation split.
    pub val_fraction: f64,
    pub sources: Vec<Source>,
}

/// One input text file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How a token is stored: little-endian unsigned integers of this width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    Uint16,
    Uint32,
}

impl TokenWidth {
    /// The narrowest width that holds every id below `vocab_size` (nanoGPT's uint16 when it
    /// can).
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenWidth::Uint16
        } else {
            TokenWidth::Uint32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::Uint16 => 2,
            TokenWidth::Uint32 => 4,
        }
    }
}

impl DatasetMeta {
    /// Reads `path`, refusing another format or figures that cannot be.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::Data(format!("{}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let meta: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format `{}` is not one this build reads ({FORMAT}); prepare the data again with this build",
                meta.format
            )));
        }
        if meta.vocab_size == 0
            || TokenWidth::for_vocab(meta.vocab_size).bytes() > meta.dtype.bytes()
        {
            return Err(bad(format!(
                "a vocabulary of {} tokens does not fit in {:?}",
                meta.vocab_size, meta.dtype
            )));
        }
        Ok(meta)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the meta serializes")
    }
}
