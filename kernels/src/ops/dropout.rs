//! Dropout: each element zeroed with probability `p` and the rest scaled by `1/(1 - p)`, in
//! training only (on an autodiff device; evaluation and sampling run the model without one).
//!
//! Burn's own `Dropout` module, built on the spot: its masks come from the device's generator,
//! which the trainer seeds from the run's seed and the step before every step, so that a resumed
//! run draws the masks an uninterrupted one would. It is not a module field of the model because
//! its `training` flag would become part of every checkpoint's record.

use burn::nn::DropoutConfig;
use burn::tensor::Tensor;

/// `x` with dropout of probability `p` applied when `x` is on an autodiff device; `x` itself
/// otherwise, or when `p` is 0.
pub fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if !drops(&x, p) {
        return x;
    }
    DropoutConfig::new(p).init().forward(x)
}

/// Whether [`dropout`] of probability `p` changes `x` (a training step with `p > 0`).
pub fn drops<const D: usize>(x: &Tensor<D>, p: f64) -> bool {
    p > 0.0 && x.device().is_autodiff()
}
