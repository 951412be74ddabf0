//! Character-level tokenizer: one token per Unicode scalar value of the corpus, sorted, as
//! nanoGPT's `shakespeare_char` (so token ids match the PyTorch reference on the same text).

use serde::{Deserialize, Serialize};

use crate::TrainError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharTokenizer {
    /// Token id `i` is `chars[i]`; sorted and without repeats.
    chars: Vec<char>,
}

impl CharTokenizer {
    /// The vocabulary of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self { chars }
    }

    /// The vocabulary of a text whose characters are `chars` (gathered as it streamed by).
    pub fn from_chars(chars: std::collections::BTreeSet<char>) -> Self {
        Self {
            chars: chars.into_iter().collect(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The ids of `text`'s characters; [`TrainError::UnknownChar`] names the first one the
    /// vocabulary does not contain.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        text.chars()
            .enumerate()
            .map(|(index, ch)| {
                self.chars
                    .binary_search(&ch)
                    .map(|id| id as u32)
                    .map_err(|_| TrainError::UnknownChar { ch, index })
            })
            .collect()
    }

    /// Ids outside the vocabulary decode to U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| self.chars.get(id as usize).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a tokenizer always serializes")
    }

    /// A saved vocabulary (`vocab.json`); `source` names it in the error.
    pub fn from_json(json: &str, source: &str) -> Result<Self, TrainError> {
        let invalid = |why: String| TrainError::Data(format!("{source}: {why}"));
        let tok: Self = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        if tok.chars.is_empty() || !tok.chars.windows(2).all(|w| w[0] < w[1]) {
            return Err(invalid(
                "`chars` must be a non-empty, sorted list without repeats".into(),
            ));
        }
        Ok(tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_like_nanogpt() {
        let tok = CharTokenizer::from_text("hello, world é");
        assert_eq!(tok.decode(&tok.encode("world é").unwrap()), "world é");
        assert_eq!(tok.encode(" ").unwrap(), vec![0]);
        assert_eq!(tok.vocab_size(), 10);
        assert_eq!(
            CharTokenizer::from_json(&tok.to_json(), "vocab.json").unwrap(),
            tok
        );
    }

    #[test]
    fn unknown_char_is_named() {
        let err = CharTokenizer::from_text("abc").encode("abz").unwrap_err();
        assert!(matches!(err, TrainError::UnknownChar { ch: 'z', index: 2 }));
        assert_eq!(
            err.to_string(),
            "character 'z' (U+007A) at character 2 is not in the vocabulary"
        );
    }

    #[test]
    fn rejects_unsorted_vocab_json() {
        assert!(CharTokenizer::from_json(r#"{"chars":["b","a"]}"#, "vocab.json").is_err());
    }
}
