//! Memory discipline: every byte a training step keeps is accounted for.
//!
//! - [`TrackingAllocator`] wraps the process allocator and counts live bytes, peaks and calls.
//!   The binaries register it with `#[global_allocator]`. Beneath it, [`ReusingAllocator`]
//!   keeps a few freed blocks of 32 MiB and more for the next request of their size.
//! - [`MemoryScope`] brackets each training step (it implements the loop's
//!   [`StepHooks`](ember_train::StepHooks)), records the step's high-water mark and the bytes it
//!   kept, and after a warm-up warns about, or fails on, a step that keeps more than a tolerance.
//! - [`trim`] hands freed memory back to the operating system (the kept large blocks, `malloc_trim` on glibc, the
//!   device pool's cleanup on GPU backends); the scope runs it every `memory.trim_every` steps.
//!   On GPU backends the scope also records the device pool's bytes in use and reserved.
//!   Between trims, [`tune_allocator`] lets glibc keep freed buffers for reuse.
//!
//! The scope lives in this crate, not in `ember-train`, because the allocator is a property of
//! the binary: the library's loop only offers begin/end hooks, and this crate (which depends on
//! the library) implements them, so the crate graph stays acyclic.

mod allocator;
mod reuse;
mod scope;
mod trim;

pub use allocator::{AllocStats, Counters, GLOBAL_COUNTERS, TrackingAllocator};
pub use reuse::ReusingAllocator;
pub use scope::{MemoryScope, MemorySummary};
pub use trim::{Trimmed, spare_host_bytes, trim, tune_allocator};
