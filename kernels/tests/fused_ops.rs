//! Every fused operation against the composed Burn ops it replaces and against central finite
//! differences: values and gradients, on every CPU backend compiled in, at toy shapes and at the
//! shapes people train.
//!
//! Each case feeds the same inputs to the op (`ember_kernels::ops::<op>`) on its fused path and
//! on its composed path (under `ember_kernels::fused::composed`, as a GPU runs it) and compares
//! the outputs and the gradients of
//! `Σ out · R` (a fixed random `R`, so that every output element matters), in `f64` (where they
//! must agree to rounding) and in `f32` (relative error of the whole tensor <= 1e-5). In `f64`,
//! the fused gradients are also checked against central differences of the fused forward pass:
//! every element at the toy shapes, a spread of elements (the first, the last, and every
//! block's edges among them) at the large ones.
//!
//! The large shapes reach every code path of the kernels: head sizes 16, 40 and 64 (every
//! vector block of the attention products, and a tail), 70 positions (past one 64-wide block of
//! scores), rows that are not a multiple of any block, and enough rows or elements to split the
//! work into several parallel tasks. Every kernel output starts filled with a canary that must
//! not survive ([`ember_kernels::fused::host::check_outputs`]). CI runs this file once per
//! instruction set the processor has (`EMBER_SIMD=avx512|avx2|scalar`).

// Provides the cblas symbols Burn's ndarray backend calls (see Cargo.toml).
use ember_blas as _;

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use ember_kernels::cpu::AdamWStep;
use ember_kernels::fused::{composed, fused, host::check_outputs, is_fused};
use ember_kernels::ops::gelu::Approximation;
use ember_kernels::ops::{self, HeadWeight};

type Inputs = Vec<Tensor<1>>;
type Op = Box<dyn Fn(&Inputs) -> Tensor<1>>;

fn devices() -> Vec<(&'static str, Device)> {
    check_outputs(true);
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

/// Which path of the ops to take.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Composed,
}

