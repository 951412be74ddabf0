//! The default training text: Tiny Shakespeare, embedded in the binary so that `train` runs
//! anywhere with no download, on the text whose losses everyone quotes (nanoGPT reaches a
//! val loss of 1.88 on it with its CPU recipe, 1.47 on a GPU). Provenance in `data/README.md`.
//! Or the user's text, read here.

use crate::TrainError;

/// Tiny Shakespeare (karpathy/char-rnn's `input.txt`), 1,115,394 bytes.
pub const TINY_SHAKESPEARE: &str = include_str!("../../data/tinyshakespeare.txt");

/// What the default text is called in banners and errors.
pub const TINY_SHAKESPEARE_NAME: &str = "Tiny Shakespeare, built in";

/// The training text `data.path` names: that UTF-8 file, or Tiny Shakespeare when it is empty.
pub fn load_text(path: &str) -> Result<String, TrainError> {
    if path.is_empty() {
        return Ok(TINY_SHAKESPEARE.to_string());
    }
    let bytes = std::fs::read(path)
        .map_err(|e| TrainError::Data(format!("{path}: cannot read the training text: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        TrainError::Data(format!(
            "{path}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if text.is_empty() {
        return Err(TrainError::Data(format!(
            "{path}: the training text is empty"
        )));
    }
    Ok(text)
}

/// What the training text is called in the banner.
pub fn text_name(path: &str) -> &str {
    if path.is_empty() {
        TINY_SHAKESPEARE_NAME
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_text_is_tiny_shakespeare() {
        use sha2::{Digest, Sha256};
        assert_eq!(TINY_SHAKESPEARE.len(), 1_115_394);
        let digest = format!("{:x}", Sha256::digest(TINY_SHAKESPEARE.as_bytes()));
        assert_eq!(
            digest,
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
        );
        assert!(TINY_SHAKESPEARE.starts_with("First Citizen:\nBefore we proceed any further"));
        let mut chars: Vec<char> = TINY_SHAKESPEARE.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 65);
    }
}
