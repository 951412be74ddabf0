//! AdamW as PyTorch and nanoGPT configure it, and gradient clipping by the global norm.
//!
//! The update is Burn's AdamW formula, one fused pass per parameter tensor on the CPU backends
//! ([`ember_kernels::ops::adamw`]); its state is Burn's `AdamWState`, recorded as Burn records it
//! (`Moments`), so a checkpoint holds the same optimizer record as `burn::optim::AdamW` would.
//! Burn's AdamW defaults differ from PyTorch's (beta2 0.999, eps 1e-5, weight decay 1e-4), so
//! every value comes from the config. Weight decay applies to matrices only: Linear weights and
//! both embeddings (nanoGPT decays every parameter of rank >= 2, embeddings included); biases and
//! LayerNorm scales and shifts are not decayed.
//!
//! Burn's own clipping works tensor by tensor; nanoGPT clips the norm of all gradients together
//! (`clip_grad_norm_`), which keeps the direction of the update. [`clip_global_norm`] measures
//! that norm and the factor it asks for, and [`step`] applies the factor inside AdamW's pass
//! rather than in a pass of its own over every gradient.

use std::cell::Cell;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{
    AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer, Optimizer,
    RecordState, StateSink, StateSource, join_path,
};
use burn::tensor::{Device, Tensor};
use burn_pack::Scalar;
use ember_kernels::cpu::AdamWStep;
use ember_kernels::ops;

use crate::config::TrainSection;

/// Module paths of the parameters that are not decayed: biases, LayerNorm gamma and beta.
pub const NO_DECAY_PATTERN: &str = r"(^|\.)(bias|gamma|beta)$";

/// AdamW over every parameter, with a second group without weight decay.
pub fn adamw(train: &TrainSection) -> ModuleOptimizer {
    let config = |weight_decay: f64| AdamW {
        beta1: train.beta1,
        beta2: train.beta2,
        eps: train.eps,
        weight_decay,
    };
    let no_decay = ParamGroup::from_regex(NO_DECAY_PATTERN).expect("the pattern is valid");
    ModuleOptimizer::from(config(train.weight_decay)).with_group(no_decay, config(0.0), None)
}

/// AdamW with decoupled weight decay, as `torch.optim.AdamW`.
#[derive(Debug, Clone, Copy)]
struct AdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Optimizer for AdamW {
    type State<const D: usize> = Moments<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (time, m, v) = match state {
            Some(Moments(AdamWState { momentum })) => {
                (momentum.time + 1, momentum.moment_1, momentum.moment_2)
            }
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let step = AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            time: i32::try_from(time).expect("fewer than 2^31 steps"),
            grad_scale: GRAD_SCALE.get(),
        };
        let (param, m, v) = ops::adamw(param, grad, m, v, step);
        let momentum = AdaptiveMomentumState::new(time, m, v);
        (param, Some(Moments(AdamWState { momentum })))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Moments(AdamWState {
            momentum: state.0.momentum.to_device(device),
        })
    }
}

/// One parameter's AdamW state: Burn's `AdamWState` (without AMSGrad's `max_moment_2`, which
/// Ember's AdamW never keeps), recorded under the names, in the order and with the values Burn's
/// derived `RecordState` gives it, and read back by Burn's own code; a test holds the two to the
/// same record. What differs is how the moments are read: Burn's copies a tensor the optimizer
/// still holds element by element (with the weights' copies, about 10.7 s of a 16 s GPT-2 124M
/// checkpoint), [`ops::snapshot`] reads it in place.
#[derive(Clone)]
struct Moments<const D: usize>(AdamWState<D>);

impl<const D: usize> RecordState for Moments<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let momentum = &self.0.momentum;
        let prefix = join_path(prefix, "momentum");
        out.push_scalar(&prefix, "time", Scalar::from(momentum.time));
        out.push_tensor(
            &prefix,
            "moment_1",
            ops::snapshot(momentum.moment_1.clone()),
        );
        out.push_tensor(
            &prefix,
            "moment_2",
            ops::snapshot(momentum.moment_2.clone()),
        );
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        AdamWState::state_unflatten(prefix, src, device).map(Self)
    }
}

