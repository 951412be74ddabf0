//! The threads that train flush subnormal floats to zero (`ember_kernels::cpu::subnormals`
//! says why): every worker of the pool the backend builds, and the thread that built it. One
//! test alone in its binary, so that the backend builds rayon's pool before anything else uses it.

use std::hint::black_box;

/// Whether a subnormal result and a subnormal operand both come out as zero on this thread.
fn flushes() -> bool {
    let result = black_box(f32::MIN_POSITIVE) * black_box(0.5f32);
    let operand = black_box(f32::from_bits(1)) * black_box(2.0f32);
    result == 0.0 && operand == 0.0
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "the flush modes are set on x86-64 only"
)]
fn the_backend_flushes_subnormals_on_every_worker() {
    ember::backend::select("ndarray", 2).expect("the default backend");
    assert!(flushes(), "the thread that selected the backend");
    let workers = rayon::broadcast(|_| flushes());
    assert_eq!(workers, vec![true; workers.len()], "rayon's workers");
}
