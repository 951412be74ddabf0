//! The memory module: exact counters, leak detection naming the step, a flat 300-step run, and
//! a trim that gives memory back.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};

use burn::tensor::Tensor;
use ember::memory::{Counters, GLOBAL_COUNTERS, MemoryScope, TrackingAllocator, trim};
use ember_train::config::{LeakPolicy, MemorySection};
use ember_train::metrics::StepRecord;
use ember_train::{StepHooks, TrainError};

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

/// The global counters see every thread: tests that measure them take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn counters_are_exact_for_a_known_sequence() {
    let _serial = serial();
    static COUNTERS: Counters = Counters::new();
    let alloc = TrackingAllocator::new(System, &COUNTERS);
    let (small, big) = (
        Layout::from_size_align(100, 8).unwrap(),
        Layout::from_size_align(50, 8).unwrap(),
    );
    unsafe {
        let a = alloc.alloc(small);
        let b = alloc.alloc_zeroed(big);
        assert_eq!((COUNTERS.stats().live, COUNTERS.stats().peak), (150, 150));
        let a = alloc.realloc(a, small, 300); // grows by 200
        assert_eq!((COUNTERS.stats().live, COUNTERS.stats().peak), (350, 350));
        let a = alloc.realloc(a, Layout::from_size_align(300, 8).unwrap(), 20); // shrinks by 280
        COUNTERS.reset_window_peak();
        alloc.dealloc(b, big);
        alloc.dealloc(a, Layout::from_size_align(20, 8).unwrap());
    }
    let s = COUNTERS.stats();
    assert_eq!((s.live, s.peak, s.window_peak), (0, 350, 70));
    assert_eq!((s.allocs, s.frees, s.reallocs), (2, 2, 2));
}

/// A scope for the tests below, whose planted leaks are 64 KiB and more. Its tolerance is above
/// what other threads of the test process can allocate during a step (the counters are
/// process-wide): on flex, under the load of a concurrent build, a step that kept nothing
/// counted 9,261 bytes twice, with 4 KiB of tolerance.
fn scope(policy: LeakPolicy) -> MemoryScope {
    let config = MemorySection {
        warmup_steps: 3,
        tolerance_bytes: 16 * 1024,
        leak_policy: policy,
        trim_every: 0,
    };
    MemoryScope::new(config, &GLOBAL_COUNTERS, common::cpu())
}

#[test]
fn a_step_that_keeps_a_tensor_is_caught_and_named() {
    let _serial = serial();
    let device = common::cpu();
    let mut scope = scope(LeakPolicy::Fail);
    let mut kept = Vec::new();
    let mut failure = None;
    for step in 1..=10 {
        scope.begin_step(step);
        // Every step computes; step 7 also keeps its result.
        {
            let t = Tensor::<2>::ones([128, 128], &device)
                .mul_scalar(step as f64)
                .exp();
            if step == 7 {
                kept.push(t);
            }
        }
        if let Err(report) = scope.end_step(&mut StepRecord::default()) {
            failure = Some(report.to_string());
            break;
        }
    }
    let report = failure.expect("the leaking step was not caught");
    assert!(report.starts_with("memory: step 7 kept "), "{report}");
    assert_eq!(kept.len(), 1);
}

#[test]
fn warn_mode_reports_but_does_not_stop() {
    let _serial = serial();
    let mut scope = scope(LeakPolicy::Warn);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for step in 1..=6 {
        scope.begin_step(step);
        kept.push(vec![1; 1 << 20]);
        assert!(scope.end_step(&mut StepRecord::default()).is_ok());
    }
    assert_eq!(
        scope.summary().leaky_steps,
        3,
        "steps 4, 5 and 6 leak after a warm-up of 3"
    );
}

/// Keeps a buffer alive from step 40 on, like a cache that is never cleared.
struct LeakFrom40(Vec<Vec<u8>>, usize);
impl StepHooks for LeakFrom40 {
    fn begin_step(&mut self, step: usize) {
        self.1 = step;
    }
    fn on_eval(&mut self, _: &ember_train::metrics::EvalRecord) {}
    fn end_step(&mut self, _: &mut StepRecord) -> Result<(), TrainError> {
        if self.1 >= 40 {
            self.0.push(vec![7; 256 * 1024]);
        }
        Ok(())
    }
}

