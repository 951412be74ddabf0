//! The run folder `runs/<name>/` and crash-safe writes into it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::TrainError;

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// torn one: a temporary file beside it, fsync'ed, renamed over, and the folder fsync'ed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        write_synced(&tmp, bytes)?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable only once the folder is.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` and waits until they are on the disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates a new run folder under `out`. An explicit `name` that exists is refused, so that no
/// earlier run is overwritten; a generated one (`<stem>-<UTC time>`) gets a `-2`, `-3`... suffix.
pub fn create_run_dir(out: &Path, name: &str, stem: &str) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(out).map_err(|e| {
        TrainError::RunFolder(format!(
            "{}: cannot create the output folder: {e}",
            out.display()
        ))
    })?;
    if !name.is_empty() {
        if name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(TrainError::RunFolder(format!(
                "run.name `{name}` must be a plain folder name"
            )));
        }
        let dir = out.join(name);
        return match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(TrainError::RunFolder(format!(
                    "{}: a run of that name already exists; choose another run.name (nothing was overwritten)",
                    dir.display()
                )))
            }
            Err(e) => Err(TrainError::RunFolder(format!(
                "{}: cannot create the run folder: {e}",
                dir.display()
            ))),
        };
    }
    let base = format!("{stem}-{}", utc_stamp(SystemTime::now()));
    for n in 1.. {
        let dir = out.join(if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(TrainError::RunFolder(format!(
                    "{}: cannot create the run folder: {e}",
                    dir.display()
                )));
            }
        }
    }
    unreachable!("an unbounded search always finds a free name")
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_utc_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_790_912); // 2026-11-27 14:48:32 UTC
        assert_eq!(utc_stamp(t), "20261127-144832");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
    }

    #[test]
    fn never_reuses_a_run_folder() {
        let out = std::env::temp_dir().join(format!("ember-rundir-{}", std::process::id()));
        let a = create_run_dir(&out, "", "tiny").unwrap();
        let b = create_run_dir(&out, "", "tiny").unwrap();
        assert_ne!(a, b);
        create_run_dir(&out, "mine", "tiny").unwrap();
        let err = create_run_dir(&out, "mine", "tiny").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        atomic_write(&a.join("x.txt"), b"one").unwrap();
        atomic_write(&a.join("x.txt"), b"two").unwrap();
        assert_eq!(fs::read_to_string(a.join("x.txt")).unwrap(), "two");
        fs::remove_dir_all(out).unwrap();
    }
}
