//! Bounded fuzzing of everything Ember reads from a file or a command line: the config loader
//! (TOML and `--set`), the vocabulary, the checkpoint (manifest, state, model and optimizer
//! records) and safetensors. Inputs are real files with random bytes changed or cut off, and
//! random text; every reader must answer with an error, never a panic, and never allocate much
//! more than its input (a length field that says "a terabyte" must not be believed).
//!
//! `PROPTEST_CASES=N cargo test --release --test fuzz` runs N cases per reader instead of the
//! default below; the README gives the command and the result of a long run.

mod common;

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use burn::module::Module;
use burn::store::ModuleRecord;
use ember::memory::{GLOBAL_COUNTERS, TrackingAllocator};
use ember_model::{from_safetensors, to_safetensors};
use ember_train::checkpoint::{self, CheckpointFiles};
use ember_train::config::ConfigBuilder;
use ember_train::tokenizer::CharTokenizer;
use ember_train::{NoHooks, RunConfig};
use proptest::prelude::*;
use proptest::sample::Index;

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

/// Most a reader may allocate beyond what it is given: the tiny model it builds and its copies.
const ALLOCATION_ALLOWANCE: usize = 32 << 20;

/// Cases per reader unless `PROPTEST_CASES` says otherwise (about 2 s in all on 2 cores).
const CASES: u32 = 1000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `read` on `input`, one reader at a time (the allocation window is process-wide), and
/// fails if it allocated more than `input.len()` plus the allowance at any moment.
fn bounded<T>(input: &[u8], read: impl FnOnce() -> T) -> T {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = GLOBAL_COUNTERS.stats().live;
    GLOBAL_COUNTERS.reset_window_peak();
    let out = read();
    let grew = GLOBAL_COUNTERS.stats().window_peak.saturating_sub(before);
    assert!(
        grew <= input.len() + ALLOCATION_ALLOWANCE,
        "a {}-byte input made the reader allocate {grew} bytes",
        input.len()
    );
    out
}

/// `seed` with up to 8 bytes replaced and, half the time, cut short.
fn mutated(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(move |(changes, cut, truncate)| {
            let mut bytes = seed.to_vec();
            for (at, byte) in changes {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

/// Text made of `seed` with bytes changed (kept only if still UTF-8) or random printable text.
fn text_like(seed: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        mutated(seed.as_bytes()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[ -~\n\t]{0,200}",
    ]
}

/// The files of a real checkpoint (two steps of the tiny preset), made once, with the bytes of
/// its `manifest.json` and `state.json`.
fn real_checkpoint() -> &'static (CheckpointFiles, Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(CheckpointFiles, Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        let config = common::tiny_config(
            out.path(),
            &[
                "train.steps=2",
                "train.eval_iters=0",
                "train.sample_tokens=0",
                "train.batch_size=2",
            ],
        );
        let text = ember_train::corpus::TINY_SHAKESPEARE;
        let mut trainer = common::new_trainer(config, &text[..20_000]);
        trainer.train(&mut NoHooks).unwrap();
        let dir = checkpoint::resolve(trainer.run_dir()).unwrap();
        let files = checkpoint::load(&dir).unwrap();
        let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        let state = std::fs::read(dir.join("state.json")).unwrap();
        (files, manifest, state)
    })
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

fn saved_config() -> RunConfig {
    toml::from_str(&real_checkpoint().0.config_toml).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_files_never_panic(text in text_like(include_str!("../configs/small.toml"))) {
        let _ = bounded(text.as_bytes(), || {
            ConfigBuilder::from_toml(&text, "fuzz.toml").and_then(ConfigBuilder::build)
        });
    }

    #[test]
    fn set_overrides_never_panic(
        assignment in prop_oneof![
            "(model|train|data|run|memory|x)\\.[a-z_]{0,14}=[-+0-9a-z.\"'\\[\\]{}=_ ]{0,24}",
            "[ -~]{0,40}",
        ]
    ) {
        let _ = bounded(assignment.as_bytes(), || {
            ConfigBuilder::preset("tiny")
                .and_then(|b| b.set(&assignment, "--set"))
                .and_then(ConfigBuilder::build)
        });
    }

    #[test]
    fn vocabularies_never_panic(
        json in text_like(CharTokenizer::from_text(ember_train::corpus::TINY_SHAKESPEARE).to_json().leak())
    ) {
        let _ = bounded(json.as_bytes(), || CharTokenizer::from_json(&json, "vocab.json"));
    }

    #[test]
    fn model_records_never_panic(bytes in mutated(leak(real_checkpoint().0.model.clone()))) {
        let gpt = saved_config().model.gpt(CharTokenizer::from_json(&real_checkpoint().0.vocab_json, "vocab.json").unwrap().vocab_size());
        let _ = bounded(&bytes, || checkpoint::decode_model(&gpt, bytes.clone(), &common::cpu(), Path::new("ckpt")));
    }

    #[test]
    fn optimizer_records_never_panic(bytes in mutated(leak(real_checkpoint().0.optimizer.clone()))) {
        let train = saved_config().train;
        let _ = bounded(&bytes, || checkpoint::decode_optimizer(&train, bytes.clone(), Path::new("ckpt")));
    }

    #[test]
    fn checkpoint_folders_never_panic(
        manifest in mutated(leak(real_checkpoint().1.clone())),
        state in mutated(leak(real_checkpoint().2.clone())),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = &real_checkpoint().0;
        for (name, bytes) in [
            ("manifest.json", manifest.as_slice()),
            ("state.json", state.as_slice()),
            ("model.bpk", files.model.as_slice()),
            ("optimizer.bpk", files.optimizer.as_slice()),
            ("config.toml", files.config_toml.as_bytes()),
            ("vocab.json", files.vocab_json.as_bytes()),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let loaded = bounded(&manifest, || checkpoint::load(dir.path()));
        // Unchanged files load; changed ones are refused by the manifest or its parser.
        let unchanged = manifest == real_checkpoint().1 && state == real_checkpoint().2;
        prop_assert_eq!(loaded.is_ok(), unchanged);
    }

    #[test]
    fn safetensors_never_panic(bytes in mutated(leak(exported()))) {
        let _ = bounded(&bytes, || from_safetensors(&bytes, &common::cpu(), None));
    }
}

/// The real checkpoint's model as an Ember safetensors export.
fn exported() -> Vec<u8> {
    let files = &real_checkpoint().0;
    let vocab = CharTokenizer::from_json(&files.vocab_json, "vocab.json").unwrap();
    let gpt = saved_config().model.gpt(vocab.vocab_size());
    let model =
        checkpoint::decode_model(&gpt, files.model.clone(), &common::cpu(), Path::new("ckpt"))
            .unwrap();
    to_safetensors(&model, &gpt, Default::default()).unwrap()
}

#[test]
fn the_seeds_themselves_load() {
    let (files, _, _) = real_checkpoint();
    let gpt = saved_config().model.gpt(
        CharTokenizer::from_json(&files.vocab_json, "vocab.json")
            .unwrap()
            .vocab_size(),
    );
    let model =
        checkpoint::decode_model(&gpt, files.model.clone(), &common::cpu(), Path::new("ckpt"))
            .unwrap();
    assert!(
        ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(files.model.clone())).is_ok()
    );
    assert_eq!(model.num_params(), gpt.num_params());
    assert!(from_safetensors(&exported(), &common::cpu(), None).is_ok());
    assert!(
        ConfigBuilder::from_toml(include_str!("../configs/small.toml"), "small.toml")
            .and_then(ConfigBuilder::build)
            .is_ok()
    );
}