fn tiny_run(steps: usize) -> (ember_train::RunConfig, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let steps = format!("train.steps={steps}");
    let config = common::tiny_config(
        out.path(),
        &[
            &steps,
            "train.batch_size=8",
            "train.eval_every=100",
            "train.eval_iters=2",
            "train.sample_every=150",
            "train.sample_tokens=20",
            "memory.leak_policy=\"fail\"",
        ],
    );
    (config, out)
}

#[test]
fn training_steps_keep_nothing_and_a_leak_in_a_step_stops_the_run() {
    let _serial = serial();
    // Both in one test: the counters are process-wide, so the two runs must not overlap.
    let text = ember_train::corpus::TINY_SHAKESPEARE;
    let (config, _out) = tiny_run(300);
    let mut trainer = common::new_trainer(config.clone(), text);
    let mut memory = MemoryScope::new(config.memory.clone(), &GLOBAL_COUNTERS, common::cpu());
    trainer
        .train(&mut memory)
        .expect("no step keeps memory after the warm-up");
    let summary = memory.summary();
    assert_eq!(summary.leaky_steps, 0);
    let ((_, warm_live, _), (last_step, last_live, _)) =
        (summary.after_warmup.unwrap(), summary.last.unwrap());
    assert_eq!(last_step, 300);
    assert!(
        last_live.abs_diff(warm_live) < 64 * 1024,
        "live bytes drifted from {warm_live} to {last_live}"
    );

    let (config, _out) = tiny_run(60);
    let mut trainer = common::new_trainer(config.clone(), text);
    let memory = MemoryScope::new(config.memory.clone(), &GLOBAL_COUNTERS, common::cpu());
    // The leaking hook runs inside the scope (before its end), as a step's own work would.
    let mut hooks = (LeakFrom40(Vec::new(), 0), memory);
    match trainer.train(&mut hooks) {
        Err(TrainError::Hook(report)) => {
            assert!(report.starts_with("memory: step 40 kept "), "{report}")
        }
        other => panic!("expected the leak at step 40 to stop the run, got {other:?}"),
    }
}

/// Many 1 KiB blocks in the heap (not in mmap'ed chunks that free returns at once), the last
/// kept so that freeing the others leaves them below the heap's top, where only a trim gives
/// their pages back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_blocks(bytes: usize) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut blocks: Vec<Vec<u8>> = (0..bytes / 1024).map(|i| vec![i as u8; 1024]).collect();
    let pinned = blocks.pop();
    (blocks, pinned)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn trim_gives_freed_memory_back() {
    let _serial = serial();
    let (blocks, pinned) = heap_blocks(64 << 20);
    drop(blocks);
    let before = ember_train::sys::rss_bytes();
    let given_back = trim(&common::cpu()).host;
    let after = ember_train::sys::rss_bytes();
    assert!(
        given_back > 32 << 20,
        "trim gave back only {given_back} bytes (RSS {before} -> {after})"
    );
    assert!(after + (32 << 20) < before);
    drop(pinned);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_due_trim_gives_back_only_what_the_steps_do_not_take_again() {
    let _serial = serial();
    // As the binaries run: freed memory stays in the heap until a trim.
    ember::memory::tune_allocator();
    let config = MemorySection {
        warmup_steps: 100,
        tolerance_bytes: 1 << 20,
        leak_policy: LeakPolicy::Warn,
        trim_every: 1,
    };
    let mut scope = MemoryScope::new(config, &GLOBAL_COUNTERS, common::cpu());
    // Closes a logged step: the bytes its trim gave back, if one ran.
    let close = |scope: &mut MemoryScope| {
        let mut record = StepRecord {
            logged: true,
            ..StepRecord::default()
        };
        scope.end_step(&mut record).unwrap();
        record.memory.unwrap().trimmed_bytes
    };
    let mut given_back = Vec::new();
    // Steps that each use and free 48 MiB: what one frees, the next takes again. The first
    // trims may give back what earlier tests left; then none is due.
    for step in 1..=8 {
        scope.begin_step(step);
        let (blocks, pinned) = heap_blocks(48 << 20);
        drop(blocks);
        drop(pinned);
        given_back.push(close(&mut scope));
    }
    assert_eq!(
        given_back[4..],
        [0, 0, 0, 0],
        "steady steps were trimmed: {given_back:?}"
    );
    // Between steps, 96 MiB is freed below memory still held: more than a step takes again,
    // so the next due trim gives it back.
    let (blocks, _pinned) = heap_blocks(96 << 20);
    drop(blocks);
    scope.begin_step(9);
    let trimmed = close(&mut scope);
    assert!(
        trimmed > 48 << 20,
        "the spare 96 MiB was not given back: {trimmed} bytes"
    );
}
