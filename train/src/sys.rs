//! Process memory as the operating system sees it.

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

#[cfg(target_os = "linux")]
mod imp {
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

#[cfg(target_os = "macos")]
mod imp {
    pub fn peak_rss_bytes() -> Option<u64> {
        None
    }

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
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    pub fn peak_rss_bytes() -> Option<u64> {
        None
    }

    pub fn rss_bytes() -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_reported_and_below_peak() {
        let (now, peak) = (super::rss_bytes(), super::peak_rss_bytes());
        assert!(now > 0 && peak > 0);
        assert!(now <= peak + 4096 * 64, "rss {now} peak {peak}");
    }
}
