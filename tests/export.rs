//! `ember export`: the safetensors file has nanoGPT's names and shapes, and reading it back
//! gives the checkpoint's model exactly (the same logits).

mod common;

use common::{ember_bin, out_err, trained_run};

#[test]
fn export_round_trips_with_nanogpt_names() {
    let out = tempfile::tempdir().unwrap();
    let run = trained_run(out.path(), &[]);
    let file = out.path().join("model.safetensors");
    let o = ember_bin(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", out_err(&o));
    let bytes = std::fs::read(&file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| tensors.tensor(n).unwrap().shape().to_vec();
    assert_eq!(shape("transformer.h.0.attn.c_attn.weight"), [192, 64]);
    assert_eq!(shape("transformer.h.0.mlp.c_proj.weight"), [64, 256]);
    assert_eq!(shape("transformer.wpe.weight"), [64, 64]);
    assert_eq!(shape("transformer.h.0.ln_1.weight"), [64]);
    assert_eq!(shape("lm_head.bias")[0], shape("lm_head.weight")[0]);
    assert_eq!(tensors.len(), 2 + 12 + 2 + 2);

    let device = common::cpu();
    let saved = ember::saved::SavedModel::load(&run, &device).unwrap();
    let (loaded, gpt, _) = ember_model::from_safetensors(&bytes, &device, None).unwrap();
    assert_eq!(gpt, saved.gpt);
    let input = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(vec![1i64, 5, 9, 2, 7], [1, 5]),
        &device,
    );
    let (x, y) = (
        common::values(saved.model.forward(input.clone())),
        common::values(loaded.forward(input)),
    );
    assert_eq!(x, y, "logits differ after the round trip");
}
