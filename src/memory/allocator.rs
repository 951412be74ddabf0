//! The tracking allocator: the process allocator with counters of live bytes, peaks and calls,
//! so that the memory scope can say what each training step kept.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::reuse::ReusingAllocator;

/// Counters of one [`TrackingAllocator`]. Relaxed atomics: each update is one uncontended-ish
/// atomic add on the allocation path, and exactness holds once the threads that allocated have
/// synchronised with the reader (the end of a step joins every worker).
#[derive(Debug, Default)]
pub struct Counters {
    live: AtomicUsize,
    peak: AtomicUsize,
    window_peak: AtomicUsize,
    allocs: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocStats {
    /// Bytes allocated and not yet freed.
    pub live: usize,
    /// Highest `live` since the process started.
    pub peak: usize,
    /// Highest `live` since the last [`Counters::reset_window_peak`].
    pub window_peak: usize,
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
}

/// The counters of the allocator the binaries register.
pub static GLOBAL_COUNTERS: Counters = Counters::new();

impl Counters {
    pub const fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            window_peak: AtomicUsize::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> AllocStats {
        AllocStats {
            live: self.live.load(Relaxed),
            peak: self.peak.load(Relaxed),
            window_peak: self.window_peak.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            reallocs: self.reallocs.load(Relaxed),
        }
    }

    /// Starts a new high-water window (a step) at the current live bytes.
    pub fn reset_window_peak(&self) {
        self.window_peak.store(self.live.load(Relaxed), Relaxed);
    }

    /// Whether any allocation went through these counters (is the allocator registered?).
    pub fn is_active(&self) -> bool {
        self.allocs.load(Relaxed) > 0
    }

    fn grow(&self, bytes: usize) {
        let live = self.live.fetch_add(bytes, Relaxed) + bytes;
        self.peak.fetch_max(live, Relaxed);
        self.window_peak.fetch_max(live, Relaxed);
    }

    fn shrink(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Relaxed);
    }
}

/// A [`GlobalAlloc`] that forwards to `A` (the system allocator, reusing its large blocks, by
/// default) and counts. Blocks the reuse keeps count as freed: they are the allocator's, not
/// the program's.
pub struct TrackingAllocator<A = ReusingAllocator> {
    inner: A,
    counters: &'static Counters,
}

impl TrackingAllocator<ReusingAllocator> {
    /// The system allocator with its large blocks reused, counted in [`GLOBAL_COUNTERS`]: what
    /// the binaries register.
    pub const fn system() -> Self {
        Self {
            inner: ReusingAllocator::system(),
            counters: &GLOBAL_COUNTERS,
        }
    }
}

impl<A> TrackingAllocator<A> {
    /// `inner`, counted in `counters` (tests use their own counters to get exact figures).
    pub const fn new(inner: A, counters: &'static Counters) -> Self {
        Self { inner, counters }
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged, and only
// updates counters besides.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            self.counters.allocs.fetch_add(1, Relaxed);
            self.counters.grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.counters.allocs.fetch_add(1, Relaxed);
            self.counters.grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) };
        self.counters.frees.fetch_add(1, Relaxed);
        self.counters.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            self.counters.reallocs.fetch_add(1, Relaxed);
            if new_size >= layout.size() {
                self.counters.grow(new_size - layout.size());
            } else {
                self.counters.shrink(layout.size() - new_size);
            }
        }
        new
    }
}
