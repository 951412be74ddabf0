//! `cargo bench`: one training step per preset and per CPU backend compiled in (build with
//! `--features flex` to compare flex with ndarray), and each fused kernel against the composed
//! ops it replaces, forward and backward. Run on a quiet machine; `ember bench` gives the phase
//! breakdown.

use std::hint::black_box;

use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use ember_kernels::fused::composed;
use ember_kernels::ops;
use ember_kernels::ops::gelu::Approximation;
use ember_train::cluster::Solo;
use ember_train::config::ConfigBuilder;
use ember_train::data::Data;
use ember_train::{Start, Trainer};
use std::sync::Arc;

fn cpu_backends() -> Vec<(&'static str, Device)> {
    ember::backend::compiled()
        .into_iter()
        .filter(|b| matches!(*b, "ndarray" | "flex"))
        .map(|b| (b, ember::backend::select(b, 0).expect("compiled in").device))
        .collect()
}

fn train_steps(c: &mut Criterion) {
    ember::memory::tune_allocator();
    let out = std::env::temp_dir().join(format!("ember-criterion-{}", std::process::id()));
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for (backend, device) in cpu_backends() {
        for preset in ["tiny", "small", "medium"] {
            let config = ConfigBuilder::preset(preset)
                .and_then(|b| b.set(&format!("run.out={:?}", out.display().to_string()), "bench"))
                .and_then(|b| b.build())
                .expect("presets are valid");
            let data = Data::load(&config.data, config.model.context, None).expect("data");
            let mut trainer = Trainer::start(
                config,
                data,
                device.clone(),
                Start::New { stem: preset },
                Arc::new(Solo),
            )
            .expect("trainer");
            let mut step = 0;
            group.bench_function(format!("{backend}/{preset}"), |b| {
                b.iter(|| {
                    step += 1;
                    black_box(trainer.step(step).expect("finite"))
                })
            });
        }
    }
    group.finish();
    let _ = std::fs::remove_dir_all(out);
}

/// A random input of `shape` that requires grad.
fn input<const D: usize>(device: &Device, shape: [usize; D]) -> Tensor<D> {
    Tensor::<D>::random(shape, Distribution::Default, device).require_grad()
}

/// Forward and backward of `f` at `x`.
fn forward_backward<const D: usize, const E: usize>(
    x: &Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) {
    let grads = f(x.clone()).sum().backward();
    black_box(x.grad(&grads));
}

/// Each fused operation against the composed Burn ops it replaces, forward and backward, at the
/// small preset's shapes (batch 32, context 64, d 128, 4 heads).
fn kernels(c: &mut Criterion) {
    ember::memory::tune_allocator();
    let mut group = c.benchmark_group("kernel");
    group.sample_size(20);
    for (backend, device) in cpu_backends() {
        let ad = device.autodiff();
        let w = Tensor::<2>::random([128, 512], Distribution::Default, &ad).require_grad();
        let b = Tensor::<1>::random([512], Distribution::Default, &ad).require_grad();
        let (gamma, beta) = (
            Tensor::<1>::ones([128], &ad),
            Tensor::<1>::zeros([128], &ad),
        );
        for path in ["fused", "composed"] {
            let name = |op: &str| format!("{backend}/{op}/{path}");
            // The forward pass on this path (the backward follows the forward's graph).
            let on_path = |f: &dyn Fn() -> Tensor<3>| match path {
                "composed" => composed(f),
                _ => f(),
            };
            let x = input(&ad, [32, 64, 128]);
            group.bench_function(name("linear_2048x128x512"), |bench| {
                bench.iter(|| {
                    forward_backward(&x, |x| {
                        on_path(&|| ops::linear(x.clone(), w.clone(), Some(b.clone())))
                    })
                })
            });
            let qkv = input(&ad, [32, 64, 384]);
            group.bench_function(name("attention_32x64x384"), |bench| {
                bench.iter(|| {
                    forward_backward(&qkv, |x| {
                        on_path(&|| ops::causal_attention(x.clone(), None, 4, 0, 0.0))
                    })
                })
            });
            let h = input(&ad, [32, 64, 512]);
            group.bench_function(name("gelu_32x64x512"), |bench| {
                bench.iter(|| {
                    forward_backward(&h, |x| {
                        on_path(&|| ops::gelu(x.clone(), None, Approximation::None))
                    })
                })
            });
            group.bench_function(name("layer_norm_32x64x128"), |bench| {
                bench.iter(|| {
                    forward_backward(&x, |x| {
                        on_path(&|| {
                            ops::layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), 1e-5)
                        })
                    })
                })
            });
            let targets = Tensor::<1, Int>::from_data(
                burn::tensor::TensorData::new(
                    (0..2048).map(|i| i % 65).collect::<Vec<i64>>(),
                    [2048],
                ),
                &ad,
            );
            let logits = input(&ad, [2048, 65]);
            group.bench_function(name("cross_entropy_2048x65"), |bench| {
                bench.iter(|| {
                    forward_backward(&logits, |x| match path {
                        "composed" => composed(|| ops::cross_entropy(x, targets.clone())),
                        _ => ops::cross_entropy(x, targets.clone()),
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, train_steps, kernels);
criterion_main!(benches);
