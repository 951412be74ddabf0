//! Bounded fuzzing of everything Ember reads from a file or a command line: the config loader
//! (TOML and `--set`), the vocabulary, the checkpoint (manifest, state, model and optimizer
//! records), safetensors (nanoGPT's names, and a Hugging Face GPT-2 folder's config.json and
//! weights), and token datasets (`meta.json`, a BPE's `tokenizer.json`, the token
//! files, and the windows drawn from them). Inputs are real files with random bytes changed or cut off, and
//! random text; every reader must answer with an error, never a panic, and never allocate much
//! more than its input (a length field that says "a terabyte" must not be believed).
//!
//! The suite's own run is reproducible: 1,000 cases per reader from a fixed seed, so that CI never
//! fails by chance. `PROPTEST_CASES=N cargo test --release --test fuzz` is a long run of N cases
//! per reader from a random seed, which a failure prints (`PROPTEST_RNG_SEED=S` repeats it); the
//! README gives the command and the result of such runs. Inputs that once made Burn panic are
//! kept below as regression cases.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use burn_pack::Scalar;
use ember::memory::{GLOBAL_COUNTERS, TrackingAllocator};
use ember_model::{Gpt, GptConfig, from_hf, from_safetensors, to_safetensors};
use ember_train::checkpoint::{self, CheckpointFiles};
use ember_train::config::ConfigBuilder;
use ember_train::tokenizer::CharTokenizer;
use ember_train::{NoHooks, RunConfig};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

/// Most a reader may allocate beyond what it is given: the tiny model it builds and its copies.
const ALLOCATION_ALLOWANCE: usize = 32 << 20;

/// Cases per reader unless `PROPTEST_CASES` says otherwise (about 2 s in all on 2 cores).
const CASES: u32 = 1000;

/// The seed of the suite's own runs.
const SEED: u64 = 20_261_203;

/// `CASES` from `SEED`, unless `PROPTEST_CASES` asks for a long run (then from a random seed,
/// printed with the test's output) or `PROPTEST_RNG_SEED` names a seed.
fn config() -> ProptestConfig {
    // The default reads PROPTEST_CASES and PROPTEST_RNG_SEED from the environment.
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let long_run = std::env::var_os("PROPTEST_CASES").is_some();
    if !long_run {
        config.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        let seed = if long_run { random_seed() } else { SEED };
        println!("fuzz seed {seed}: PROPTEST_RNG_SEED={seed} repeats this run");
        config.rng_seed = RngSeed::Fixed(seed);
    }
    config
}

/// A seed that differs from run to run (the standard library's per-process hash keys).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
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
        let gpt = saved_gpt();
        let _ = bounded(&bytes, || checkpoint::decode_model(&gpt, bytes.clone(), &common::cpu(), Path::new("ckpt")));
    }

    #[test]
    fn optimizer_records_never_panic(bytes in mutated(leak(real_checkpoint().0.optimizer.clone().unwrap()))) {
        let train = saved_config().train;
        let model = saved_model();
        let _ = bounded(&bytes, || checkpoint::decode_optimizer(&train, bytes.clone(), &model, Path::new("ckpt")));
    }

    #[test]
    fn checkpoint_folders_never_panic(
        manifest in mutated(leak(real_checkpoint().1.clone())),
        state in mutated(leak(real_checkpoint().2.clone())),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), &manifest);
        std::fs::write(dir.path().join("state.json"), &state).unwrap();
        let loaded = bounded(&manifest, || checkpoint::load(dir.path()));
        // A changed state.json is refused by its checksum; a changed manifest (the root of the
        // checksums, not checksummed itself) loads exactly when it still says the same thing,
        // as when whitespace changed (a "\n" became "\r" in a long run).
        prop_assert_eq!(loaded.is_ok(), same_manifest(&manifest) && state == real_checkpoint().2);
    }

    #[test]
    fn token_folders_never_panic(
        meta in text_like(leak_str(dataset_file("meta.json"))),
        tokenizer in text_like(leak_str(dataset_file("tokenizer.json"))),
        train in mutated(leak(dataset_file("train.bin"))),
    ) {
        use ember_train::data::{Data, Split};
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("meta.json", meta.as_bytes()),
            ("tokenizer.json", tokenizer.as_bytes()),
            ("train.bin", train.as_slice()),
            ("val.bin", dataset_file("val.bin").as_slice()),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let path = format!("data.path={:?}", dir.path().display().to_string());
        let config = common::tiny_config(dir.path(), &[&path, "model.context=8"]);
        let input = [meta.as_bytes(), tokenizer.as_bytes(), &train].concat();
        if let Ok(data) = bounded(&input, || Data::load(&config.data, 8, None)) {
            let mut rng = ember_train::rng::SplitMix64::new(1);
            for _ in 0..4 {
                let _ = data.dataset.batch(Split::Train, 4, 8, &mut rng, &common::cpu());
            }
            let _ = data.tokenizer.encode("Hello, wörld 🙂");
        }
    }

    #[test]
    fn safetensors_never_panic(bytes in mutated(leak(exported()))) {
        let _ = bounded(&bytes, || from_safetensors(&bytes, &common::cpu(), None));
    }

    #[test]
    fn hugging_face_folders_never_panic(
        config in text_like(include_str!("fixtures/hf/tiny-gpt2/config.json")),
        weights in mutated(include_bytes!("fixtures/hf/tiny-gpt2/model.safetensors")),
    ) {
        let input = [config.as_bytes(), &weights].concat();
        let _ = bounded(&input, || from_hf(&config, &weights, &common::cpu()));
    }
}

