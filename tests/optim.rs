//! The optimizer set-up: which parameters decay, PyTorch's AdamW update, global-norm clipping.

mod common;

use burn::module::{Module, ParamGroup};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use common::{cpu, values};
use ember_model::{Gpt, GptConfig};
use ember_model::{parameters, with_values};
use ember_train::config::TrainSection;
use ember_train::optim::{self, NO_DECAY_PATTERN, adamw, clip_global_norm};

fn model_and_grads() -> (Gpt, GradientsParams) {
    let device = cpu().autodiff();
    device.seed(3);
    let model = GptConfig::new(9, 16, 2, 2, 8).init(&device);
    let grads = grads_of(&model);
    (model, grads)
}

fn grads_of(model: &Gpt) -> GradientsParams {
    let device = cpu().autodiff();
    let batch = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 4]), &device);
    let loss = model.loss(
        batch(vec![1, 2, 3, 4, 5, 6, 7, 8]),
        batch(vec![2, 3, 4, 5, 6, 7, 8, 0]),
    );
    GradientsParams::from_grads(loss.backward(), model)
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
fn clipping_scales_all_gradients_together_inside_the_update() {
    let (model, grads) = model_and_grads();
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
    let clip = clip_global_norm(&model, &grads, 0.01);
    assert!(
        (clip.norm - norm).abs() < 1e-5 * norm,
        "reported {}, actual {norm}",
        clip.norm
    );
    assert_eq!(clip.scale, 0.01 / (clip.norm + 1e-6));
    let after: Vec<Vec<f64>> = (0..params.len()).map(|i| grad_of(&grads, i)).collect();
    assert_eq!(
        before, after,
        "measuring the norm leaves the gradients alone"
    );
    // Below the limit, and with clipping off, the factor is 1.
    assert_eq!(clip_global_norm(&model, &grads, 2.0 * norm).scale, 1.0);
    assert_eq!(clip_global_norm(&model, &grads, 0.0).scale, 1.0);

    // The factor applied inside AdamW's pass is the same update, bit for bit, as the gradients
    // scaled first by a pass of their own (what clipping did before), with and without decay.
    let mut scaled = grads_of(&model);
    for p in &params {
        if p.shape.len() == 1 {
            let g = scaled.remove::<1>(p.id).unwrap();
            scaled.register::<1>(p.id, g.mul_scalar(clip.scale));
        } else {
            let g = scaled.remove::<2>(p.id).unwrap();
            scaled.register::<2>(p.id, g.mul_scalar(clip.scale));
        }
    }
    let train = TrainSection {
        weight_decay: 0.1,
        ..TrainSection::default()
    };
    let folded = optim::step(&mut adamw(&train), 0.01, model.clone(), grads, clip.scale);
    let separate = adamw(&train).step(0.01, model, scaled);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    with_values(&folded, |p, v| {
        a.push((p.path, v.iter::<f32>().collect::<Vec<_>>()))
    });
    with_values(&separate, |p, v| {
        b.push((p.path, v.iter::<f32>().collect::<Vec<_>>()))
    });
    assert_eq!(a.len(), params.len());
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        let same = x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{path}: clipping inside the update differs from scaling first"
        );
    }
}

/// What a burnpack file holds, in a form that does not depend on the order its tensors were
/// written in (the optimizer's state is kept in a hash map).
type PackContents = (
    std::collections::BTreeMap<String, (burn::tensor::DType, Vec<usize>, Option<u64>, Vec<u8>)>,
    std::collections::BTreeMap<String, burn_pack::Scalar>,
    std::collections::BTreeMap<String, String>,
);

fn contents(bytes: burn::tensor::Bytes) -> PackContents {
    let reader = burn_pack::Reader::from_bytes(bytes).unwrap();
    let (scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
    let tensors = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, id, bytes) = t.into_parts().unwrap();
            (name, (dtype, shape.to_vec(), id, bytes.to_vec()))
        })
        .collect();
    (tensors, scalars, metadata)
}

/// Ember writes the model's record and the optimizer's itself (each parameter and moment read in
/// one slice copy, not element by element as Burn's records read them), and they are the records
/// Burn writes: the model's file byte for byte, and the optimizer's state, read back by Burn's own
/// `AdamW` and written again by it, the same tensors, scalars and paths.
#[test]
fn checkpoint_records_are_the_ones_burn_writes() {
    let (model, grads) = model_and_grads();
    let train = TrainSection {
        weight_decay: 0.1,
        ..TrainSection::default()
    };
    let mut optimizer = adamw(&train);
    let model = optim::step(&mut optimizer, 0.01, model, grads, 1.0);
    let grads = grads_of(&model);
    let model = optim::step(&mut optimizer, 0.01, model, grads, 0.5);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    ember_train::checkpoint::write_model(&model, &path).unwrap();
    let burns = model.clone().into_record().into_bytes().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), burns.to_vec());

    let ours = optimizer.into_bytes().unwrap();
    let rewritten = burn::optim::AdamWConfig::new()
        .init()
        .from_bytes(ours.clone())
        .unwrap()
        .into_bytes()
        .unwrap();
    let (tensors, scalars, paths) = contents(ours);
    assert_eq!(tensors.len(), 2 * parameters(&model).len());
    assert_eq!(scalars.len(), 2 * parameters(&model).len());
    assert!(
        scalars
            .values()
            .any(|s| *s == burn_pack::Scalar::from(2usize))
    );
    assert_eq!((tensors, scalars, paths), contents(rewritten));
}
