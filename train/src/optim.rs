//! AdamW as PyTorch and nanoGPT configure it, and gradient clipping by the global norm.
//!
//! Burn's AdamW defaults differ from PyTorch's (beta2 0.999, eps 1e-5, weight decay 1e-4), so
//! every value comes from the config. Weight decay applies to matrices only: Linear weights and
//! both embeddings (nanoGPT decays every parameter of rank >= 2, embeddings included); biases and
//! LayerNorm scales and shifts are not decayed.
//!
//! Burn's own clipping works tensor by tensor; nanoGPT clips the norm of all gradients together
//! (`clip_grad_norm_`), which keeps the direction of the update. [`clip_global_norm`] does that.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::config::TrainSection;

/// Module paths of the parameters that are not decayed: biases, LayerNorm gamma and beta.
pub const NO_DECAY_PATTERN: &str = r"(^|\.)(bias|gamma|beta)$";

/// AdamW over every parameter, with a second group without weight decay.
pub fn adamw(train: &TrainSection) -> ModuleOptimizer {
    let config = |weight_decay: f64| {
        AdamWConfig::new()
            .with_beta_1(train.beta1 as f32)
            .with_beta_2(train.beta2 as f32)
            .with_epsilon(train.eps as f32)
            .with_weight_decay(weight_decay as f32)
    };
    let no_decay = ParamGroup::from_regex(NO_DECAY_PATTERN).expect("the pattern is valid");
    config(train.weight_decay)
        .init()
        .with_group(no_decay, config(0.0).build(), None)
}

/// Scales all gradients together so that their global L2 norm is at most `max_norm` (no-op for
/// `max_norm == 0`), and returns the norm before clipping, as PyTorch's `clip_grad_norm_`.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut sum = SquaredNorm { grads, total: None };
    model.visit(&mut sum);
    let norm = sum
        .total
        .map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt());
    if max_norm > 0.0 && norm > max_norm {
        // The same 1e-6 as PyTorch, so clipped updates match the reference.
        let scale = max_norm / (norm + 1e-6);
        model.visit(&mut Scale { grads, scale });
    }
    norm
}

/// Sum of the squares of every gradient, accumulated on the device (one read at the end).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    scale: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, grad.mul_scalar(self.scale));
        }
    }
}