/// A file of a BPE dataset prepared from the tokens fixture (made once).
fn dataset_file(name: &str) -> Vec<u8> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use ember_train::prepare::{PrepareSpec, prepare};
        let dir = tempfile::tempdir().unwrap();
        let spec = PrepareSpec {
            inputs: vec![
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens/sample.txt"),
            ],
            out: dir.path().join("bpe"),
            tokenizer: ember_train::tokenizer::TokenizerKind::Bpe,
            vocab_size: 300,
            val_fraction: 0.1,
        };
        prepare(
            &spec,
            &|_, _| {},
            &std::sync::atomic::AtomicBool::new(false),
        )
        .unwrap();
        dir
    });
    std::fs::read(dir.path().join("bpe").join(name)).unwrap()
}

fn leak_str(bytes: Vec<u8>) -> &'static str {
    String::from_utf8(bytes).unwrap().leak()
}

/// The architecture of the real checkpoint's model.
fn saved_gpt() -> GptConfig {
    let vocab = &real_checkpoint().0.tokenizer_file.as_ref().unwrap().1;
    let vocab = CharTokenizer::from_json(vocab, "vocab.json").unwrap();
    saved_config().model.gpt(vocab.vocab_size())
}

/// The real checkpoint's model (decoded once: the optimizer's fuzzer needs it for every case).
fn saved_model() -> Gpt {
    static MODEL: OnceLock<Gpt> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let model = real_checkpoint().0.model.clone();
            checkpoint::decode_model(&saved_gpt(), model, &common::cpu(), Path::new("ckpt"))
                .unwrap()
        })
        .clone()
}

/// Whether `manifest` lists the real checkpoint's files and checksums, whatever its layout.
fn same_manifest(manifest: &[u8]) -> bool {
    let parse = |bytes: &[u8]| serde_json::from_slice::<BTreeMap<String, String>>(bytes).ok();
    parse(manifest).is_some_and(|m| Some(m) == parse(&real_checkpoint().1))
}

/// The real checkpoint's model as an Ember safetensors export.
fn exported() -> Vec<u8> {
    to_safetensors(&saved_model(), &saved_gpt(), Default::default()).unwrap()
}

/// The real checkpoint's files in `dir`, with `manifest` for its manifest.
fn write_checkpoint(dir: &Path, manifest: &[u8]) {
    let (files, _, state) = real_checkpoint();
    for (name, bytes) in [
        ("manifest.json", manifest),
        ("state.json", state.as_slice()),
        ("model.bpk", files.model.as_slice()),
        ("optimizer.bpk", files.optimizer.as_deref().unwrap()),
        ("config.toml", files.config_toml.as_bytes()),
        (
            "vocab.json",
            files.tokenizer_file.as_ref().unwrap().1.as_bytes(),
        ),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A long run found a manifest with a "\n" changed into "\r", which the test had expected to be
/// refused: it says the same thing, and loads.
#[test]
fn a_manifest_that_says_the_same_in_other_whitespace_loads() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = String::from_utf8(real_checkpoint().1.clone())
        .unwrap()
        .replacen('\n', "\r", 3);
    write_checkpoint(dir.path(), manifest.as_bytes());
    assert!(same_manifest(manifest.as_bytes()));
    checkpoint::load(dir.path()).unwrap();
}

/// Long runs found a manifest whose "vocab.json" had become " ocab.json": the vocabulary then
/// looked absent (a tokenizer file is optional since GPT-2 runs have none) and the checkpoint
/// loaded. A name the manifest lists must be a checkpoint file.
#[test]
fn a_manifest_that_lists_an_unknown_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = String::from_utf8(real_checkpoint().1.clone())
        .unwrap()
        .replace("\"vocab.json\"", "\" ocab.json\"");
    write_checkpoint(dir.path(), manifest.as_bytes());
    let Err(err) = checkpoint::load(dir.path()) else {
        panic!("a damaged manifest loaded");
    };
    let err = err.to_string();
    assert!(
        err.ends_with(
            "manifest.json: lists \" ocab.json\", which is not a checkpoint file: the manifest is damaged"
        ),
        "{err}"
    );
}

