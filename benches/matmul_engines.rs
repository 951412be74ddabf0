//! `cargo bench --bench matmul_engines`: the candidate engines for the model's Linear products,
//! on the small and medium presets' shapes (batch 32 x context 64 = 2048 rows), each with every
//! core: the gemm crate on rayon's pool (what `ember_kernels` uses), and the BLAS engine this
//! build linked (OpenBLAS when found) three ways: one call on one thread, one call with the
//! library's own threads, and the rows split across rayon's threads with one BLAS thread each.
//! BENCHMARKS.md has the figures that chose the first; rerun this on a new machine to check.

use std::ffi::c_int;
use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

unsafe extern "C" {
    // From the engine ember-blas linked (OpenBLAS, Accelerate or its own fallback).
    fn cblas_sgemm(
        layout: c_int,
        ta: c_int,
        tb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
}

/// Row-major `c = a·b` for `a` `m × k`, `b` `k × n` through cblas.
fn blas(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize)) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the slices hold the matrices the sizes describe (checked above).
    unsafe {
        cblas_sgemm(
            101,
            111,
            111,
            m as c_int,
            n as c_int,
            k as c_int,
            1.0,
            a.as_ptr(),
            k as c_int,
            b.as_ptr(),
            n as c_int,
            0.0,
            c.as_mut_ptr(),
            n as c_int,
        )
    }
}

fn engines(c: &mut Criterion) {
    ember::backend::select("auto", 0).expect("a CPU backend");
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(20);
    // (m, k, n): forward products of qkv, MLP up and MLP down, and the weight gradient of qkv.
    let shapes = [
        (2048, 128, 384),
        (2048, 128, 512),
        (2048, 512, 128),
        (128, 2048, 384),
        (2048, 256, 768),
        (2048, 1024, 256),
        (256, 2048, 1024),
    ];
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        let mut uninit = vec![MaybeUninit::new(0.0f32); m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        group.bench_function(format!("{shape}/gemm-crate-rayon"), |bench| {
            bench.iter(|| ember_kernels::cpu::linear(&a, &b, None, (m, k, n), &mut uninit))
        });
        ember::backend::blas_threads(1);
        group.bench_function(format!("{shape}/blas-1-thread"), |bench| {
            bench.iter(|| blas(&a, &b, &mut out, (m, k, n)))
        });
        group.bench_function(format!("{shape}/blas-rows-split-over-rayon"), |bench| {
            let rows = m.div_ceil(threads);
            bench.iter(|| {
                out.par_chunks_mut(rows * n).enumerate().for_each(|(i, c)| {
                    blas(&a[i * rows * k..], &b, c, (c.len() / n, k, n));
                })
            })
        });
        ember::backend::blas_threads(threads);
        group.bench_function(format!("{shape}/blas-own-threads"), |bench| {
            bench.iter(|| blas(&a, &b, &mut out, (m, k, n)))
        });
        ember::backend::blas_threads(1);
        black_box(&out);
    }
    group.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
