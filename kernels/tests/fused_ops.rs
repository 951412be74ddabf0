//! Every fused operation against the composed Burn ops it replaces and against central finite
//! differences: values and gradients, on every CPU backend compiled in.
//!
//! Each case feeds the same inputs to the fused op ([`ember_kernels::ops`]) and to the composed
//! one ([`ember_kernels::composed`]) and compares the outputs and the gradients of
//! `Σ out · R` (a fixed random `R`, so that every output element matters), in `f64` (where they
//! must agree to rounding) and in `f32` (relative error of the whole tensor <= 1e-5). In `f64`,
//! the fused gradients are also checked against central differences of the fused forward pass.

// Provides the cblas symbols Burn's ndarray backend calls (see Cargo.toml).
use ember_blas as _;

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use ember_kernels::{composed, ops};

type Inputs = Vec<Tensor<1>>;
type Op = Box<dyn Fn(&Inputs) -> Tensor<1>>;

fn devices() -> Vec<(&'static str, Device)> {
    let devices = [
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        ("ndarray", Device::ndarray()),
        #[cfg(feature = "flex")]
        ("flex", Device::flex()),
    ];
    assert!(!devices.is_empty(), "build with a CPU backend feature");
    devices.to_vec()
}

/// Deterministic values in `[-scale, scale]`.
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(v: &[f64], device: &Device, dtype: FloatDType) -> Tensor<1> {
    let dtype = match dtype {
        FloatDType::F64 => DType::F64,
        _ => DType::F32,
    };
    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), (device, dtype))
}