/// Long runs found that the tokenizers crate (0.23.2) panics in its decoder's deserializer
/// (`decoders/mod.rs:90`, an `unwrap`) on a `tokenizer.json` with a vertical tab where a space
/// was, instead of returning an error: Ember's reader turns it into one.
#[test]
fn a_tokenizer_json_that_makes_tokenizers_panic_is_an_error() {
    use ember_train::tokenizer::Bpe;
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens/bpe/tokenizer.json");
    let json = std::fs::read_to_string(path).unwrap();
    let damaged = json.replacen("\"decoder\": {", "\"decoder\":\u{b}{", 1);
    assert_ne!(damaged, json);
    let err = Bpe::from_json(&damaged, "tokenizer.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tokenizer.json: not a tokenizer.json Ember can read (the tokenizer cannot be loaded (Helper: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn the_seeds_themselves_load() {
    let (files, _, _) = real_checkpoint();
    let (gpt, model) = (saved_gpt(), saved_model());
    let train = saved_config().train;
    let ckpt = Path::new("ckpt");
    assert!(
        checkpoint::decode_optimizer(&train, files.optimizer.clone().unwrap(), &model, ckpt)
            .is_ok()
    );
    assert!(
        ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(files.model.clone())).is_ok()
    );
    assert_eq!(model.num_params(), gpt.num_params());
    assert!(from_safetensors(&exported(), &common::cpu(), None).is_ok());
    let hf_config = include_str!("fixtures/hf/tiny-gpt2/config.json");
    let hf_weights = include_bytes!("fixtures/hf/tiny-gpt2/model.safetensors");
    assert!(from_hf(hf_config, hf_weights, &common::cpu()).is_ok());
    assert!(
        ConfigBuilder::from_toml(include_str!("../configs/small.toml"), "small.toml")
            .and_then(ConfigBuilder::build)
            .is_ok()
    );
}

/// `record` (a burnpack file) written again by burn-pack itself after `edit` changed its tensors,
/// scalars or metadata: a damaged record that is still a well-formed container.
fn rewritten(
    record: &[u8],
    edit: impl FnOnce(&mut Vec<burn_pack::Tensor>, &mut BTreeMap<String, Scalar>),
) -> Vec<u8> {
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(record.to_vec())).unwrap();
    let (mut scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
    let mut tensors = reader.into_tensors().unwrap();
    edit(&mut tensors, &mut scalars);
    let writer = scalars
        .into_iter()
        .fold(burn_pack::Writer::new(tensors), |w, (k, v)| {
            w.with_scalar(&k, v)
        });
    let writer = metadata
        .iter()
        .fold(writer, |w, (k, v)| w.with_metadata(k, v));
    writer.into_bytes().unwrap().to_vec()
}

/// The decoder's one-line error for a damaged record (`what`), which must not load.
fn refused(what: &str, decode: impl FnOnce() -> Result<(), ember_train::TrainError>) -> String {
    match decode() {
        Ok(()) => panic!("{what}: the damaged record was loaded"),
        Err(err) => err.to_string(),
    }
}

// Burn 0.22.1 panicked on this (found by the long fuzz run): an optimizer state of rank 9, in
// burn-optim's `DynOptimizer::state_unflatten`.
#[test]
fn an_optimizer_state_of_an_unsupported_rank_is_an_error() {
    let (files, model) = (&real_checkpoint().0, saved_model());
    let bytes = rewritten(files.optimizer.as_ref().unwrap(), |_, scalars| {
        let rank = scalars
            .keys()
            .find(|k| k.ends_with(".__rank"))
            .unwrap()
            .clone();
        scalars.insert(rank, Scalar::UInt(9));
    });
    let train = saved_config().train;
    let err = refused("rank 9", || {
        checkpoint::decode_optimizer(&train, bytes, &model, Path::new("ckpt")).map(drop)
    });
    assert!(err.starts_with("ckpt: optimizer.bpk: `"), "{err}");
    assert!(
        err.contains(".__rank` is UInt(9) but the parameter"),
        "{err}"
    );
}

