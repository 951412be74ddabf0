//! The token streams windows are drawn from: a text encoded at the start of the run, in memory,
//! or token files mapped into memory (`memmap2`), as large as the disk allows.
//!
//! A mapped file's pages count in the process's resident memory once read. Windows are drawn
//! at random all over the file, so a long run on a large dataset would touch ever more of them;
//! each window's pages (and those the kernel mapped around them) are therefore handed back
//! (`MADV_DONTNEED`) as soon as its tokens are copied out. The page cache keeps them for the
//! next read, and the run's RSS stays what it is with a small dataset, whatever the dataset's
//! size.
//!
//! File formats (all little-endian):
//! - raw: tokens and nothing else, `uint16` or `uint32` (nanoGPT's `train.bin`/`val.bin`, and
//!   what `ember prepare` writes);
//! - llm.c's shards: a header of 256 `int32` (magic 20240520, version 1, token count), then
//!   `uint16` tokens.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use super::meta::TokenWidth;
use crate::TrainError;

/// llm.c's shard header: its magic number and version, and its size.
pub const LLMC_MAGIC: i32 = 20_240_520;
pub const LLMC_VERSION: i32 = 1;
const LLMC_HEADER_BYTES: usize = 256 * 4;
/// The span of one page table's pages (2 MiB on x86-64 and arm64 with 4 KiB pages).
#[cfg(unix)]
const FAULT_AROUND_BLOCK: usize = 2 << 20;

/// One mapped file of tokens.
pub struct TokenFile {
    path: PathBuf,
    map: Mmap,
    /// Bytes before the first token.
    header: usize,
    width: TokenWidth,
    len: usize,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenFile({}, {} tokens)", self.path.display(), self.len)
    }
}