thread_local! {
    /// Clipping's factor for the gradients of the step [`step`] is running on this thread. Burn's
    /// `ModuleOptimizer` calls [`AdamW`]'s step for each parameter with nothing but the learning
    /// rate, on the thread that called it, so the factor travels here, set only for that call.
    static GRAD_SCALE: Cell<f64> = const { Cell::new(1.0) };
}

/// One optimizer step of `model` with every gradient multiplied by `grad_scale` (clipping's
/// factor, from [`clip_global_norm`]) inside AdamW's single pass: the same update as scaling the
/// gradients first, without a pass over all of them to do it.
pub fn step<M: Module>(
    optim: &mut ModuleOptimizer,
    lr: LearningRate,
    model: M,
    grads: GradientsParams,
    grad_scale: f64,
) -> M {
    /// Puts the factor back to 1 however the step ends, so no later step inherits it.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            GRAD_SCALE.set(1.0);
        }
    }
    GRAD_SCALE.set(grad_scale);
    let _reset = Reset;
    optim.step(lr, model, grads)
}

/// The global L2 norm of all gradients together, and what clipping it to `max_norm` multiplies
/// every gradient by, as PyTorch's `clip_grad_norm_`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    /// The norm before clipping.
    pub norm: f64,
    /// `max_norm / (norm + 1e-6)` when the norm is above `max_norm`, else 1 (and always 1 for
    /// `max_norm == 0`, which turns clipping off).
    pub scale: f64,
}

/// Measures the gradients' global norm and the factor that clips it to `max_norm`; the
/// gradients are not changed: [`step`] applies the factor.
pub fn clip_global_norm<M: Module>(model: &M, grads: &GradientsParams, max_norm: f64) -> Clip {
    let mut sum = SquaredNorm { grads, total: None };
    model.visit(&mut sum);
    let norm = sum
        .total
        .map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt());
    let scale = if max_norm > 0.0 && norm > max_norm {
        // The same 1e-6 as PyTorch, so clipped updates match the reference.
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Clip { norm, scale }
}

/// Sum of the squares of every gradient, accumulated on the device (one read at the end).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = ops::sum_of_squares(grad);
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamWState, AdaptiveMomentumState, RecordState, StateSink};
    use burn::tensor::{Device, Tensor, TensorData};

    use super::Moments;

    /// [`Moments`] records a state as Burn's derived `RecordState` of `AdamWState` does: the same
    /// names in the same order, the same scalars, the same bytes.
    #[test]
    fn moments_are_recorded_as_burn_records_them() {
        let device = Device::default();
        let tensor = |offset: f32| {
            let values: Vec<f32> = (0..24).map(|i| (i as f32 + offset).sin()).collect();
            Tensor::<2>::from_data(TensorData::new(values, [4, 6]), &device)
        };
        let state = AdamWState {
            momentum: AdaptiveMomentumState::new(7, tensor(0.0), tensor(0.5)),
        };
        let (mut burns, mut ours) = (StateSink::default(), StateSink::default());
        state.state_flatten("12", &mut burns);
        Moments(state).state_flatten("12", &mut ours);
        let tensors = |sink: &StateSink| -> Vec<(String, Vec<u8>)> {
            let bytes = |d: &TensorData| d.as_bytes().to_vec();
            sink.tensors
                .iter()
                .map(|(n, d)| (n.clone(), bytes(d)))
                .collect()
        };
        assert_eq!(tensors(&ours), tensors(&burns));
        assert_eq!(ours.tensors.len(), 2);
        assert_eq!(
            format!("{:?}", ours.scalars),
            format!("{:?}", burns.scalars)
        );
        assert_eq!(ours.scalars.len(), 1);
    }
}
