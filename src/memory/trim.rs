use burn::tensor::Device;

/// Returns freed memory to the operating system and reports the bytes of RSS given back.
///
/// glibc keeps freed memory in its per-thread arenas and rarely returns it: `malloc_trim(0)`
/// releases the free pages of every arena. GPU backends keep device memory in pools that Burn's
/// `memory_cleanup` shrinks. Elsewhere (macOS, musl) this is a no-op for host memory: those
/// allocators return large blocks eagerly.
pub fn trim(device: &Device) -> u64 {
    let before = ember_train::sys::rss_bytes();
    device.memory_cleanup();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    before.saturating_sub(ember_train::sys::rss_bytes())
}
