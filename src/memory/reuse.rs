//! Reuse of large freed blocks: the system allocator, except that a freed block of at least
//! [`LARGE`] bytes is kept (a few of them) for the next request of the same layout instead of
//! going back to the operating system.
//!
//! glibc serves at most 32 MiB from its heaps (its ceiling, see [`super::tune_allocator`]); a
//! larger request is a fresh `mmap` and its `free` a `munmap`, so every one of its pages is
//! faulted in and zeroed again each time. At GPT-2 124M a step allocates and frees the same
//! few such buffers each time (the 154 MB gradients of the token embedding, the output head's
//! chunks of logits): at batch 4 x context 64, 190,000 page faults a step, up to half the step's
//! time on a virtual machine whose page faults are slow (BENCHMARKS.md). The steps ask for the
//! same sizes every time, so keeping a handful of blocks ends that; [`super::trim`] hands them
//! back with the rest of the freed memory.
//!
//! A checkpoint is not a step: serializing the weights and AdamW's moments frees large blocks
//! of its own, which kept would only sit idle on top of the checkpoint's peak (at GPT-2 124M
//! they grew it by 310 MiB). So the trainer's memory scope empties the cache and stops keeping
//! before each checkpoint ([`ReusingAllocator::pause`]) and keeps again when the next step
//! begins ([`ReusingAllocator::resume`]); loading a checkpoint keeps none either
//! ([`ReusingAllocator::while_paused`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The smallest block kept: glibc's largest heap request, above which it maps and unmaps.
const LARGE: usize = 32 << 20;

/// Blocks kept at most. A step of GPT-2 124M frees about six large blocks of a few sizes; a
/// bound keeps a run with many different large sizes from holding more than a few of them.
const SLOTS: usize = 8;

/// Freed large blocks waiting for a request of their layout: `(address, layout)`.
struct BlockCache {
    slots: Mutex<[Option<(usize, Layout)>; SLOTS]>,
    /// Whether freed blocks are kept (false while paused).
    keeping: AtomicBool,
}

impl BlockCache {
    const fn new() -> Self {
        Self {
            slots: Mutex::new([None; SLOTS]),
            keeping: AtomicBool::new(true),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, [Option<(usize, Layout)>; SLOTS]> {
        // Nothing panics while the lock is held, but a poisoned lock must not stop allocation.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept block of exactly `layout`, if any.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut slots = self.slots();
        let slot = slots
            .iter_mut()
            .find(|s| matches!(s, Some((_, l)) if *l == layout))?;
        slot.take().map(|(address, _)| address as *mut u8)
    }

    /// Keeps `ptr` if keeping and a slot is free; false when the caller must free it.
    fn keep(&self, ptr: *mut u8, layout: Layout) -> bool {
        if !self.keeping.load(Ordering::Relaxed) {
            return false;
        }
        let mut slots = self.slots();
        match slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((ptr as usize, layout));
                true
            }
            None => false,
        }
    }

    /// Empties the cache, returning what it held (without allocating: it runs inside the
    /// allocator).
    fn drain(&self) -> [Option<(usize, Layout)>; SLOTS] {
        std::mem::replace(&mut *self.slots(), [None; SLOTS])
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.slots().iter().flatten().map(|(_, l)| l.size()).sum()
    }
}

/// The cache of the allocator the binaries register.
static SYSTEM_BLOCKS: BlockCache = BlockCache::new();

/// The system allocator with a [`BlockCache`] for its large blocks.
pub struct ReusingAllocator {
    cache: &'static BlockCache,
}

impl ReusingAllocator {
    /// The system allocator, its large blocks kept in [`SYSTEM_BLOCKS`].
    pub const fn system() -> Self {
        Self::new(&SYSTEM_BLOCKS)
    }

    /// The system allocator keeping its large blocks in `cache` (tests use their own).
    const fn new(cache: &'static BlockCache) -> Self {
        Self { cache }
    }

    /// Frees every kept block.
    pub fn release(&self) {
        for (address, layout) in self.cache.drain().into_iter().flatten() {
            // SAFETY: the block came from `System` with this layout and was freed by its owner
            // (`dealloc`) before it was kept; draining removed it from the cache.
            unsafe { System.dealloc(address as *mut u8, layout) };
        }
    }

    /// Bytes of the blocks kept for reuse.
    pub fn kept_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Frees every kept block and keeps none from now on, until [`Self::resume`].
    pub fn pause(&self) {
        self.cache.keeping.store(false, Ordering::Relaxed);
        self.release();
    }

    /// Keeps freed large blocks again.
    pub fn resume(&self) {
        self.cache.keeping.store(true, Ordering::Relaxed);
    }

    /// Runs `f` keeping no freed block ([`Self::pause`]), then keeps them again: for work that
    /// frees large blocks no step asks for again. Loading a checkpoint frees its files' buffers
    /// (1.4 GB at GPT-2 124M); kept, they sat under a resumed run's peak RSS.
    pub fn while_paused<R>(&self, f: impl FnOnce() -> R) -> R {
        self.pause();
        let result = f();
        self.resume();
        result
    }
}

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE
}

