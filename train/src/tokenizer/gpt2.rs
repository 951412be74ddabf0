//! OpenAI's GPT-2 encoding (`r50k_base`): byte for byte what nanoGPT's `prepare.py` gets from
//! `tiktoken.get_encoding("gpt2").encode_ordinary`, with no download (Python's tiktoken fetches
//! the ranks from the network at first use; the `tiktoken-rs` crate carries them).
//!
//! Encoding is two steps: GPT-2's pattern splits the text into pieces, and each piece is merged
//! into tokens by rank. tiktoken-rs runs the pattern on `fancy-regex`, a backtracking engine,
//! because of one look-ahead (`\s+(?!\S)`: a run of spaces gives its last space to the word that
//! follows); that was 70% of `ember prepare`'s time, and half the speed of Python's tiktoken. Here
//! the pattern without the look-ahead runs on the `regex` crate's automata, and the look-ahead is
//! applied to each whitespace match by hand ([`pieces`]); the merging is tiktoken-rs's own
//! (`byte_pair_split`), on its ranks. Equality with tiktoken-rs is tested on varied text below,
//! and with Python's tiktoken on Tiny Shakespeare and a committed fixture (`tests/tokens.rs`).

use std::sync::OnceLock;

use regex::Regex;
use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, Rank};

/// GPT-2's vocabulary: 50,256 merged byte sequences and `<|endoftext|>`.
pub const VOCAB_SIZE: usize = 50_257;

/// `<|endoftext|>`, which nanoGPT's openwebtext puts after every document.
pub const EOT: u32 = 50_256;

/// GPT-2's pattern without its look-ahead: the last alternative, `\s+`, takes a whole run of
/// whitespace, which [`pieces`] shortens as `\s+(?!\S)` would.
const PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

struct Gpt2 {
    core: CoreBPE,
    ranks: FxHashMap<Vec<u8>, Rank>,
    pattern: Regex,
}

fn gpt2() -> &'static Gpt2 {
    static GPT2: OnceLock<Gpt2> = OnceLock::new();
    GPT2.get_or_init(|| {
        let core = tiktoken_rs::r50k_base().expect("the ranks built into tiktoken-rs parse");
        // tiktoken-rs keeps its rank table private; reading each token's bytes back builds the
        // same table.
        let ranks = (0..EOT)
            .map(|rank| {
                let bytes = core
                    .decode_bytes(&[rank])
                    .expect("every rank below EOT is a token");
                (bytes, rank)
            })
            .collect();
        let pattern = Regex::new(PATTERN).expect("the pattern is valid");
        Gpt2 {
            core,
            ranks,
            pattern,
        }
    })
}

/// The pieces GPT-2's pattern splits `text` into (`'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+|
/// ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
fn pieces<'t>(pattern: &Regex, text: &'t str) -> impl Iterator<Item = &'t str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let found = pattern.find_at(text, at)?;
        let mut end = found.end();
        // A run of whitespace followed by something else leaves its last character to what
        // follows (` word`, or a run of its own): `\s+(?!\S)` backtracking by one.
        let run = found.as_str();
        let whitespace = run.chars().all(char::is_whitespace);
        if end < text.len() && whitespace && run.chars().nth(1).is_some() {
            end -= run.chars().next_back().expect("a run").len_utf8();
        }
        at = end;
        Some(&text[found.start()..end])
    })
}

/// The ids of `text` (special tokens are ordinary text, as `encode_ordinary`).
pub fn encode(text: &str) -> Vec<u32> {
    let gpt2 = gpt2();
    let mut ids = Vec::with_capacity(text.len() / 3);
    for piece in pieces(&gpt2.pattern, text) {
        match gpt2.ranks.get(piece.as_bytes()) {
            Some(&rank) => ids.push(rank),
            None => ids.extend(
                tiktoken_rs::byte_pair_split(piece.as_bytes(), &gpt2.ranks)
                    .into_iter()
                    .map(|part| gpt2.ranks[part]),
            ),
        }
    }
    ids
}

/// The bytes of `ids`; an id outside the vocabulary (a padded row) gives none.
pub fn decode_bytes(ids: &[u32]) -> Vec<u8> {
    let core = &gpt2().core;
    ids.iter()
        .flat_map(|&id| core.decode_bytes(&[id]).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_round_trip() {
        // tiktoken.get_encoding("gpt2").encode_ordinary("Hello world\n\nFirst Citizen:")
        let ids = encode("Hello world\n\nFirst Citizen:");
        assert_eq!(ids, [15496, 995, 198, 198, 5962, 22307, 25]);
        assert_eq!(decode_bytes(&ids), b"Hello world\n\nFirst Citizen:");
        assert_eq!(decode_bytes(&[EOT]), b"<|endoftext|>");
        assert_eq!(decode_bytes(&[50_300]), b"");
        // Special tokens are ordinary text to encode_ordinary.
        assert_ne!(encode("<|endoftext|>"), [EOT]);
    }

    /// The same ids as tiktoken-rs's own encoder (fancy-regex with the look-ahead) on text that
    /// exercises every alternative of the pattern and every kind of whitespace run.
    #[test]
    fn equals_tiktoken_rs_everywhere() {
        let reference = tiktoken_rs::r50k_base().unwrap();
        let samples = [
            crate::corpus::TINY_SHAKESPEARE,
            "  leading spaces, trailing spaces   ",
            "tabs\t\tand\t newlines\n\n\n  indented\r\n\r\nwindows \u{a0}nbsp\u{3000}ideographic",
            "it's we'll they're I've you'd he'd 'quoted' don't DON'T 'll",
            "numbers 123 4567890 3.14 ١٢٣ ½ ⅷ x2 2x",
            "symbols !!! ??? ... --- *** @#$% (parens) [brackets] {braces} <|endoftext|>",
            "émigré naïve Ελληνικά Русский 中文字符 日本語のテキスト 한국어 עברית العربية हिन्दी",
            "emoji 🚀🚀 👩‍👩‍👧 🇫🇷 flags and ZWJ sequences; combining é (e\u{301})",
            " \n \n\t \u{2028}x\u{2029}y  \n",
            "",
            " ",
            "\n",
            "a\n",
        ];
        for text in samples {
            assert_eq!(encode(text), reference.encode_ordinary(text), "{text:?}");
        }
        // Every cut of a messy line, so that no position's rule is missed.
        let messy = "a  b\t\tc\n\n d's 12  3 ! ?  é\u{a0} x";
        for end in (0..=messy.len()).filter(|&i| messy.is_char_boundary(i)) {
            let text = &messy[..end];
            assert_eq!(encode(text), reference.encode_ordinary(text), "{text:?}");
        }
    }
}
