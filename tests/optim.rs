//! The optimizer set-up: which parameters decay, PyTorch's AdamW update, global-norm clipping.

mod common;

use burn::module::ParamGroup;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use common::{cpu, values};
use ember_model::parameters;
use ember_model::{Gpt, GptConfig};
use ember_train::config::TrainSection;
use ember_train::optim::{NO_DECAY_PATTERN, adamw, clip_global_norm};

fn model_and_grads() -> (Gpt, GradientsParams) {
    let device = cpu().autodiff();
    device.seed(3);
    let model = GptConfig::new(9, 16, 2, 2, 8).init(&device);
    let batch = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 4]), &device);
    let loss = model.loss(
        batch(vec![1, 2, 3, 4, 5, 6, 7, 8]),
        batch(vec![2, 3, 4, 5, 6, 7, 8, 0]),
    );
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (model, grads)
}

#[test]
fn only_matrices_are_decayed() {
    let (model, _) = model_and_grads();
    let group = ParamGroup::from_regex(NO_DECAY_PATTERN).unwrap();
    let params = parameters(&model);
    assert_eq!(params.len(), 2 + 2 * 12 + 2 + 2);
    for p in params {
        let rank = p.shape.len();
        assert_eq!(
            group.matches(&p.id, Some(&p.path)),
            rank == 1,
            "{} (rank {rank})",
            p.path
        );
    }
}

#[test]
fn first_adamw_step_is_pytorchs() {
    let (model, grads) = model_and_grads();
    let train = TrainSection {
        weight_decay: 0.1,
        eps: 1e-8,
        ..TrainSection::default()
    };
    let lr = 0.01;
    let head = model.head.weight.as_ref().expect("an untied head");
    let weight = (head.id, values(head.val()));
    let bias = (
        model.head.bias.as_ref().unwrap().id,
        values(model.head.bias.as_ref().unwrap().val()),
    );
    let (gw, gb) = (
        values(grads.get::<2>(weight.0).unwrap()),
        values(grads.get::<1>(bias.0).unwrap()),
    );
    let updated = adamw(&train).step(lr, model, grads);
    // Step 1 of torch.optim.AdamW: p = p * (1 - lr * wd) - lr * g / (|g| + eps) (bias-corrected).
    let expect = |p: &[f64], g: &[f64], wd: f64| -> Vec<f64> {
        p.iter()
            .zip(g)
            .map(|(p, g)| p * (1.0 - lr * wd) - lr * g / (g.abs() + 1e-8))
            .collect()
    };
    let close = |got: Vec<f64>, want: Vec<f64>, what: &str| {
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-6, "{what}[{i}]: got {a}, want {b}");
        }
    };
    close(
        values(updated.head.weight.as_ref().unwrap().val()),
        expect(&weight.1, &gw, 0.1),
        "head.weight",
    );
    close(
        values(updated.head.bias.as_ref().unwrap().val()),
        expect(&bias.1, &gb, 0.0),
        "head.bias",
    );
}

#[test]
fn clipping_scales_all_gradients_together() {
    let (model, mut grads) = model_and_grads();
    let params = parameters(&model);
    let grad_of = |grads: &GradientsParams, i: usize| {
        let (id, rank) = (params[i].id, params[i].shape.len());
        if rank == 1 {
            values(grads.get::<1>(id).unwrap())
        } else {
            values(grads.get::<2>(id).unwrap())
        }
    };
    let before: Vec<Vec<f64>> = (0..params.len()).map(|i| grad_of(&grads, i)).collect();
    let norm = before.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    assert!(norm > 0.01);
    let reported = clip_global_norm(&model, &mut grads, 0.01);
    assert!(
        (reported - norm).abs() < 1e-5 * norm,
        "reported {reported}, actual {norm}"
    );
    let after: Vec<Vec<f64>> = (0..params.len()).map(|i| grad_of(&grads, i)).collect();
    let new_norm = after.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    assert!((new_norm - 0.01).abs() < 1e-6, "clipped norm {new_norm}");
    let scale = 0.01 / (norm + 1e-6);
    for (b, a) in before.iter().flatten().zip(after.iter().flatten()) {
        assert!((b * scale - a).abs() < 1e-7);
    }
    // Below the limit nothing changes.
    let again = clip_global_norm(&model, &mut grads, 1.0);
    assert!((again - 0.01).abs() < 1e-6);
}