// SAFETY: a block handed out is either fresh from `System` or one that `System` allocated with
// exactly this layout and whose owner freed it (it sits in the cache only between that free and
// this allocation, and `take` removes it), so no two owners ever hold one block; every block
// is finally freed by `System` with the layout it was allocated with.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout)
            && let Some(ptr) = self.cache.take(layout)
        {
            return ptr;
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout)
            && let Some(ptr) = self.cache.take(layout)
        {
            // SAFETY: the block is `layout.size()` bytes, owned by the caller from here.
            unsafe { ptr.write_bytes(0, layout.size()) };
            return ptr;
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) && self.cache.keep(ptr, layout) {
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if is_large(layout) || new_size >= LARGE {
            // Through this allocator's alloc and dealloc, so that large blocks stay in its care.
            // SAFETY: forwarded contract.
            let new =
                unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                // SAFETY: both blocks hold at least the smaller size and do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            return new;
        }
        // SAFETY: forwarded contract; neither size is large, so `System` owns both blocks.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_large_block_serves_the_next_request_of_its_layout_only() {
        static CACHE: BlockCache = BlockCache::new();
        let alloc = ReusingAllocator::new(&CACHE);
        let large = Layout::from_size_align(LARGE, 64).unwrap();
        let other = Layout::from_size_align(LARGE + 4096, 64).unwrap();
        let small = Layout::from_size_align(1 << 20, 64).unwrap();
        unsafe {
            let a = alloc.alloc(large);
            a.write_bytes(7, LARGE);
            alloc.dealloc(a, large);
            assert_eq!(CACHE.bytes(), LARGE);
            let b = alloc.alloc(other);
            assert_ne!(b, a, "a block of another size is never handed out");
            let c = alloc.alloc_zeroed(large);
            assert_eq!(c, a, "the kept block serves its layout");
            assert!(std::slice::from_raw_parts(c, LARGE).iter().all(|&v| v == 0));
            assert_eq!(CACHE.bytes(), 0);
            let s = alloc.alloc(small);
            alloc.dealloc(s, small);
            assert_eq!(
                CACHE.bytes(),
                0,
                "small blocks go back to the system allocator"
            );
            // Growing a large block keeps its contents.
            c.write_bytes(3, 16);
            let grown = alloc.realloc(c, large, LARGE + 8192);
            assert!(
                std::slice::from_raw_parts(grown, 16)
                    .iter()
                    .all(|&v| v == 3)
            );
            alloc.dealloc(grown, Layout::from_size_align(LARGE + 8192, 64).unwrap());
            alloc.dealloc(b, other);
            assert_eq!(CACHE.bytes(), 3 * LARGE + 4096 + 8192);
            alloc.release();
            assert_eq!(CACHE.bytes(), 0);
        }
    }

    #[test]
    fn at_most_a_few_blocks_are_kept() {
        static CACHE: BlockCache = BlockCache::new();
        let alloc = ReusingAllocator::new(&CACHE);
        let layout = Layout::from_size_align(LARGE, 8).unwrap();
        unsafe {
            let blocks: Vec<_> = (0..SLOTS + 2).map(|_| alloc.alloc(layout)).collect();
            for b in blocks {
                alloc.dealloc(b, layout);
            }
        }
        assert_eq!(CACHE.bytes(), SLOTS * LARGE);
        alloc.release();
    }

    #[test]
    fn paused_it_keeps_nothing_until_resumed() {
        static CACHE: BlockCache = BlockCache::new();
        let alloc = ReusingAllocator::new(&CACHE);
        let layout = Layout::from_size_align(LARGE, 8).unwrap();
        unsafe {
            let (a, b) = (alloc.alloc(layout), alloc.alloc(layout));
            alloc.dealloc(a, layout);
            alloc.pause();
            assert_eq!(CACHE.bytes(), 0, "pausing hands back what was kept");
            alloc.dealloc(b, layout);
            assert_eq!(CACHE.bytes(), 0, "paused, a freed block goes back");
            alloc.resume();
            let c = alloc.alloc(layout);
            alloc.dealloc(c, layout);
            assert_eq!(CACHE.bytes(), LARGE, "resumed, it is kept again");
        }
        alloc.release();
    }

    #[test]
    fn while_paused_keeps_nothing_and_then_keeps_again() {
        static CACHE: BlockCache = BlockCache::new();
        let alloc = ReusingAllocator::new(&CACHE);
        let layout = Layout::from_size_align(LARGE, 8).unwrap();
        unsafe {
            let kept = alloc.alloc(layout);
            alloc.dealloc(kept, layout);
            let loaded = alloc.while_paused(|| {
                assert_eq!(CACHE.bytes(), 0, "what was kept is handed back first");
                let file = alloc.alloc(layout);
                alloc.dealloc(file, layout);
                assert_eq!(CACHE.bytes(), 0, "a block freed meanwhile goes back");
                7
            });
            assert_eq!(loaded, 7);
            let step = alloc.alloc(layout);
            alloc.dealloc(step, layout);
            assert_eq!(
                CACHE.bytes(),
                LARGE,
                "afterwards, freed blocks are kept again"
            );
        }
        alloc.release();
    }
}
