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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `f` on rayon's pool while the pool's other workers poll for work instead of sleeping,
/// and returns its result. Between jobs a polling worker yields its core to the operating
/// system (`sched_yield`, about a microsecond; spinning instead measured no faster), so another
/// process that needs the core gets it. For the stretches of parallel kernels a training step
/// is; the workers sleep again when `f` returns or panics. With one thread it is just `f()`.
/// One region at a time on a pool: two at once can each hold a worker polling for the other.
///
/// `f` runs on the calling thread when that is one of the pool's workers (training runs on one),
/// else on a worker, like `rayon::scope`'s body: thread-locals of an outside caller (such as
/// [`crate::fused::composed`]) do not reach it.
pub fn with_workers_polling<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return f();
    }
    let done = &AtomicBool::new(false);
    let polling = &AtomicUsize::new(0);
    rayon::scope(|scope| {
        let caller = rayon::current_thread_index();
        // One job on every worker; the caller's own returns at once when it reaches it.
        scope.spawn_broadcast(move |_, worker| {
            if Some(worker.index()) == caller {
                return;
            }
            polling.fetch_add(1, Ordering::AcqRel);
            poll_until(|| done.load(Ordering::Acquire));
        });
        // `f` starts once every other worker polls. A worker looking for work checks its own
        // queue of these jobs before it steals, but it can check just before the job arrives and
        // steal just after `f` has forked; it then took its polling job while waiting inside
        // the half it stole, and polled there until `f` returned, while `f` waited for that half:
        // a deadlock (a run of short regions hung so; `gdb` showed the stack). Before `f` forks
        // there is nothing of its to steal.
        let others = rayon::current_num_threads() - 1;
        poll_until(|| polling.load(Ordering::Acquire) == others);
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

/// Runs the pool's pending jobs, yielding the core when there are none, until `stop()`.
fn poll_until(stop: impl Fn() -> bool) {
    while !stop() {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::yield_now();
        }
    }
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
    fn back_to_back_regions_that_fork_at_once_finish() {
        const REGIONS: usize = 20_000;
        // Each region forks before anything else: a worker that stole the first half before it
        // took its polling job polled inside that half, and the region waited for the half.
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let x: Vec<f32> = (0..1 << 18).map(|i| (i % 100) as f32).collect();
            let mut y = vec![0.0_f32; x.len()];
            // A pool of its own: two polling regions at once on one pool can each wait for the
            // other (the training run has one at a time).
            let pool = pool(2);
            for _ in 0..REGIONS {
                pool.install(|| {
                    with_workers_polling(|| {
                        y.par_chunks_mut(1 << 12)
                            .zip(x.par_chunks(1 << 12))
                            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = x * 0.5));
                    });
                });
            }
            let total = y.iter().map(|&v| v as u64).sum::<u64>();
            let _ = sent.send(total);
        });
        let total = received
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the polling regions finished within a minute (a deadlock otherwise)");
        assert_eq!(total, (0..1u64 << 18).map(|i| (i % 100) / 2).sum::<u64>());
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
