//! The input texts of `ember prepare`: files and folders expanded into a list of files, each
//! read once to check it is UTF-8 text and to count and fingerprint it, and then streamed in
//! pieces that end on whole characters.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::TrainError;

/// Bytes read at a time.
const READ: usize = 1 << 20;

/// One input file, as the first pass found it.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub bytes: u64,
    pub chars: u64,
    pub sha256: String,
}

/// The files `paths` name: files as they are, folders by every file under them (in name order,
/// hidden ones left out). An input named twice is read once.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TrainError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        let mut found = Vec::new();
        collect(path, &mut found)?;
        for file in found {
            if seen.insert(file.clone()) {
                files.push(file);
            }
        }
    }
    if files.is_empty() {
        return Err(TrainError::Data(
            "no input files: name text files or folders that hold some".into(),
        ));
    }
    Ok(files)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), TrainError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| TrainError::Data(format!("{}: cannot read: {e}", path.display())))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| TrainError::Data(format!("{}: cannot read the folder: {e}", path.display())))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        collect(&entry, out)?;
    }
    Ok(())
}

/// Reads `path` through: its size, character count and SHA-256, each piece of text handed to
/// `each` (for a vocabulary of characters). Refuses a file that is not UTF-8 text, naming the
/// first bad byte.
pub fn scan(path: &Path, mut each: impl FnMut(&str)) -> Result<Input, TrainError> {
    let mut hash = Sha256::new();
    let (mut bytes, mut chars) = (0u64, 0u64);
    for_each_text(path, |text, raw| {
        hash.update(raw);
        bytes += raw.len() as u64;
        chars += text.chars().count() as u64;
        each(text);
        Ok(())
    })?;
    Ok(Input {
        path: path.to_path_buf(),
        bytes,
        chars,
        sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// Calls `f` with `path`'s text in pieces of about a MiB that end on whole characters, and the
/// bytes of each piece (the same bytes: the text is checked, not converted).
pub fn for_each_text(
    path: &Path,
    mut f: impl FnMut(&str, &[u8]) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::Data(format!("{}: cannot read: {e}", path.display()));
    let mut reader = BufReader::with_capacity(READ, File::open(path).map_err(io)?);
    let (mut buf, mut offset) = (Vec::with_capacity(READ + 4), 0u64);
    loop {
        let kept = buf.len();
        buf.resize(kept + READ, 0);
        let n = reader.read(&mut buf[kept..]).map_err(io)?;
        buf.truncate(kept + n);
        let end = n == 0;
        let valid = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            // The last character may continue in the next read.
            Err(e) if e.error_len().is_none() && !end => e.valid_up_to(),
            Err(e) => {
                return Err(TrainError::Data(format!(
                    "{}: not UTF-8 text (invalid byte at offset {}): prepare text files only",
                    path.display(),
                    offset + e.valid_up_to() as u64
                )));
            }
        };
        if valid > 0 {
            let text = std::str::from_utf8(&buf[..valid]).expect("checked above");
            f(text, &buf[..valid])?;
        }
        offset += valid as u64;
        buf.drain(..valid);
        if end {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_scanned_whole_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let text = "é".repeat(READ); // characters that straddle the reads
        std::fs::write(dir.path().join("b.txt"), &text).unwrap();
        std::fs::write(dir.path().join("a.txt"), "abc").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        let files = expand(&[dir.path().to_path_buf(), dir.path().join("a.txt")]).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("a.txt"));
        let mut seen = String::new();
        let input = scan(&files[1], |t| seen.push_str(t)).unwrap();
        assert_eq!((input.bytes, input.chars), (2 * READ as u64, READ as u64));
        assert_eq!(seen, text);
        std::fs::write(dir.path().join("bin"), b"ok\n\xff\xfe").unwrap();
        let err = scan(&dir.path().join("bin"), |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "bin: not UTF-8 text (invalid byte at offset 3): prepare text files only"
            ),
            "{err}"
        );
        let err = expand(&[dir.path().join("none")]).unwrap_err().to_string();
        assert!(err.contains("none: cannot read"), "{err}");
    }
}