/// Output values and the gradient of `Σ out · weights` with respect to every input.
fn run(
    op: &Op,
    path: Path,
    inputs: &[Vec<f64>],
    dtype: FloatDType,
    device: &Device,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let ad = device.clone().autodiff();
    let leaves: Inputs = inputs
        .iter()
        .map(|v| tensor(v, &ad, dtype).require_grad())
        .collect();
    let out = match path {
        Path::Fused => op(&leaves),
        Path::Composed => composed(|| op(&leaves)),
    };
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

/// Which elements of an input of `n` the finite differences visit: all of them up to 64, else
/// the first and last 8, both sides of 16 multiples of 64 spread over the input, and 32 at
/// random.
fn probed(n: usize) -> Vec<usize> {
    if n <= 64 {
        return (0..n).collect();
    }
    let mut at: Vec<usize> = (0..8).chain(n - 8..n).collect();
    let blocks = n / 64;
    at.extend(
        (1..=blocks)
            .step_by(blocks.div_ceil(16))
            .flat_map(|b| [64 * b - 1, 64 * b]),
    );
    at.extend(
        values(32, n as u64, 0.5)
            .iter()
            .map(|v| ((v + 0.5) * n as f64) as usize),
    );
    at.retain(|&i| i < n);
    at.sort_unstable();
    at.dedup();
    at
}

/// Runs all checks of one operation.
fn check(name: &str, op: Op, inputs: Vec<Vec<f64>>) {
    for (backend, device) in devices() {
        let what = format!("{name} on {backend}");
        for (dtype, tolerance) in [(FloatDType::F64, 1e-12), (FloatDType::F32, 1e-5)] {
            let (fy, fg) = run(&op, Path::Fused, &inputs, dtype, &device);
            let (cy, cg) = run(&op, Path::Composed, &inputs, dtype, &device);
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
        // Central differences of the fused forward.
        let (_, grads) = run(&op, Path::Fused, &inputs, FloatDType::F64, &device);
        let h = 1e-6;
        // The rounding error of a difference quotient grows with the objective's size.
        let scale = 1.0 + objective(&op, &inputs, &device).abs();
        for (i, grad) in grads.iter().enumerate() {
            for j in probed(grad.len()) {
                let at = |delta: f64| {
                    let mut moved = inputs.clone();
                    moved[i][j] += delta;
                    objective(&op, &moved, &device)
                };
                let (analytic, numeric) = (grad[j], (at(h) - at(-h)) / (2.0 * h));
                assert!(
                    (analytic - numeric).abs() <= 1e-7 * scale + 1e-6 * numeric.abs(),
                    "{what}: d/d input {i}[{j}]: backward {analytic}, finite differences {numeric}"
                );
            }
        }
    }
}

#[test]
fn gelu_matches_composed_and_finite_differences() {
    // A toy shape, and one of 27,300 elements: two parallel tasks and a tail of the 64-element
    // blocks. With a bias (the MLP's first one, added in GELU's pass) the tasks are whole rows:
    // 126 rows of 130 in the first, and the rest.
    for approximation in [Approximation::None, Approximation::Tanh] {
        for shape in [[2, 3, 8], [3, 70, 130]] {
            for with_bias in [false, true] {
                let n = shape.iter().product();
                let op: Op = Box::new(move |x| {
                    let bias = with_bias.then(|| x[1].clone());
                    ops::gelu(x[0].clone().reshape(shape), bias, approximation).reshape([-1])
                });
                // Wide inputs, to reach both tails of Φ.
                let mut inputs = vec![values(n, 1, 6.0)];
                if with_bias {
                    inputs.push(values(shape[2], 2, 1.0));
                }
                check(
                    &format!("gelu {approximation:?} (bias {with_bias})"),
                    op,
                    inputs,
                );
            }
        }
    }
}

#[test]
fn layer_norm_matches_composed_and_finite_differences() {
    // (rows, d): a toy shape; 282 rows of 64 (more rows than one task's 256, and not a multiple
    // of the backward's 32-row blocks); 70 rows of 40 (a width with a tail after the 16-lane
    // vectors).
    // In a pre-LayerNorm block the input is also the residual stream, read again after the
    // LayerNorm (`x + attn(ln(x))`): Burn runs the deeper add's backward first, so its gradient
    // of the input is there and the LayerNorm's is summed onto it (`residual`).
    for (rows, d) in [(6, 16), (282, 64), (70, 40)] {
        for (with_beta, residual) in [(true, false), (false, false), (true, true), (false, true)] {
            let op: Op = Box::new(move |x| {
                let beta = with_beta.then(|| x[2].clone());
                let input = x[0].clone().reshape([2, rows / 2, d]);
                let y = ops::layer_norm(input.clone(), x[1].clone(), beta, 1e-5);
                match residual {
                    false => y.reshape([-1]),
                    true => (input + y.exp()).reshape([-1]),
                }
            });
            let mut inputs = vec![values(rows * d, 2, 3.0), values(d, 3, 1.5)];
            if with_beta {
                inputs.push(values(d, 4, 1.0));
            }
            check("layer_norm", op, inputs);
        }
    }
}

#[test]
fn linear_matches_composed_and_finite_differences() {
    // (b, t, k, n): a toy shape; one whose product is split across threads with rows that cross
    // the bias gradient's 64-row blocks; one whose output crosses the tasks that start it as the
    // residual and the bias (409 rows of 40), with a tail.
    for (b, t, k, n) in [(2, 5, 7, 9), (3, 70, 130, 70), (3, 200, 33, 40)] {
        for (with_bias, onto) in [(true, false), (false, false), (true, true), (false, true)] {
            let op: Op = Box::new(move |x| {
                let bias = with_bias.then(|| x[2].clone());
                let (input, weight) = (
                    x[0].clone().reshape([b, t, k]),
                    x[1].clone().reshape([k, n]),
                );
                let y = match onto {
                    false => ops::linear(input, weight, bias),
                    true => {
                        let residual = x.last().unwrap().clone().reshape([b, t, n]);
                        ops::linear_onto(residual, input, weight, bias)
                    }
                };
                y.reshape([-1])
            });
            let mut inputs = vec![values(b * t * k, 5, 1.0), values(k * n, 6, 0.5)];
            if with_bias {
                inputs.push(values(n, 7, 0.5));
            }
            if onto {
                inputs.push(values(b * t * n, 8, 1.0));
            }
            check("linear", op, inputs);
        }
    }
}

#[test]
fn causal_attention_matches_composed_and_finite_differences() {
    // (b, t, heads, head size): a toy shape, then 70 positions at head sizes 64, 40 and 16.
    let shapes = [(2, 5, 2, 4), (2, 70, 2, 64), (2, 70, 3, 40), (3, 70, 4, 16)];
    for (b, t, h, hd) in shapes {
        let d = h * hd;
        // past = 0 is training; past > 0 is decoding after cached positions.
        for (past, with_bias) in [(0, true), (0, false), (2.min(t - 1), true)] {
            let op: Op = Box::new(move |x| {
                let qkv = x[0].clone().reshape([b, t, 3 * d]);
                let bias = with_bias.then(|| x[1].clone());
                ops::causal_attention(qkv, bias, h, past, 0.0).reshape([-1])
            });
            let mut inputs = vec![values(b * t * 3 * d, 8, 1.5)];
            if with_bias {
                inputs.push(values(3 * d, 10, 1.0));
            }
            check("causal_attention", op, inputs);
        }
    }
}

#[test]
fn cross_entropy_matches_composed_and_finite_differences() {
    // (rows, classes): a toy shape, and 300 rows of 65 (more rows than one task's 252).
    for (n, v) in [(6, 11), (300, 65)] {
        let targets: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % v as i64).collect();
        let op: Op = Box::new(move |x| {
            let targets = TensorData::new(targets.clone(), [n]);
            let targets = Tensor::<1, Int>::from_data(targets, &x[0].device());
            ops::cross_entropy(x[0].clone().reshape([n, v]), targets)
        });
        check("cross_entropy", op, vec![values(n * v, 9, 4.0)]);
    }
}

#[test]
fn head_loss_matches_composed_and_finite_differences() {
    // (rows, d, vocab, layouts and biases): a toy shape in every form, and GPT-2's vocabulary
    // in GPT-2's form (tied, no bias) and in Ember's default (a weight of its own and a bias).
    // The kernel's own tests cross the edges of its chunks of rows (at least 1,024 rows each):
    // here a few rows suffice, each finite difference scoring all of them over 50,257 tokens.
    let every = [
        (HeadWeight::InOut, true),
        (HeadWeight::InOut, false),
        (HeadWeight::Tied, true),
        (HeadWeight::Tied, false),
    ];
    let cases = [
        (6, 4, 11, &every[..]),
        (23, 4, 50_257, &[every[0], every[3]][..]),
    ];
    for (n, d, v, forms) in cases {
        for &(layout, with_bias) in forms {
            {
                let targets: Vec<i64> = (0..n as i64).map(|i| (i * 7919 + 3) % v as i64).collect();
                let op: Op = Box::new(move |x| {
                    let targets = TensorData::new(targets.clone(), [n]);
                    let targets = Tensor::<1, Int>::from_data(targets, &x[0].device());
                    let weight = match layout {
                        HeadWeight::InOut => x[1].clone().reshape([d, v]),
                        HeadWeight::Tied => x[1].clone().reshape([v, d]),
                    };
                    let bias = with_bias.then(|| x[2].clone());
                    ops::head_loss(x[0].clone().reshape([n, d]), weight, layout, bias, targets)
                });
                let mut inputs = vec![values(n * d, 10, 2.0), values(d * v, 11, 1.0)];
                if with_bias {
                    inputs.push(values(v, 12, 1.0));
                }
                check("head_loss", op, inputs);
            }
        }
    }
}

#[test]
fn embedding_matches_composed_and_finite_differences() {
    // (b, t, vocab, context, d, past): a toy shape; characters at the small preset's width (the
    // token gradient cut into two blocks of columns, 3 x 70 rows: several tasks); a table cut
    // into whole rows (600 tokens of 512); decoding after cached positions.
    let shapes = [
        (2, 5, 11, 8, 4, 0),
        (3, 70, 65, 80, 128, 0),
        (2, 3, 600, 4, 512, 0),
        (2, 3, 7, 9, 4, 5),
    ];
    for (b, t, vocab, context, d, past) in shapes {
        // Every token of a small table appears, some more than once (their rows summed).
        let tokens: Vec<i64> = (0..b * t)
            .map(|r| ((r * 7 + r / 5) % vocab) as i64)
            .collect();
        let op: Op = Box::new(move |x| {
            let tokens = TensorData::new(tokens.clone(), [b, t]);
            let tokens = Tensor::<2, Int>::from_data(tokens, &x[0].device());
            let (wte, wpe) = (
                x[0].clone().reshape([vocab, d]),
                x[1].clone().reshape([context, d]),
            );
            ops::embedding(tokens, wte, wpe, past).reshape([-1])
        });
        let inputs = vec![values(vocab * d, 13, 1.0), values(context * d, 14, 0.5)];
        check("embedding", op, inputs);
    }
}

#[test]
fn embedding_tied_to_a_head_sums_both_gradients() {
    // The head reads the token table after the embedding did, so its gradient of the table is
    // there first and the embedding's rows are added onto it. Whole rows (600 x 512) and
    // column stripes (65 x 128); tokens 0..b·t, so most rows of the larger table get the
    // head's gradient alone.
    for (b, t, vocab, d) in [(2, 3, 600, 512), (3, 7, 65, 128)] {
        let op: Op = Box::new(move |x| {
            let device = x[0].device();
            let tokens = TensorData::new((0..(b * t) as i64).collect::<Vec<_>>(), [b, t]);
            let tokens = Tensor::<2, Int>::from_data(tokens, &device);
            let (wte, wpe) = (
                x[0].clone().reshape([vocab, d]),
                x[1].clone().reshape([t, d]),
            );
            let hidden = ops::embedding(tokens, wte.clone(), wpe, 0).reshape([b * t, d]);
            hidden.matmul(wte.transpose()).reshape([-1])
        });
        let inputs = vec![values(vocab * d, 15, 0.1), values(t * d, 16, 0.1)];
        check("embedding tied to a head", op, inputs);
    }
}

#[test]
fn every_cpu_backend_takes_the_fused_path() {
    for (backend, device) in devices() {
        for dtype in [DType::F32, DType::F64] {
            assert!(is_fused(&device, dtype), "{backend} {dtype:?}");
            assert!(
                is_fused(&device.clone().autodiff(), dtype),
                "{backend} autodiff"
            );
        }
        assert!(!is_fused(&device, DType::F16), "{backend} f16");
        // The comparisons above take the composed path under `composed`, and only there.
        let x = Tensor::<1>::zeros([4], &device);
        assert!(
            fused(&x) && !composed(|| fused(&x)) && fused(&x),
            "{backend}"
        );
    }
}

#[test]
fn adamw_and_sum_of_squares_match_composed() {
    // A toy size, and one of 40,000 elements: three parallel tasks.
    for n in [3 * 17, 40_000] {
        for (backend, device) in devices() {
            for (dtype, tolerance) in [(FloatDType::F64, 1e-12), (FloatDType::F32, 1e-6)] {
                let what = format!("{backend} {dtype:?} n={n}");
                let t = |seed, scale| tensor(&values(n, seed, scale), &device, dtype);
                // Three steps from zero moments, with and without weight decay and clipping.
                for (weight_decay, grad_scale) in [(0.0, 1.0), (0.1, 1.0), (0.1, 0.37)] {
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
                            grad_scale,
                        };
                        let grad = t(10 + time as u64, 0.5);
                        let (p, m, v) = fused;
                        fused = ops::adamw(p, grad.clone(), m, v, step);
                        let (p, m, v) = reference;
                        reference = composed(|| ops::adamw(p, grad, m, v, step));
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
                            "{what} adamw {name} (decay {weight_decay}, gradient x {grad_scale}): \
                             differs from composed by {err:e}"
                        );
                    }
                }
                // The fused sum is taken in f64 whatever the dtype, so it must round the exact sum
                // of the values as stored; Burn's own f32 sum accumulates in f32 (1.2e-6 off over
                // 40,000 values on flex), so it gets the usual f32 tolerance of a whole op.
                let x = t(5, 2.0);
                let exact: f64 = to_vec(x.clone()).iter().map(|v| v * v).sum();
                let (f, c) = (
                    to_vec(ops::sum_of_squares(x.clone())),
                    to_vec(composed(|| ops::sum_of_squares(x))),
                );
                assert!(
                    relative_error(&f, &[exact]) <= tolerance,
                    "{what} sum of squares: {f:?}, exactly {exact}"
                );
                assert!(
                    relative_error(&c, &[exact]) <= tolerance.max(1e-5),
                    "{what} composed sum of squares: {c:?}, exactly {exact}"
                );
            }
        }
    }
}