// Burn 0.22.1 panicked on this (found by the long fuzz run): a model parameter stored as U32,
// in burn-tensor's float `from_data` ("Expected float dtype, got U32").
#[test]
fn a_model_parameter_of_an_integer_dtype_is_an_error() {
    let bytes = rewritten(&real_checkpoint().0.model, |tensors, _| {
        tensors[0].dtype = burn::tensor::DType::U32;
    });
    let err = refused("a U32 parameter", || {
        checkpoint::decode_model(&saved_gpt(), bytes, &common::cpu(), Path::new("ckpt")).map(drop)
    });
    assert!(err.contains("is U32 but the parameter"), "{err}");
}

#[test]
fn incomplete_or_foreign_optimizer_state_is_an_error() {
    let (files, model) = (&real_checkpoint().0, saved_model());
    let train = saved_config().train;
    let decode = |what, bytes| {
        let ckpt = Path::new("ckpt");
        refused(what, || {
            checkpoint::decode_optimizer(&train, bytes, &model, ckpt).map(drop)
        })
    };
    // Burn would drop the state silently and restart that parameter's moments from zero.
    let no_moment = rewritten(files.optimizer.as_ref().unwrap(), |tensors, _| {
        let id = tensors[0].name.split('.').next().unwrap().to_string();
        tensors.retain(|t| t.name != format!("{id}.momentum.moment_2"));
    });
    assert!(decode("a moment missing", no_moment).contains("lacks momentum.moment_2"));
    // Burn panicked on this one before Ember checked for it.
    let no_id = rewritten(files.optimizer.as_ref().unwrap(), |tensors, _| {
        tensors[0].param_id = None
    });
    assert!(decode("no parameter id", no_id).contains("carries parameter id None"));
    let wrong_shape = rewritten(files.optimizer.as_ref().unwrap(), |tensors, _| {
        let t = &mut tensors[0];
        let bytes = t.to_bytes().unwrap();
        *t = burn_pack::Tensor::new(
            t.name.clone(),
            t.dtype,
            [1, bytes.len() / 4],
            t.param_id,
            bytes,
        );
    });
    assert!(decode("a moment of another shape", wrong_shape).contains("has shape"));
    let huge_time = rewritten(files.optimizer.as_ref().unwrap(), |_, scalars| {
        let time = scalars
            .keys()
            .find(|k| k.ends_with(".momentum.time"))
            .unwrap()
            .clone();
        scalars.insert(time, Scalar::UInt(1 << 40));
    });
    assert!(decode("a step count of 2^40", huge_time).contains("not a step count"));
}

/// The minimal inputs of docs/burn-upstream.md, run against Burn itself: if this starts to
/// fail, Burn no longer panics on them and the note (perhaps the checks too) can go.
#[test]
fn the_burn_panics_reported_upstream_still_happen() {
    use burn::module::Param;
    use burn::tensor::{DType, Tensor};
    use burn_pack::Writer;

    #[derive(Module, Debug)]
    struct One {
        w: Param<Tensor<1>>,
    }
    let panics =
        |f: Box<dyn FnOnce()>| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    // 1. An optimizer record whose state claims rank 9.
    let rank_9 = Writer::new(vec![])
        .with_scalar("1.__rank", Scalar::UInt(9))
        .into_bytes()
        .unwrap();
    assert!(panics(Box::new(|| {
        let _ = burn::optim::AdamWConfig::new().init().from_bytes(rank_9);
    })));
    // 2. An optimizer record tensor without a parameter id.
    let no_id = burn_pack::Tensor::new(
        "1.momentum.moment_1".into(),
        DType::F32,
        [1],
        None,
        Bytes::from_elems(vec![0f32]),
    );
    let no_id = Writer::new(vec![no_id]).into_bytes().unwrap();
    assert!(panics(Box::new(|| {
        let _ = burn::optim::AdamWConfig::new().init().from_bytes(no_id);
    })));
    // 3. A model record holding a float parameter as U32.
    let w = burn_pack::Tensor::new(
        "w".into(),
        DType::U32,
        [1],
        Some(1),
        Bytes::from_elems(vec![0u32]),
    );
    let record = Writer::new(vec![w]).into_bytes().unwrap();
    let device = common::cpu();
    assert!(panics(Box::new(move || {
        let one = One {
            w: Param::from_tensor(Tensor::zeros([1], &device)),
        };
        let _ = one.try_load_record(ModuleRecord::from_bytes(record).unwrap());
    })));
}