impl TokenFile {
    /// A raw file of `width` tokens (nanoGPT's format).
    pub fn raw(path: &Path, width: TokenWidth) -> Result<Self, TrainError> {
        let map = map(path)?;
        if map.len() % width.bytes() != 0 {
            return Err(bad(
                path,
                format!(
                    "{} bytes is not a whole number of {}-byte tokens: a file cut short, or not a token file",
                    map.len(),
                    width.bytes()
                ),
            ));
        }
        let len = map.len() / width.bytes();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            header: 0,
            width,
            len,
        })
    }

    /// One of llm.c's shards, its header checked against its size.
    pub fn llmc(path: &Path) -> Result<Self, TrainError> {
        let map = map(path)?;
        let int = |i: usize| {
            map.get(i * 4..i * 4 + 4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let (Some(magic), Some(version), Some(count)) = (int(0), int(1), int(2)) else {
            return Err(bad(
                path,
                format!("{} bytes is too short for llm.c's 1 KiB header", map.len()),
            ));
        };
        if magic != LLMC_MAGIC {
            return Err(bad(
                path,
                format!("not an llm.c token shard (magic {magic}, expected {LLMC_MAGIC})"),
            ));
        }
        if version != LLMC_VERSION {
            return Err(bad(
                path,
                format!(
                    "llm.c shard version {version} is not supported (version {LLMC_VERSION}: uint16 tokens)"
                ),
            ));
        }
        let want = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(2))
            .and_then(|b| b.checked_add(LLMC_HEADER_BYTES));
        if want != Some(map.len()) {
            return Err(bad(
                path,
                format!(
                    "the header says {count} tokens ({} bytes with the header) but the file has {} bytes",
                    want.map_or_else(|| "an impossible number of".into(), |w| w.to_string()),
                    map.len()
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            header: LLMC_HEADER_BYTES,
            width: TokenWidth::Uint16,
            len: count as usize,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends tokens `start..start + n` to `out`, each checked to be below `vocab`, then hands
    /// their pages back to the kernel (see the module's doc).
    fn read(
        &self,
        start: usize,
        n: usize,
        vocab: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), TrainError> {
        let w = self.width.bytes();
        let (from, to) = (self.header + start * w, self.header + (start + n) * w);
        let bytes = &self.map[from..to];
        let before = out.len();
        match self.width {
            TokenWidth::Uint16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
            ),
            TokenWidth::Uint32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        if let Some(i) = out[before..].iter().position(|&t| t as usize >= vocab) {
            return Err(bad(
                &self.path,
                format!(
                    "token {} at position {} is not below the vocabulary size ({vocab}): data made with another tokenizer?",
                    out[before + i],
                    start + i
                ),
            ));
        }
        #[cfg(unix)]
        {
            // Linux maps the pages around a faulting one too ("fault-around", 64 KiB by default,
            // whatever MADV_RANDOM says on older kernels), but never past the 2 MiB block of page
            // table the fault is in: the whole block goes back, or the neighbours would stay.
            let base = self.map.as_ptr() as usize;
            let lo = ((base + from) & !(FAULT_AROUND_BLOCK - 1)).max(base);
            let hi = (base + to)
                .next_multiple_of(FAULT_AROUND_BLOCK)
                .min(base + self.map.len());
            // SAFETY: no reference into the mapping outlives this call (`bytes` is no longer
            // used); the mapping is read-only and shared, so its pages come back from the file
            // when read again.
            unsafe {
                let _ =
                    self.map
                        .unchecked_advise_range(UncheckedAdvice::DontNeed, lo - base, hi - lo);
            }
        }
        Ok(())
    }
}

fn bad(path: &Path, why: String) -> TrainError {
    TrainError::Data(format!("{}: {why}", path.display()))
}

/// Maps `path` read-only, for random access.
fn map(path: &Path) -> Result<Mmap, TrainError> {
    let file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    // SAFETY: the mapping is read-only. Another process truncating or rewriting the file while
    // the run reads it would change what is read (or raise SIGBUS): the dataset must not change
    // during a run, as with any memory-mapped data loader (nanoGPT's np.memmap included).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, format!("cannot map: {e}")))?;
    #[cfg(unix)]
    let _ = map.advise(Advice::Random);
    Ok(map)
}

/// A split's tokens.
#[derive(Debug)]
pub enum Tokens {
    /// A text encoded when the run started.
    Memory(Vec<u32>),
    /// Token files, one after the other (llm.c's shards); no window crosses from one to the
    /// next.
    Files(Vec<TokenFile>),
}

impl Tokens {
    /// Tokens in all.
    pub fn len(&self) -> u64 {
        match self {
            Tokens::Memory(t) => t.len() as u64,
            Tokens::Files(files) => files.iter().map(|f| f.len() as u64).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many windows of `context` tokens and their targets (`context + 1` tokens) there are
    /// to draw from: the count of their first positions.
    pub fn windows(&self, context: usize) -> u64 {
        match self {
            Tokens::Memory(t) => t.len().saturating_sub(context) as u64,
            Tokens::Files(files) => files
                .iter()
                .map(|f| f.len().saturating_sub(context) as u64)
                .sum(),
        }
    }

    /// Appends window `index` (of [`Tokens::windows`]), `context + 1` tokens, to `out`; file
    /// tokens are checked to be below `vocab` (a text's are by construction).
    pub fn window(
        &self,
        mut index: u64,
        context: usize,
        vocab: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), TrainError> {
        match self {
            Tokens::Memory(t) => {
                let start = index as usize;
                out.extend_from_slice(&t[start..start + context + 1]);
                Ok(())
            }
            Tokens::Files(files) => {
                for file in files {
                    let here = file.len().saturating_sub(context) as u64;
                    if index < here {
                        return file.read(index as usize, context + 1, vocab, out);
                    }
                    index -= here;
                }
                unreachable!("the index is below Tokens::windows")
            }
        }
    }

    /// Calls `f` with the tokens in order, a block at a time (file tokens unchecked), handing
    /// file pages back as it goes: to count what a split decodes to.
    pub fn for_each_block(&self, mut f: impl FnMut(&[u32])) -> Result<(), TrainError> {
        const BLOCK: usize = 1 << 20;
        match self {
            Tokens::Memory(t) => t.chunks(BLOCK).for_each(f),
            Tokens::Files(files) => {
                let mut block = Vec::with_capacity(BLOCK);
                for file in files {
                    for start in (0..file.len()).step_by(BLOCK) {
                        block.clear();
                        file.read(start, BLOCK.min(file.len() - start), usize::MAX, &mut block)?;
                        f(&block);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn llmc(count: i32, tokens: &[u16]) -> Vec<u8> {
        let mut header = [0i32; 256];
        (header[0], header[1], header[2]) = (LLMC_MAGIC, LLMC_VERSION, count);
        let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
        bytes
    }

    #[test]
    fn windows_come_from_every_file_and_never_cross_one() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0u16..10).flat_map(|t| t.to_le_bytes()).collect();
        let a = TokenFile::raw(&write(dir.path(), "a.bin", &a), TokenWidth::Uint16).unwrap();
        let b = TokenFile::llmc(&write(
            dir.path(),
            "b.bin",
            &llmc(5, &[100, 101, 102, 103, 104]),
        ))
        .unwrap();
        let tokens = Tokens::Files(vec![a, b]);
        assert_eq!((tokens.len(), tokens.windows(3)), (15, 7 + 2));
        let mut out = Vec::new();
        for i in 0..9 {
            tokens.window(i, 3, 1000, &mut out).unwrap();
        }
        assert_eq!(&out[..4], [0, 1, 2, 3]);
        assert_eq!(&out[6 * 4..7 * 4], [6, 7, 8, 9]);
        assert_eq!(&out[8 * 4..], [101, 102, 103, 104]);
        let mut all = Vec::new();
        tokens.for_each_block(|b| all.extend_from_slice(b)).unwrap();
        assert_eq!(all.len(), 15);
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = |r: Result<TokenFile, TrainError>| r.unwrap_err().to_string();
        let odd = write(dir.path(), "odd.bin", &[1, 2, 3]);
        assert!(
            err(TokenFile::raw(&odd, TokenWidth::Uint16))
                .contains("3 bytes is not a whole number of 2-byte tokens")
        );
        let short = write(dir.path(), "short.bin", &llmc(5, &[1, 2]));
        assert!(err(TokenFile::llmc(&short)).contains(
            "the header says 5 tokens (1034 bytes with the header) but the file has 1028 bytes"
        ));
        let mut wrong = llmc(2, &[1, 2]);
        wrong[0] = 7;
        let wrong = write(dir.path(), "wrong.bin", &wrong);
        assert!(err(TokenFile::llmc(&wrong)).contains("not an llm.c token shard"));
        assert!(err(TokenFile::llmc(&odd)).contains("too short for llm.c's 1 KiB header"));
        assert!(
            err(TokenFile::raw(
                &dir.path().join("none.bin"),
                TokenWidth::Uint16
            ))
            .contains("cannot open")
        );
        let big = write(dir.path(), "big.bin", &[0, 0, 0xFF, 0xFF]);
        let tokens = Tokens::Files(vec![TokenFile::raw(&big, TokenWidth::Uint16).unwrap()]);
        let e = tokens
            .window(0, 1, 50257, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("token 65535 at position 1 is not below the vocabulary size (50257)"),
            "{e}"
        );
    }
}
