//! Printing tokens as they are generated: a byte-level token may end in the middle of a
//! character (an emoji is often two or three GPT-2 tokens), so bytes are held back until they
//! complete one, and never printed as broken UTF-8.

/// Bytes in, whole characters out.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text `bytes` complete, after what earlier calls held back. Bytes that can never be
    /// UTF-8 (a model may produce them) come out as U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match e.error_len() {
                        // An incomplete character at the end: wait for the rest.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is still held back, once no more bytes will come.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_tokens_come_out_whole() {
        let rocket = "🚀".as_bytes(); // four bytes
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"go "), "go ");
        assert_eq!(s.push(&rocket[..1]), "");
        assert_eq!(s.push(&rocket[1..3]), "");
        assert_eq!(s.push(&[rocket[3], b'!']), "🚀!");
        assert_eq!(s.push(&[0xFF, b'a', 0xE2]), "\u{FFFD}a");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert_eq!(s.finish(), "");
    }
}
