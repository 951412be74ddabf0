//! Autodiff gradients of the whole model against central finite differences, in f64.
//!
//! Its own test binary: the device's default float type is set once per process, before any
//! tensor exists.

mod common;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use common::{Randomize, values};
use ember_model::GptConfig;
use ember_model::parameters;
use ember_train::rng::SplitMix64;

#[test]
fn model_gradients_match_finite_differences_in_f64() {
    let mut device = common::cpu();
    device
        .configure(FloatDType::F64)
        .expect("f64 is configured before any tensor exists");
    let ad = device.clone().autodiff();
    // In f64 too, parameters not yet drawn are described in the dtype they will have.
    let fresh = GptConfig::new(7, 8, 2, 2, 5).init(&device);
    let _ = parameters(&fresh);
    assert!(!fresh.wte.weight.is_initialized());
    common::parameters_are_described_without_initializing(&fresh);
    let model = GptConfig::new(7, 8, 2, 2, 5).init(&ad).map(&mut Randomize {
        rng: SplitMix64::new(9),
        scale: 0.4,
    });
    assert_eq!(model.wte.weight.val().dtype(), burn::tensor::DType::F64);
    let batch =
        |v: Vec<i64>, device| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 5]), device);
    let (x, y) = (
        vec![0, 3, 6, 2, 2, 5, 1, 4, 0, 6],
        vec![3, 6, 2, 2, 1, 1, 4, 0, 6, 5],
    );

    let loss = model.loss(batch(x.clone(), &ad), batch(y.clone(), &ad));
    let grads = loss.backward();
    let mut analytic = Grads {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut analytic);

    let plain = model.valid();
    let loss_at = |id: ParamId, index: usize, delta: f64| {
        let m = plain.clone().map(&mut Perturb { id, index, delta });
        values(m.loss(batch(x.clone(), &device), batch(y.clone(), &device)))[0]
    };
    let h = 1e-6;
    let mut checked = 0;
    for (param, (_, grad)) in parameters(&model).into_iter().zip(analytic.out) {
        let (path, id) = (param.path, param.id);
        // A few entries of every tensor: first, last and one in between.
        for index in [0, grad.len() / 2, grad.len() - 1] {
            let numeric = (loss_at(id, index, h) - loss_at(id, index, -h)) / (2.0 * h);
            let a = grad[index];
            assert!(
                (a - numeric).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                "{path}[{index}]: autodiff {a} finite differences {numeric}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * parameters(&model).len());
}

struct Grads<'a> {
    grads: &'a burn::tensor::Gradients,
    out: Vec<(ParamId, Vec<f64>)>,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = param
            .val()
            .grad(self.grads)
            .expect("every parameter takes part in the loss");
        self.out.push((param.id, values(grad)));
    }
}

/// Adds `delta` to one entry of one parameter.
struct Perturb {
    id: ParamId,
    index: usize,
    delta: f64,
}

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.id != self.id {
            return param;
        }
        param.map(|t| {
            let (shape, device) = (t.shape(), t.device());
            let mut v = values(t);
            v[self.index] += self.delta;
            Tensor::from_data(TensorData::new(v, shape), &device)
        })
    }
}
