//! The tiny preset learns: on a small, fully learnable text the loss falls far below its start.

mod common;

use ember_train::NoHooks;

#[test]
fn tiny_preset_drives_the_loss_down() {
    let out = tempfile::tempdir().unwrap();
    let config = common::tiny_config(
        out.path(),
        &[
            "train.steps=150",
            "train.batch_size=16",
            "train.eval_iters=4",
            "train.sample_tokens=0",
        ],
    );
    let text = "the cat sat on the mat. the dog sat on the log.\n".repeat(200);
    let mut trainer = common::new_trainer(config, &text);
    let summary = trainer.train(&mut NoHooks).unwrap();
    let eval = summary.last_eval.unwrap();
    // Starts near ln(16 characters) = 2.77; a memorisable text ends far below.
    assert!(
        eval.val_loss < 1.0,
        "val loss {} after 150 steps",
        eval.val_loss
    );
    assert!(summary.last_loss < 1.0, "train loss {}", summary.last_loss);
    let metrics = std::fs::read_to_string(trainer.run_dir().join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(first["loss"].as_f64().unwrap() > 2.5, "{first}");
}
