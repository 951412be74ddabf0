//! OpenAI's GPT-2 encoding (`r50k_base`), through the `tiktoken-rs` crate, which carries its
//! ranks: byte for byte what nanoGPT's `prepare.py` gets from
//! `tiktoken.get_encoding("gpt2").encode_ordinary`, with no download (Python's tiktoken fetches
//! the ranks from the network at first use). Byte-level, so every text encodes.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// GPT-2's vocabulary: 50,256 merged byte sequences and `<|endoftext|>`.
pub const VOCAB_SIZE: usize = 50_257;

/// `<|endoftext|>`, which nanoGPT's openwebtext puts after every document.
pub const EOT: u32 = 50_256;

fn bpe() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::r50k_base().expect("the ranks built into tiktoken-rs parse"))
}

/// The ids of `text` (special tokens are ordinary text, as `encode_ordinary`).
pub fn encode(text: &str) -> Vec<u32> {
    bpe().encode_ordinary(text)
}

/// The bytes of `ids`; an id outside the vocabulary (a padded row) gives none.
pub fn decode_bytes(ids: &[u32]) -> Vec<u8> {
    let bpe = bpe();
    ids.iter()
        .flat_map(|&id| bpe.decode_bytes(&[id]).unwrap_or_default())
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
}
