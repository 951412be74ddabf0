//! `cargo bench --bench matmul_engines`: the candidate engines for the model's products, on the
//! small and medium presets' shapes (batch 32 x context 64 = 2048 rows), each with every core,
//! for the three products a Linear layer makes in a step: the forward `x·W`, the input gradient
//! `dy·Wᵀ` and the weight gradient `xᵀ·dy`.
//!
//! Engines: the gemm crate on rayon's pool; the BLAS library this build linked (OpenBLAS when
//! found) on one thread per part, the output's rows split across rayon's threads; and that
//! library with its own threads. `ember_kernels::cpu::gemm` chooses
//! among them (`chosen`); BENCHMARKS.md has the figures behind the choice. Rerun this on a new
//! machine to check it.

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ember_kernels::cpu::gemm::{Destination, Engine, View, matmul_on};

fn engines(c: &mut Criterion) {
    ember::backend::select("auto", 0).expect("a CPU backend");
    let mut group = c.benchmark_group("matmul");
    group.sample_size(20);
    // (what, m, k, n, a transposed, b transposed)
    let products = [
        ("small qkv x·W", 2048, 128, 384, false, false),
        ("small fc x·W", 2048, 128, 512, false, false),
        ("small proj x·W", 2048, 512, 128, false, false),
        ("small qkv dy·Wᵀ", 2048, 384, 128, false, true),
        ("small qkv xᵀ·dy", 128, 2048, 384, true, false),
        ("medium qkv x·W", 2048, 256, 768, false, false),
        ("medium proj x·W", 2048, 1024, 256, false, false),
        ("medium fc dy·Wᵀ", 2048, 1024, 256, false, true),
        ("medium fc xᵀ·dy", 256, 2048, 1024, true, false),
    ];
    let mut engines = vec![Engine::GemmCrate];
    engines.extend(Engine::blas_variants());
    for (what, m, k, n, at, bt) in products {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let view = |v, rows, cols, t| match t {
            // A transposed operand is stored as its transpose, row-major.
            true => View::transposed(v, rows),
            false => View::rows(v, cols),
        };
        let (a, b) = (view(&a, m, k, at), view(&b, k, n, bt));
        let mut out = vec![MaybeUninit::new(0.0f32); m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let chosen = Engine::chosen();
        let labelled = engines.iter().map(|&e| (e, e.name().to_string()));
        for (engine, label) in labelled.chain([(chosen, format!("chosen: {}", chosen.name()))]) {
            let name = format!("{what} {m}x{k}x{n}/{label}");
            group.bench_function(name, |bench| {
                bench.iter(|| {
                    matmul_on(engine, (m, n, k), a, b, &mut out, Destination::Overwrite);
                })
            });
        }
        black_box(&out);
    }
    group.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
