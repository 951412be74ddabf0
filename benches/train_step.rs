//! `cargo bench`: one training step per preset and per CPU backend compiled in (build with
//! `--features flex` to compare flex with ndarray), and the kernels that dominate a step, each
//! forward and backward. Run on a quiet machine; `ember bench` gives the phase breakdown.

use std::hint::black_box;

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use ember_model::gelu;
use ember_train::Trainer;
use ember_train::config::ConfigBuilder;

fn cpu_backends() -> Vec<(&'static str, Device)> {
    ember::backend::compiled()
        .into_iter()
        .filter(|b| matches!(*b, "ndarray" | "flex"))
        .map(|b| (b, ember::backend::select(b, 0).expect("compiled in").device))
        .collect()
}

fn train_steps(c: &mut Criterion) {
    ember::memory::tune_allocator();
    let text = ember_train::corpus::builtin_corpus();
    let out = std::env::temp_dir().join(format!("ember-criterion-{}", std::process::id()));
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for (backend, device) in cpu_backends() {
        for preset in ["tiny", "small", "medium"] {
            let config = ConfigBuilder::preset(preset)
                .and_then(|b| b.set(&format!("run.out={:?}", out.display().to_string()), "bench"))
                .and_then(|b| b.build())
                .expect("presets are valid");
            let mut trainer = Trainer::new(config, &text, preset, device.clone()).expect("trainer");
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

/// Forward and backward of `f` on a random input of `shape` that requires grad.
fn forward_backward<const D: usize>(
    device: &Device,
    shape: [usize; D],
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) {
    let x = Tensor::<D>::random(shape, Distribution::Default, device).require_grad();
    let grads = f(x.clone()).sum().backward();
    black_box(x.grad(&grads));
}

fn kernels(c: &mut Criterion) {
    ember::memory::tune_allocator();
    let mut group = c.benchmark_group("kernel");
    group.sample_size(20);
    for (backend, device) in cpu_backends() {
        let ad = device.autodiff();
        // The small preset's shapes: batch 32, context 64, d 128, 4 heads.
        let w = Tensor::<2>::random([128, 512], Distribution::Default, &ad).require_grad();
        group.bench_function(format!("{backend}/linear_2048x128x512"), |b| {
            b.iter(|| forward_backward(&ad, [2048, 128], |x| x.matmul(w.clone())))
        });
        group.bench_function(format!("{backend}/attention_scores_32x4x64x32"), |b| {
            b.iter(|| {
                forward_backward(&ad, [32, 4, 64, 32], |x| {
                    let (q, k) = (
                        x.clone().slice([0..32, 0..4, 0..64, 0..16]),
                        x.slice([0..32, 0..4, 0..64, 16..32]),
                    );
                    softmax(q.matmul(k.swap_dims(2, 3)), 3)
                })
            })
        });
        group.bench_function(format!("{backend}/gelu_32x64x512"), |b| {
            b.iter(|| forward_backward(&ad, [32, 64, 512], gelu))
        });
        let norm = burn::nn::LayerNormConfig::new(128).init(&ad);
        group.bench_function(format!("{backend}/layer_norm_32x64x128"), |b| {
            b.iter(|| forward_backward(&ad, [32, 64, 128], |x| norm.forward(x)))
        });
        group.bench_function(format!("{backend}/log_softmax_2048x65"), |b| {
            b.iter(|| forward_backward(&ad, [2048, 65], |x| log_softmax(x, 1)))
        });
    }
    group.finish();
}

criterion_group!(benches, train_steps, kernels);
criterion_main!(benches);