fn to_vec(t: Tensor<1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Output values and the gradient of `Σ out · weights` with respect to every input.
fn run(
    op: &Op,
    inputs: &[Vec<f64>],
    dtype: FloatDType,
    device: &Device,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let ad = device.clone().autodiff();
    let leaves: Inputs = inputs
        .iter()
        .map(|v| tensor(v, &ad, dtype).require_grad())
        .collect();
    let out = op(&leaves);
    let n = out.dims()[0];
    let weights = tensor(&values(n, 99, 1.0), &ad, dtype);
    let grads = (out.clone() * weights).sum().backward();
    let grads = leaves
        .iter()
        .map(|l| to_vec(l.grad(&grads).expect("every input takes part")))
        .collect();
    (to_vec(out.detach()), grads)
}

/// `Σ out · weights` in f64 without autodiff.
fn objective(op: &Op, inputs: &[Vec<f64>], device: &Device) -> f64 {
    let leaves: Inputs = inputs
        .iter()
        .map(|v| tensor(v, device, FloatDType::F64))
        .collect();
    let out = to_vec(op(&leaves));
    out.iter()
        .zip(values(out.len(), 99, 1.0))
        .map(|(o, w)| o * w)
        .sum()
}

/// `‖a - b‖ / ‖b‖`.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs all checks of one operation.
fn check(name: &str, fused: Op, composed: Op, inputs: Vec<Vec<f64>>) {
    for (backend, device) in devices() {
        let what = format!("{name} on {backend}");
        for (dtype, tolerance) in [(FloatDType::F64, 1e-12), (FloatDType::F32, 1e-5)] {
            let (fy, fg) = run(&fused, &inputs, dtype, &device);
            let (cy, cg) = run(&composed, &inputs, dtype, &device);
            let err = relative_error(&fy, &cy);
            assert!(
                err <= tolerance,
                "{what} {dtype:?}: output differs from composed by {err:e}"
            );
            for (i, (f, c)) in fg.iter().zip(&cg).enumerate() {
                let err = relative_error(f, c);
                assert!(
                    err <= tolerance,
                    "{what} {dtype:?}: gradient of input {i} differs by {err:e}"
                );
            }
        }
        // Central differences of the fused forward, every element of every input.
        let (_, grads) = run(&fused, &inputs, FloatDType::F64, &device);
        let h = 1e-6;
        for (i, grad) in grads.iter().enumerate() {
            for (j, &analytic) in grad.iter().enumerate() {
                let at = |delta: f64| {
                    let mut moved = inputs.clone();
                    moved[i][j] += delta;
                    objective(&fused, &moved, &device)
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (analytic - numeric).abs() <= 1e-7 + 1e-6 * numeric.abs(),
                    "{what}: d/d input {i}[{j}]: backward {analytic}, finite differences {numeric}"
                );
            }
        }
    }
}

#[test]
fn gelu_matches_composed_and_finite_differences() {
    let shape = [2, 3, 8];
    let op = |gelu: fn(Tensor<3>) -> Tensor<3>| -> Op {
        Box::new(move |x: &Inputs| gelu(x[0].clone().reshape(shape)).reshape([-1]))
    };
    // Wide inputs, to reach both tails of Φ.
    check(
        "gelu",
        op(ops::gelu),
        op(composed::gelu),
        vec![values(48, 1, 6.0)],
    );
}

#[test]
fn layer_norm_matches_composed_and_finite_differences() {
    let (rows, d) = (6, 16);
    for with_beta in [true, false] {
        let op = |norm: fn(Tensor<3>, Tensor<1>, Option<Tensor<1>>, f64) -> Tensor<3>| -> Op {
            Box::new(move |x: &Inputs| {
                let beta = with_beta.then(|| x[2].clone());
                norm(
                    x[0].clone().reshape([2, rows / 2, d]),
                    x[1].clone(),
                    beta,
                    1e-5,
                )
                .reshape([-1])
            })
        };
        let mut inputs = vec![values(rows * d, 2, 3.0), values(d, 3, 1.5)];
        if with_beta {
            inputs.push(values(d, 4, 1.0));
        }
        check(
            "layer_norm",
            op(ops::layer_norm),
            op(composed::layer_norm),
            inputs,
        );
    }
}

#[test]
fn linear_matches_composed_and_finite_differences() {
    let (b, t, k, n) = (2, 5, 7, 9);
    for with_bias in [true, false] {
        let op = |linear: fn(Tensor<3>, Tensor<2>, Option<Tensor<1>>) -> Tensor<3>| -> Op {
            Box::new(move |x: &Inputs| {
                let bias = with_bias.then(|| x[2].clone());
                linear(
                    x[0].clone().reshape([b, t, k]),
                    x[1].clone().reshape([k, n]),
                    bias,
                )
                .reshape([-1])
            })
        };
        let mut inputs = vec![values(b * t * k, 5, 1.0), values(k * n, 6, 0.5)];
        if with_bias {
            inputs.push(values(n, 7, 0.5));
        }
        check("linear", op(ops::linear), op(composed::linear), inputs);
    }
}

#[test]
fn causal_attention_matches_composed_and_finite_differences() {
    let (b, t, h, d) = (2, 5, 2, 8);
    // past = 0 is training; past > 0 is decoding after cached positions.
    for past in [0, 2] {
        let op = |attention: fn(Tensor<3>, usize, usize) -> Tensor<3>| -> Op {
            Box::new(move |x: &Inputs| {
                attention(x[0].clone().reshape([b, t, 3 * d]), h, past).reshape([-1])
            })
        };
        check(
            "causal_attention",
            op(ops::causal_attention),
            op(composed::causal_attention),
            vec![values(b * t * 3 * d, 8, 1.5)],
        );
    }
}

#[test]
fn cross_entropy_matches_composed_and_finite_differences() {
    let (n, v) = (6, 11);
    let op = |ce: fn(Tensor<2>, Tensor<1, Int>) -> Tensor<1>| -> Op {
        Box::new(move |x: &Inputs| {
            let targets = Tensor::<1, Int>::from_data(
                TensorData::new(vec![0i64, 10, 3, 3, 7, 5], [n]),
                &x[0].device(),
            );
            ce(x[0].clone().reshape([n, v]), targets)
        })
    };
    check(
        "cross_entropy",
        op(ops::cross_entropy),
        op(composed::cross_entropy),
        vec![values(n * v, 9, 4.0)],
    );
}

#[test]
fn every_cpu_backend_takes_the_fused_path() {
    for (backend, device) in devices() {
        for dtype in [DType::F32, DType::F64] {
            assert!(ops::is_fused(&device, dtype), "{backend} {dtype:?}");
            assert!(
                ops::is_fused(&device.clone().autodiff(), dtype),
                "{backend} autodiff"
            );
        }
        assert!(!ops::is_fused(&device, DType::F16), "{backend} f16");
    }
}

#[test]
fn adamw_and_sum_of_squares_match_composed() {
    use ember_kernels::cpu::AdamWStep;
    let n = 3 * 17;
    for (backend, device) in devices() {
        for (dtype, tolerance) in [(FloatDType::F64, 1e-12), (FloatDType::F32, 1e-6)] {
            let what = format!("{backend} {dtype:?}");
            let t = |seed, scale| tensor(&values(n, seed, scale), &device, dtype);
            // Three steps from zero moments, with and without weight decay.
            for weight_decay in [0.0, 0.1] {
                let (mut fused, mut reference) = (
                    (t(1, 1.0), t(0, 0.0), t(0, 0.0)),
                    (t(1, 1.0), t(0, 0.0), t(0, 0.0)),
                );
                for time in 1..=3 {
                    let step = AdamWStep {
                        lr: 1e-2,
                        beta1: 0.9,
                        beta2: 0.99,
                        eps: 1e-8,
                        weight_decay,
                        time,
                    };
                    let grad = t(10 + time as u64, 0.5);
                    let (p, m, v) = fused;
                    fused = ops::adamw(p, grad.clone(), m, v, step);
                    let (p, m, v) = reference;
                    reference = composed::adamw(p, grad, m, v, step);
                }
                let pairs = [
                    (fused.0, reference.0),
                    (fused.1, reference.1),
                    (fused.2, reference.2),
                ];
                for (name, (f, c)) in ["param", "m", "v"].iter().zip(pairs) {
                    let err = relative_error(&to_vec(f), &to_vec(c));
                    assert!(
                        err <= tolerance,
                        "{what} adamw {name}: differs from composed by {err:e}"
                    );
                }
            }
            let x = t(5, 2.0);
            let (f, c) = (
                to_vec(ops::sum_of_squares(x.clone())),
                to_vec(composed::sum_of_squares(x)),
            );
            assert!(
                relative_error(&f, &c) <= tolerance,
                "{what} sum of squares: {f:?} vs {c:?}"
            );
        }
    }
}
