//! Giving freed memory back: glibc's heaps to the operating system, a GPU pool to its device;
//! and the allocator settings that keep freed buffers for reuse between trims.

use burn::tensor::Device;

use super::ReusingAllocator;

/// Largest request glibc still serves from its heaps with [`tune_allocator`] (its own ceiling).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Makes glibc keep freed memory for reuse between [`trim`]s.
///
/// Burn allocates a new buffer for the result of every tensor operation, megabytes each at
/// these sizes. With glibc's defaults such buffers are mmap'ed and munmap'ed one by one, or the
/// heap top is trimmed as soon as they are freed, so every operation pays page faults and page
/// zeroing: 30% of a small-preset step (BENCHMARKS.md). Fixed thresholds keep those pages in
/// the heap, and the periodic trim hands them back to the OS.
///
/// One heap (arena) for every thread: glibc gives each thread that allocates an arena of its
/// own, and a buffer freed by one thread stays in the arena that made it, which the others do
/// not reuse. Which thread makes which buffer depends on rayon's scheduling, so the freed
/// memory kept beside each arena, and with it the peak RSS, changed from run to run: GPT-2 124M
/// at batch 4 x context 64 peaked at 2,509-2,719 MiB for the same 3 steps and checkpoint, and at
/// 2,512 MiB every time with one arena, at the same speed (tiny and small presets, 3 rounds:
/// no difference beyond the noise; the trainer's thread makes nearly every buffer anyway).
/// No-op on other allocators.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before threads allocate heavily.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Freed host memory the process holds for reuse: glibc's free heap bytes and the large blocks
/// [`ReusingAllocator`] keeps. glibc counts its free chunks whether their pages are resident or
/// already given back by a trim, so a fragmented heap reads high. `None` where the allocator does
/// not say (not glibc).
pub fn spare_host_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let heap_free = unsafe { libc::mallinfo2() }.fordblks;
        Some(heap_free + ReusingAllocator::system().kept_bytes())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// What a [`trim`] gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Bytes of this process's RSS.
    pub host: u64,
    /// Bytes the device's memory pool stopped reserving (GPU backends; 0 on the CPU ones).
    pub device: u64,
}

/// Returns freed memory to the operating system and the device, and reports what was given
/// back.
///
/// The large blocks [`ReusingAllocator`] keeps are freed. glibc keeps freed memory in its
/// heap (one arena, [`tune_allocator`]) and rarely returns it: `malloc_trim(0)` releases its
/// free pages. GPU backends keep device memory in pools that Burn's
/// `memory_cleanup` shrinks (what each pool reserves is read before and after). Elsewhere
/// (macOS, musl) this is a no-op for host memory: those allocators return large blocks eagerly.
pub fn trim(device: &Device) -> Trimmed {
    let host_before = ember_train::sys::rss_bytes();
    let reserved = || device.memory_pool_usage().map_or(0, |u| u.bytes_reserved);
    let device_before = reserved();
    device.memory_cleanup();
    let device_freed = device_before.saturating_sub(reserved());
    ReusingAllocator::system().release();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    Trimmed {
        host: host_before.saturating_sub(ember_train::sys::rss_bytes()),
        device: device_freed,
    }
}
