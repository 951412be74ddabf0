//! A byte-level BPE trained on the user's own text, with Hugging Face's `tokenizers` (its pure
//! Rust build: no C regex library), in GPT-2's style: the text is split with GPT-2's pattern, no
//! space is added before it, and every byte is in the initial alphabet, so that every text
//! encodes. It is saved as a standard `tokenizer.json`, which Python's `tokenizers` and
//! `transformers` load and encode to the same ids (`tests/tokens.rs` checks a committed fixture).

use std::collections::HashSet;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

use crate::TrainError;
use crate::guard::without_panic;

/// The special token that separates documents, as in GPT-2 (id 0 in a trained vocabulary).
pub const EOT: &str = "<|endoftext|>";

/// A trained byte-level BPE.
#[derive(Clone)]
pub struct Bpe {
    tokenizer: Tokenizer,
    /// `byte_of[c]` for each of the 256 characters byte-level BPE writes bytes as.
    byte_of: std::collections::HashMap<char, u8>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bpe({} tokens)", self.vocab_size())
    }
}

impl PartialEq for Bpe {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Bpe {
    /// Learns a vocabulary of at most `vocab_size` tokens (the 256 bytes, `<|endoftext|>` and
    /// merges of pairs that occur at least twice) from `texts`, deterministically.
    pub fn train<I>(texts: I, vocab_size: usize) -> Result<Self, TrainError>
    where
        I: Iterator<Item = String> + Send,
    {
        let failed = |e: &dyn std::fmt::Display| TrainError::Data(format!("BPE training: {e}"));
        let min = 256 + 1;
        if vocab_size < min {
            return Err(TrainError::Data(format!(
                "a byte-level BPE needs a vocabulary of at least {min} tokens (the 256 bytes and {EOT}), not {vocab_size}"
            )));
        }
        let byte_level = ByteLevel::default().add_prefix_space(false);
        let mut tokenizer: Tokenizer = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(ModelWrapper::from(BPE::default()))
        .with_pre_tokenizer(Some(byte_level.into()))
        .with_decoder(Some(byte_level.into()))
        .with_post_processor(Some(byte_level.trim_offsets(false).into()))
        .build()
        .map_err(|e| failed(&e))?
        .into();
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOT, true)])
            .initial_alphabet(alphabet)
            .build()
            .into();
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| failed(&e))?;
        Ok(Self::from_tokenizer(tokenizer))
    }

    /// A saved `tokenizer.json`; `source` names it in the error. It must be a byte-level BPE
    /// (Ember's, or GPT-2's as Hugging Face saves it).
    pub fn from_json(json: &str, source: &str) -> Result<Self, TrainError> {
        let invalid = |why: String| TrainError::Data(format!("{source}: {why}"));
        // tokenizers 0.23 panics on some malformed files (a decoder's `unwrap` found by
        // tests/fuzz.rs) where it should return an error.
        let tokenizer: Tokenizer = without_panic("the tokenizer", || {
            json.parse::<Tokenizer>().map_err(|e| e.to_string())
        })
        .map_err(|e| invalid(format!("not a tokenizer.json Ember can read ({e})")))?;
        if !matches!(tokenizer.get_model(), ModelWrapper::BPE(_)) {
            return Err(invalid("the model is not a BPE".into()));
        }
        let byte_level = tokenizer
            .get_pre_tokenizer()
            .is_some_and(|p| serde_json::to_value(p).is_ok_and(|v| v["type"] == "ByteLevel"));
        if !byte_level {
            return Err(invalid(
                "not a byte-level BPE (its pre-tokenizer is not ByteLevel): some texts would not encode"
                    .into(),
            ));
        }
        if tokenizer.get_vocab_size(true) == 0 {
            return Err(invalid("the vocabulary is empty".into()));
        }
        Ok(Self::from_tokenizer(tokenizer))
    }

    fn from_tokenizer(tokenizer: Tokenizer) -> Self {
        let byte_of = byte_chars()
            .into_iter()
            .enumerate()
            .map(|(b, c)| (c, b as u8))
            .collect();
        Self { tokenizer, byte_of }
    }

    /// Tokens, the special ones included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// `<|endoftext|>`'s id, when the vocabulary has it.
    pub fn eot(&self) -> Option<u32> {
        self.tokenizer.token_to_id(EOT)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TrainError::Data(format!("BPE encoding: {e}")))
    }

    /// The bytes of `ids`; an id outside the vocabulary (a padded row) gives none.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            let Some(token) = self.tokenizer.id_to_token(id) else {
                continue;
            };
            // A special token is its text; an ordinary one is bytes written as characters.
            match token
                .chars()
                .map(|c| self.byte_of.get(&c))
                .collect::<Option<Vec<_>>>()
            {
                Some(bytes) => out.extend(bytes.into_iter().copied()),
                None => out.extend(token.as_bytes()),
            }
        }
        out
    }

    /// The standard `tokenizer.json`.
    pub fn to_json(&self) -> String {
        self.tokenizer
            .to_string(true)
            .expect("a tokenizer always serializes")
    }
}

/// The character byte-level BPE writes byte `b` as (GPT-2's `bytes_to_unicode`): printable
/// Latin-1 bytes as themselves, the others as the characters from U+0100 on, in order.
/// `tokenizers` has the table but keeps it private to the crate.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    std::array::from_fn(|b| {
        let b = b as u8;
        if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> impl Iterator<Item = String> + Send {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(40)
            + "Où est la gare ? 東京 🚀\n\n";
        std::iter::once(text)
    }

    #[test]
    fn trains_encodes_and_decodes_every_byte() {
        // At most the size asked for: merging stops when no pair occurs twice more.
        let bpe = Bpe::train(corpus(), 300).unwrap();
        assert!(
            (258..=300).contains(&bpe.vocab_size()),
            "{}",
            bpe.vocab_size()
        );
        assert_eq!(bpe.eot(), Some(0));
        for text in [
            "the lazy fox",
            "Où est 東京 🚀?",
            "\u{0}\u{7f} tabs\tand\r\nbreaks",
            "",
        ] {
            let ids = bpe.encode(text).unwrap();
            assert_eq!(bpe.decode_bytes(&ids), text.as_bytes(), "{text:?}");
        }
        // Merges shorten frequent text.
        assert!(bpe.encode("the quick brown fox").unwrap().len() < 10);
        let saved = Bpe::from_json(&bpe.to_json(), "tokenizer.json").unwrap();
        assert_eq!(
            saved.encode("jumps over").unwrap(),
            bpe.encode("jumps over").unwrap()
        );
    }

    #[test]
    fn training_is_deterministic() {
        let a = Bpe::train(corpus(), 320).unwrap();
        let b = Bpe::train(corpus(), 320).unwrap();
        assert_eq!(a.to_json(), b.to_json());
    }

    #[test]
    fn bad_tokenizer_files_are_named() {
        let err = Bpe::from_json("{not json", "t.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.json: not a tokenizer.json Ember can read"),
            "{err}"
        );
        let err = Bpe::train(corpus(), 100).unwrap_err().to_string();
        assert!(err.contains("at least 257 tokens"), "{err}");
    }

    #[test]
    fn the_byte_table_is_gpt2s() {
        let table = byte_chars();
        assert_eq!(
            (table[b'A' as usize], table[b' ' as usize], table[0]),
            ('A', 'Ġ', 'Ā')
        );
        let set: HashSet<char> = table.into_iter().collect();
        assert_eq!(set, ByteLevel::alphabet().into_iter().collect());
    }
}
