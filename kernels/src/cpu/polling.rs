//! Keeping rayon's workers looking for work through a run of short parallel kernels.
//!
//! A rayon worker that finds nothing to do spins for a moment, then sleeps on a futex until new
//! work wakes it. A training step is hundreds of parallel regions (each product is several: the
//! gemm crate packs and multiplies block by block, each a fork-join; then LayerNorm, attention,
//! AdamW) with the model's serial bookkeeping between them, often long enough for the other
//! workers to fall asleep, so many regions begin by waking them, and on a virtual machine a wake
//! takes tens of microseconds (27 µs on average, `perf sched` on the 2-core VM of BENCHMARKS.md)
//! while the thread that started the region runs its share alone. Measured there at the small
//! preset, the two workers together slept about 10 ms of each 43 ms step. OpenMP runtimes
//! spin-wait for the same reason (`OMP_WAIT_POLICY`, `KMP_BLOCKTIME`); rayon has no such
//! setting, so [`with_workers_polling`] gives each other worker a task that polls for work until
//! the step is over.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` on rayon's pool while the pool's other workers poll for work instead of sleeping,
/// and returns its result. Between jobs a polling worker yields its core to the operating
/// system (`sched_yield`, about a microsecond; spinning instead measured no faster), so another
/// process that needs the core gets it. For the stretches of parallel kernels a training step
/// is; the workers sleep again when `f` returns or panics. With one thread it is just `f()`.
///
/// `f` runs on the calling thread when that is one of the pool's workers (training runs on one),
/// else on a worker, like `rayon::scope`'s body: thread-locals of an outside caller (such as
/// [`crate::fused::composed`]) do not reach it.
pub fn with_workers_polling<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return f();
    }
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let caller = rayon::current_thread_index();
        // One job on every worker; the caller's own returns at once when it reaches it.
        scope.spawn_broadcast(move |_, worker| {
            if Some(worker.index()) == caller {
                return;
            }
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
            }
        });
        /// Releases the pollers even if `f` panics: the scope waits for them before it returns
        /// or lets the panic go on.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _release = Release(done);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    #[test]
    fn parallel_work_inside_sums_the_same_on_any_thread_count() {
        for threads in [1, 2, 4] {
            let sum = pool(threads).install(|| {
                with_workers_polling(|| {
                    (0..200)
                        .map(|_| (0..10_000u64).into_par_iter().sum::<u64>())
                        .sum::<u64>()
                })
            });
            assert_eq!(sum, 200 * (10_000 * 9_999 / 2), "{threads} threads");
        }
    }

    #[test]
    fn a_panic_inside_reaches_the_caller_and_frees_the_workers() {
        let pool = pool(2);
        let caught = pool.install(|| {
            std::panic::catch_unwind(|| with_workers_polling(|| panic!("inside the step")))
        });
        assert!(caught.is_err());
        // The pool still runs work on both workers: the pollers have stopped.
        let sum: u64 = pool.install(|| with_workers_polling(|| (0..1000u64).into_par_iter().sum()));
        assert_eq!(sum, 1000 * 999 / 2u64);
    }
}
