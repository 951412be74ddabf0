//! Text to token ids and back, one interface over three tokenizers (`data.tokenizer`):
//! - `char`: one token per character of the training text ([`CharTokenizer`], nanoGPT's
//!   `shakespeare_char`), the default;
//! - `gpt2`: OpenAI's GPT-2 encoding, built in ([`gpt2`]);
//! - `bpe`: a byte-level BPE trained on the user's text ([`Bpe`]), saved as a standard
//!   `tokenizer.json`.
//!
//! A run folder, each of its checkpoints and a prepared dataset hold the tokenizer's file
//! ([`Tokenizer::file`]): `vocab.json` for `char`, `tokenizer.json` for `bpe`, none for `gpt2`,
//! whose ranks are in the binary; the kind is the config's `data.tokenizer`.

mod bpe;
mod char;
pub mod gpt2;
mod stream;

use serde::{Deserialize, Serialize};

pub use bpe::Bpe;
pub use char::CharTokenizer;
pub use stream::Utf8Stream;

use crate::TrainError;

/// Which tokenizer a run uses (`data.tokenizer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    #[default]
    Char,
    Gpt2,
    Bpe,
}

impl TokenizerKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Char => "char",
            TokenizerKind::Gpt2 => "gpt2",
            TokenizerKind::Bpe => "bpe",
        }
    }

    /// The file that holds a tokenizer of this kind (`None`: built in).
    pub fn file_name(self) -> Option<&'static str> {
        match self {
            TokenizerKind::Char => Some(VOCAB_JSON),
            TokenizerKind::Gpt2 => None,
            TokenizerKind::Bpe => Some(TOKENIZER_JSON),
        }
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A character vocabulary's file.
pub const VOCAB_JSON: &str = "vocab.json";
/// A BPE's file (Hugging Face's format).
pub const TOKENIZER_JSON: &str = "tokenizer.json";

#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    Char(CharTokenizer),
    Gpt2,
    // Boxed: a BPE is 1.5 KiB of tables, the others a few words.
    Bpe(Box<Bpe>),
}

impl Tokenizer {
    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Char(_) => TokenizerKind::Char,
            Tokenizer::Gpt2 => TokenizerKind::Gpt2,
            Tokenizer::Bpe(_) => TokenizerKind::Bpe,
        }
    }

    /// Tokens the tokenizer can produce (the model's vocabulary may be padded beyond it).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(c) => c.vocab_size(),
            Tokenizer::Gpt2 => gpt2::VOCAB_SIZE,
            Tokenizer::Bpe(b) => b.vocab_size(),
        }
    }

    /// The end-of-text token that separates documents, where the tokenizer has one.
    pub fn eot(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(_) => None,
            Tokenizer::Gpt2 => Some(gpt2::EOT),
            Tokenizer::Bpe(b) => b.eot(),
        }
    }

    /// The ids of `text`. Only `char` can refuse a text ([`TrainError::UnknownChar`]); the
    /// byte-level ones encode every text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        match self {
            Tokenizer::Char(c) => c.encode(text),
            Tokenizer::Gpt2 => Ok(gpt2::encode(text)),
            Tokenizer::Bpe(b) => b.encode(text),
        }
    }

    /// The bytes `ids` stand for: UTF-8 once whole, though a byte-level token may hold part of
    /// a character ([`Utf8Stream`] prints them as they come). Ids outside the vocabulary (padded
    /// rows) give nothing.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        match self {
            Tokenizer::Char(c) => c.decode(ids).into_bytes(),
            Tokenizer::Gpt2 => gpt2::decode_bytes(ids),
            Tokenizer::Bpe(b) => b.decode_bytes(ids),
        }
    }

    /// The text of `ids`, with U+FFFD for bytes that are not UTF-8.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// The file that holds the tokenizer (`None` for the built-in `gpt2`): its name and text.
    pub fn file(&self) -> Option<(&'static str, String)> {
        match self {
            Tokenizer::Char(c) => Some((VOCAB_JSON, c.to_json())),
            Tokenizer::Gpt2 => None,
            Tokenizer::Bpe(b) => Some((TOKENIZER_JSON, b.to_json())),
        }
    }

    /// A tokenizer of `kind` from its file's text (`None` for `gpt2`); `source` names the file
    /// in errors.
    pub fn from_file(
        kind: TokenizerKind,
        text: Option<&str>,
        source: &str,
    ) -> Result<Self, TrainError> {
        let missing = || {
            TrainError::Data(format!(
                "{source}: missing (a {kind} tokenizer is read from {})",
                kind.file_name().unwrap_or("nowhere")
            ))
        };
        match kind {
            TokenizerKind::Gpt2 => Ok(Tokenizer::Gpt2),
            TokenizerKind::Char => Ok(Tokenizer::Char(CharTokenizer::from_json(
                text.ok_or_else(missing)?,
                source,
            )?)),
            TokenizerKind::Bpe => Ok(Tokenizer::Bpe(Box::new(Bpe::from_json(
                text.ok_or_else(missing)?,
                source,
            )?))),
        }
    }
}
