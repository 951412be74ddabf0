//! `cargo bench -p ember-kernels`: each CPU kernel alone on plain slices, at the small preset's
//! shapes (batch 32, context 64, d 128, 4 heads, vocabulary 65), with the GFLOP/s or GB/s it
//! reaches. The whole-step and Burn-level comparisons are in the root crate's `train_step` bench.

use std::hint::black_box;
use std::mem::MaybeUninit;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ember_kernels::cpu::{self, AttentionShape};
use ember_kernels::ops::gelu::Approximation;
use ember_kernels::ops::head_loss::kernel::{HeadGradients, HeadShape, HeadWeight, head_loss};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn kernels(c: &mut Criterion) {
    if std::env::var("BENCH_BLAS").is_ok() {
        let p = ember_blas::products().expect("a system BLAS");
        cpu::gemm::use_blas(cpu::gemm::Blas {
            name: "bench".into(),
            sgemm: p.sgemm,
            dgemm: p.dgemm,
            set_threads: |n| {
                ember_blas::set_threads(n);
            },
            preferred: true,
        });
    }
    // As the binaries do (`ember::backend`): rayon's workers flush subnormals to zero.
    let flush = |_| cpu::flush_subnormals_on_this_thread();
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(flush)
        .build_global();
    cpu::flush_subnormals_on_this_thread();
    let mut group = c.benchmark_group("cpu");
    let (b, t, d, h, v) = (32, 64, 128, 4, 65);
    let rows = b * t;

    let x = values(rows * 4 * d);
    let mut y = vec![0.0; x.len()];
    group.throughput(Throughput::Bytes((x.len() * 8) as u64));
    for (name, approximation) in [
        ("gelu", Approximation::None),
        ("gelu_tanh", Approximation::Tanh),
    ] {
        group.throughput(Throughput::Bytes((x.len() * 8) as u64));
        group.bench_function(format!("{name}_32x64x512"), |bench| {
            bench.iter(|| cpu::gelu(black_box(&x), None, &mut y, approximation))
        });
        group.throughput(Throughput::Bytes((x.len() * 12) as u64));
        group.bench_function(format!("{name}_backward_32x64x512"), |bench| {
            bench.iter(|| cpu::gelu_backward(black_box(&x), None, &x, &mut y, None, approximation))
        });
    }
    // With the MLP's first bias added in the pass (forward), and its gradient summed (backward).
    let bias = values(4 * d);
    let mut db = vec![std::mem::MaybeUninit::new(0.0); 4 * d];
    for (name, approximation) in [
        ("gelu", Approximation::None),
        ("gelu_tanh", Approximation::Tanh),
    ] {
        group.throughput(Throughput::Bytes((x.len() * 8) as u64));
        group.bench_function(format!("{name}_bias_32x64x512"), |bench| {
            bench.iter(|| cpu::gelu(black_box(&x), Some(&bias), &mut y, approximation))
        });
        group.throughput(Throughput::Bytes((x.len() * 12) as u64));
        group.bench_function(format!("{name}_bias_backward_32x64x512"), |bench| {
            bench.iter(|| {
                let bias = Some(&bias[..]);
                cpu::gelu_backward(
                    black_box(&x),
                    bias,
                    &x,
                    &mut y,
                    Some(&mut db),
                    approximation,
                )
            })
        });
    }

    let x = values(rows * d);
    let (gamma, beta) = (values(d), values(d));
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
    let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
    group.throughput(Throughput::Bytes((x.len() * 8) as u64));
    group.bench_function("layer_norm_2048x128", |bench| {
        bench.iter(|| cpu::layer_norm(&x, &gamma, Some(&beta), 1e-5, &mut y, &mut mean, &mut rstd))
    });
    group.throughput(Throughput::Bytes((x.len() * 12) as u64));
    group.bench_function("layer_norm_backward_2048x128", |bench| {
        bench.iter(|| {
            let dbeta = Some(db.as_mut_slice());
            cpu::layer_norm_backward(&x, &gamma, &mean, &rstd, &x, None, &mut dx, &mut dg, dbeta)
        })
    });

    // Attention at the small preset's shape and at GPT-2 124M's (batch 8 x context 256, 12
    // heads of 64): the head size and the number of key blocks differ.
    for (b, t, d, h) in [(b, t, d, h), (8, 256, 768, 12)] {
        let (rows, shape) = (
            b * t,
            AttentionShape {
                batch: b,
                time: t,
                past: 0,
                heads: h,
                d_model: d,
            },
        );
        // With `qkv`'s bias, as the model calls it.
        let (projection, bias) = (values(rows * 3 * d), values(3 * d));
        let qkv = cpu::Qkv {
            values: &projection,
            bias: Some(&bias),
        };
        let (mut y, mut lse, mut dqkv, mut db) = (
            vec![0.0; rows * d],
            vec![0.0; b * h * t],
            vec![0.0; projection.len()],
            vec![MaybeUninit::new(0.0); 3 * d],
        );
        // Multiply-adds actually needed: the causal half of two T x T x hd products per head.
        let flops = |products: usize| (products * b * h * t * (t + 1) / 2 * (d / h) * 2) as u64;
        group.throughput(Throughput::Elements(flops(2)));
        group.bench_function(format!("attention_{b}x{t}x{}", 3 * d), |bench| {
            bench.iter(|| cpu::causal_attention(qkv, shape, &mut y, &mut lse))
        });
        let dy = values(rows * d);
        group.throughput(Throughput::Elements(flops(5)));
        group.bench_function(format!("attention_backward_{b}x{t}x{}", 3 * d), |bench| {
            bench.iter(|| {
                let db = Some(db.as_mut_slice());
                cpu::causal_attention_backward(qkv, (&y, &lse), &dy, shape, &mut dqkv, db)
            })
        });
    }

    let logits = values(rows * v);
    let targets: Vec<usize> = (0..rows).map(|i| i % v).collect();
    let (mut lse, mut dl) = (vec![0.0; rows], vec![0.0; logits.len()]);
    group.throughput(Throughput::Bytes((logits.len() * 4) as u64));
    group.bench_function("cross_entropy_2048x65", |bench| {
        bench.iter(|| cpu::cross_entropy(&logits, &targets, &mut lse))
    });
    group.bench_function("cross_entropy_backward_2048x65", |bench| {
        bench.iter(|| cpu::cross_entropy_backward(&logits, &targets, &lse, 1.0, &mut dl))
    });

    let (k, n) = (d, 4 * d);
    let (x, w, bias, dy) = (values(rows * k), values(k * n), values(n), values(rows * n));
    let out = |len: usize| vec![MaybeUninit::new(0.0f32); len];
    let (mut y, mut dx, mut dw, mut db) = (out(rows * n), out(rows * k), out(k * n), out(n));
    group.throughput(Throughput::Elements((2 * rows * k * n) as u64));
    group.bench_function("linear_2048x128x512", |bench| {
        bench.iter(|| cpu::linear(&x, &w, Some(&bias), None, (rows, k, n), &mut y))
    });
    group.throughput(Throughput::Elements((4 * rows * k * n) as u64));
    group.bench_function("linear_backward_2048x128x512", |bench| {
        bench.iter(|| {
            let grads = (Some(&mut dx[..]), Some(&mut dw[..]), Some(&mut db[..]));
            cpu::linear_backward(&x, &w, &dy, (rows, k, n), grads.0, grads.1, grads.2)
        })
    });

    // GPT-2's head and loss on one chunk of 512 rows (d 768, vocabulary 50,304) with its
    // gradients: three products of 40 GFLOP each, for both layouts of the weight. The weight
    // has GPT-2's initial scale (0.02): unscaled, these values make logits 385 apart in the tied
    // layout, whose subnormal softmax the bench's threads would pay for (see `flush` above).
    let (rows, d, v) = (512, 768, 50304);
    let x = values(rows * d);
    let w: Vec<f32> = values(d * v).iter().map(|w| 0.02 * w).collect();
    let targets: Vec<usize> = (0..rows).map(|i| (i * 7919) % v).collect();
    let (mut dx, mut dw) = (out(rows * d), out(d * v));
    group.sample_size(10);
    group.throughput(Throughput::Elements((6 * rows * d * v) as u64));
    for weight in [HeadWeight::InOut, HeadWeight::Tied] {
        let shape = HeadShape {
            rows,
            d,
            vocab: v,
            weight,
        };
        group.bench_function(format!("head_loss_{weight:?}_{rows}x{d}x{v}"), |bench| {
            bench.iter(|| {
                let grads = HeadGradients {
                    dx: &mut dx,
                    dw: &mut dw,
                    db: None,
                };
                head_loss(&x, &w, None, &targets, shape, Some(grads))
            })
        });
    }

    // AdamW on GPT-2's token embedding (50,304 x 768 parameters): 28 bytes a parameter read and
    // written, bound by memory bandwidth; `benches/optimizer_floor.sh` times the same pass in
    // plain C, the floor it is compared with (BENCHMARKS.md, "What the machine allows").
    let n = 50304 * 768;
    let (mut param, grad) = (values(n), values(n));
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let step = cpu::AdamWStep {
        lr: 6e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        time: 10,
        grad_scale: 0.5,
    };
    group.throughput(Throughput::Bytes((n * 28) as u64));
    group.bench_function("adamw_38633472", |bench| {
        bench.iter(|| cpu::adamw(&mut param, &grad, &mut m, &mut v, step))
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
