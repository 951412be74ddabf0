//! Process memory, free memory and free disk space as the operating system sees them.

use std::path::Path;

/// Resident set size of this process in bytes (0 where the platform does not say).
pub fn rss_bytes() -> u64 {
    imp::rss_bytes()
}

/// Highest resident set size this process has reached, in bytes.
///
/// On Linux from `/proc/self/status` (`VmHWM`): `getrusage`'s maximum is kept across `exec`, so
/// a program started by `cargo run` reported cargo's own peak (123 MiB for a run that peaked
/// at 81).
pub fn peak_rss_bytes() -> u64 {
    imp::peak_rss_bytes().unwrap_or_else(rusage_peak)
}

/// `getrusage`'s maximum resident set size (includes the parent's before `exec` on Linux).
fn rusage_peak() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let max = usage.ru_maxrss.max(0) as u64;
    // Linux reports KiB, macOS bytes.
    if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    }
}

/// Memory a new allocation can still get without swapping, in bytes: `MemAvailable` on Linux,
/// lowered to what is left under this process's cgroup limit (a container's `--memory`); the
/// physical memory elsewhere. `None` where the platform does not say.
pub fn available_memory_bytes() -> Option<u64> {
    imp::available_memory_bytes()
}

/// Free space for an unprivileged user on the filesystem holding `path`, in bytes (`None` off
/// Unix).
#[cfg(not(unix))]
pub fn free_disk_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Free space for an unprivileged user on the filesystem holding `path`, in bytes.
#[cfg(unix)]
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// `bytes` for people: MiB below a GiB, GiB above.
pub fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib < 1024.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

/// Physical memory, from `sysconf` (macOS and other Unix systems).
#[cfg(not(target_os = "linux"))]
fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

#[cfg(target_os = "linux")]
mod imp {
    pub fn available_memory_bytes() -> Option<u64> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let host = line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
        Some(cgroup_headroom().map_or(host, |left| left.min(host)))
    }

    /// What the memory limit of this process's cgroup (as mounted in its namespace, which is
    /// the container's own in a container) still allows: cgroup v2, then v1.
    fn cgroup_headroom() -> Option<u64> {
        let read =
            |file: &str| -> Option<u64> { std::fs::read_to_string(file).ok()?.trim().parse().ok() };
        [
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            ),
        ]
        .into_iter()
        .find_map(|(limit, usage)| Some(read(limit)?.saturating_sub(read(usage).unwrap_or(0))))
    }

    pub fn peak_rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn rss_bytes() -> u64 {
        // /proc/self/statm: size resident shared ... in pages.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
    }
}

/// Elsewhere the memory available is the physical memory, and no peak is known.
#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn available_memory_bytes() -> Option<u64> {
        super::physical_memory_bytes()
    }

    pub fn peak_rss_bytes() -> Option<u64> {
        None
    }

    #[cfg(target_os = "macos")]
    pub fn rss_bytes() -> u64 {
        // SAFETY: proc_pidinfo writes at most `size` bytes into the struct it is given.
        unsafe {
            let mut info: libc::proc_taskinfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
            let got = libc::proc_pidinfo(
                libc::getpid(),
                libc::PROC_PIDTASKINFO,
                0,
                (&mut info as *mut libc::proc_taskinfo).cast(),
                size,
            );
            if got == size {
                info.pti_resident_size
            } else {
                0
            }
        }
    }

    #[cfg(not(target_os = "macos"))]
    pub fn rss_bytes() -> u64 {
        0
    }
}

/// Whether process `pid` exists (on Unix; elsewhere every process is taken to exist, the safe
/// answer for callers that would clean up after dead ones).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 sends nothing; it only checks that the process exists.
        let sent = unsafe { libc::kill(pid, 0) };
        sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_reported_and_below_peak() {
        let (now, peak) = (super::rss_bytes(), super::peak_rss_bytes());
        assert!(now > 0 && peak > 0);
        assert!(now <= peak + 4096 * 64, "rss {now} peak {peak}");
        assert!(super::available_memory_bytes().unwrap() > 0);
        assert!(super::free_disk_bytes(std::path::Path::new(".")).unwrap() > 0);
        assert_eq!(super::mib(3 << 19), "1.5 MiB");
        assert_eq!(super::mib(3 << 29), "1.5 GiB");
    }
}