#[test]
fn linear_transposed_matches_composed_off_autodiff() {
    // (rows, in, out): a toy shape; a generated token's row against a table of 5,000 rows of GPT-2's
    // width (one row cut across threads, the table read transposed in place); 210 rows whose
    // product is split across threads, with a tail.
    for (m, k, n) in [(2, 7, 9), (1, 768, 5000), (210, 130, 70)] {
        for (backend, device) in devices() {
            for (dtype, tolerance) in [(FloatDType::F64, 1e-12), (FloatDType::F32, 1e-5)] {
                for with_bias in [false, true] {
                    let what = format!("{backend} {dtype:?} {m}x{k}x{n}, bias {with_bias}");
                    let t = |len, seed| tensor(&values(len, seed, 1.0), &device, dtype);
                    let (x, table) = (t(m * k, 1).reshape([1, m, k]), t(n * k, 2).reshape([n, k]));
                    let bias = with_bias.then(|| t(n, 3));
                    let run = || {
                        ops::linear_transposed(x.clone(), table.clone(), bias.clone()).reshape([-1])
                    };
                    let (f, c) = (to_vec(run()), to_vec(composed(run)));
                    let err = relative_error(&f, &c);
                    assert!(err <= tolerance, "{what}: differs from composed by {err:e}");
                }
            }
        }
    }
}
