//! Tokens: GPT-2's encoding against OpenAI's tiktoken, a learnt BPE against Hugging Face's
//! tokenizers and transformers (fixtures in `tests/fixtures/tokens`, made by its
//! `make_fixtures.py`), `ember prepare`'s datasets, training from token folders (ours, nanoGPT's,
//! llm.c's) with a memory that does not grow with the dataset, and every bad input a clear line.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::{TINY, ember_bin, out_err, train_bin};
use ember_train::data::{DatasetMeta, LLMC_MAGIC};
use ember_train::prepare::{PrepareSpec, prepare};
use ember_train::tokenizer::{Bpe, Tokenizer, TokenizerKind};

const GPT2_EOT: u32 = 50_256;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokens")
        .join(name)
}

fn sample() -> String {
    std::fs::read_to_string(fixture("sample.txt")).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn spec(inputs: &[&Path], out: &Path, tokenizer: TokenizerKind) -> PrepareSpec {
    PrepareSpec {
        inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        out: out.to_path_buf(),
        tokenizer,
        vocab_size: 320,
        val_fraction: 0.1,
    }
}

fn prepared(spec: &PrepareSpec) -> DatasetMeta {
    prepare(spec, &|_, _| {}, &AtomicBool::new(false)).expect("the dataset is prepared")
}

/// A raw token file's values.
fn read_tokens(path: &Path, width: usize) -> Vec<u32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(width)
        .map(|b| match width {
            2 => u32::from(u16::from_le_bytes([b[0], b[1]])),
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        })
        .collect()
}

fn write_u16(path: &Path, tokens: impl IntoIterator<Item = u16>) {
    let bytes: Vec<u8> = tokens.into_iter().flat_map(u16::to_le_bytes).collect();
    std::fs::write(path, bytes).unwrap();
}

/// A failed command's output, checked to be one line holding every needle.
fn failed_with(o: &std::process::Output, needles: &[&str]) -> String {
    let all = out_err(o);
    assert!(!o.status.success(), "expected a failure: {all}");
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in: {all}");
    }
    assert_eq!(err.lines().count(), 1, "one line: {all}");
    err
}

#[test]
fn gpt2_encodes_as_tiktoken() {
    let text = sample();
    let want = ids(&json(&fixture("gpt2.json"))["text"]);
    let got = Tokenizer::Gpt2.encode(&text).unwrap();
    assert_eq!(got, want);
    assert_eq!(Tokenizer::Gpt2.decode(&got), text);
}

#[test]
fn prepare_gpt2_gives_nanogpts_split_and_a_complete_meta() {
    let dir = tempfile::tempdir().unwrap();
    // Into a folder whose parent does not exist yet.
    let out = dir.path().join("data/shakespeare");
    let meta = prepared(&spec(&[&fixture("sample.txt")], &out, TokenizerKind::Gpt2));
    let want = json(&fixture("gpt2.json"));
    let (train, val) = (ids(&want["train"]), ids(&want["val"]));
    assert_eq!(read_tokens(&out.join("train.bin"), 2), train);
    assert_eq!(read_tokens(&out.join("val.bin"), 2), val);
    assert_eq!(DatasetMeta::read(&out.join("meta.json")).unwrap(), meta);
    assert_eq!(
        (meta.train_tokens, meta.val_tokens),
        (train.len() as u64, val.len() as u64)
    );
    assert_eq!((meta.vocab_size, meta.eot), (50_257, Some(GPT2_EOT)));
    assert_eq!(meta.train_bytes + meta.val_bytes, sample().len() as u64);
    let source = &meta.sources[0];
    assert_eq!(source.bytes, sample().len() as u64);
    assert_eq!(source.sha256.len(), 64);
    // Nothing else is left beside the dataset.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn a_learnt_bpe_is_deterministic_and_encodes_as_python_tokenizers() {
    // Learnt again from the same text, the tokenizer is the committed file, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bpe");
    let meta = prepared(&spec(&[&fixture("sample.txt")], &out, TokenizerKind::Bpe));
    assert_eq!(meta.vocab_size, 320);
    let committed = std::fs::read_to_string(fixture("bpe/tokenizer.json")).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        committed
    );
    // The committed file encodes as Python's `tokenizers` (and `transformers`) encode it.
    let bpe = Tokenizer::Bpe(Box::new(Bpe::from_json(&committed, "fixture").unwrap()));
    let want = json(&fixture("bpe/ids.json"));
    let got = bpe.encode(&sample()).unwrap();
    assert_eq!(got, ids(&want["ids"]));
    assert_eq!(bpe.decode(&got), want["decoded"].as_str().unwrap());
    assert_eq!(bpe.decode(&got), sample());
}

#[test]
fn documents_are_separated_by_the_end_of_text_token() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    let (text_a, text_b) = (
        "First document.\nIt ends here.",
        "Second one, é and 🙂.\n".repeat(9),
    );
    std::fs::write(&a, text_a).unwrap();
    std::fs::write(&b, &text_b).unwrap();
    let out = dir.path().join("out");
    prepared(&spec(&[dir.path()], &out, TokenizerKind::Gpt2));
    // The split falls in the second document: nanoGPT's rule on the whole stream of characters.
    let chars = text_a.chars().count() + text_b.chars().count();
    let cut = (chars as f64 * 0.9) as usize - text_a.chars().count();
    let at = text_b.char_indices().nth(cut).unwrap().0;
    let encode = |t: &str| Tokenizer::Gpt2.encode(t).unwrap();
    let mut want = encode(text_a);
    want.push(GPT2_EOT);
    want.extend(encode(&text_b[..at]));
    assert_eq!(read_tokens(&out.join("train.bin"), 2), want);
    assert_eq!(read_tokens(&out.join("val.bin"), 2), encode(&text_b[at..]));
}

#[test]
fn a_character_dataset_decodes_back_to_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chars");
    let meta = prepared(&spec(&[&fixture("sample.txt")], &out, TokenizerKind::Char));
    let vocab = std::fs::read_to_string(out.join("vocab.json")).unwrap();
    let tokenizer = Tokenizer::from_file(TokenizerKind::Char, Some(&vocab), "vocab.json").unwrap();
    assert_eq!(tokenizer.vocab_size(), meta.vocab_size);
    let mut tokens = read_tokens(&out.join("train.bin"), 2);
    tokens.extend(read_tokens(&out.join("val.bin"), 2));
    assert_eq!(tokenizer.decode(&tokens), sample());
}

#[test]
fn prepare_refuses_bad_inputs_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |inputs: &[&Path], out: &Path| {
        prepare(
            &spec(inputs, out, TokenizerKind::Gpt2),
            &|_, _| {},
            &AtomicBool::new(false),
        )
        .unwrap_err()
        .to_string()
    };
    // Into an existing folder.
    std::fs::create_dir(d.join("taken")).unwrap();
    std::fs::write(d.join("taken/keep"), "x").unwrap();
    let err = run(&[&fixture("sample.txt")], &d.join("taken"));
    assert!(
        err.ends_with("taken: already exists; choose another --out (nothing was overwritten)"),
        "{err}"
    );
    assert!(d.join("taken/keep").is_file());
    // Empty, binary, missing.
    std::fs::write(d.join("empty.txt"), "").unwrap();
    let err = run(&[&d.join("empty.txt")], &d.join("o1"));
    assert_eq!(err, "the inputs hold no text; nothing to prepare");
    std::fs::write(d.join("model.bin"), b"\x7fELF\x02\x01\x01\x00\xff\xfe").unwrap();
    let err = run(&[&d.join("model.bin")], &d.join("o2"));
    assert!(
        err.contains("model.bin: not UTF-8 text (invalid byte at offset 8)"),
        "{err}"
    );
    let err = run(&[&d.join("missing.txt")], &d.join("o3"));
    assert!(err.contains("missing.txt: cannot read"), "{err}");
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('o'))
        .collect();
    assert!(names.is_empty(), "nothing is left behind: {names:?}");
}

#[test]
fn a_disk_that_fills_during_prepare_leaves_no_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.txt");
    std::fs::write(&input, sample().repeat(60)).unwrap();
    let out = dir.path().join("data");
    let mut cmd = ember_bin(&["prepare", "--tokenizer", "gpt2", "--out"]);
    cmd.arg(&out).arg(&input);
    // No file may grow past 20 KB.
    common::limit_file_size(&mut cmd, 20_000);
    let o = cmd.output().unwrap();
    failed_with(
        &o,
        &[
            "train.bin: cannot write",
            "File too large",
            "nothing was kept",
        ],
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the input is left: {left:?}");
    // What a `kill -9` leaves (a PID above Linux's largest is no process) goes with the next
    // prepare of the same folder.
    let stale = dir.path().join("data.partial-4194305");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("train.bin"), [0u8; 64]).unwrap();
    prepared(&spec(&[&fixture("sample.txt")], &out, TokenizerKind::Gpt2));
    assert!(!stale.exists() && out.join("meta.json").is_file());
}

/// A tiny-preset `train` of `steps` steps on `data` under `out` (run `r`), with `extra` args.
fn train_on(data: &Path, out: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    train_bin(&TINY)
        .args(["--steps", steps, "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--set", "run.name=\"r\""])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn training_from_a_prepared_folder_resumes_and_refuses_another_tokenizers_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (gpt2, chars) = (dir.path().join("gpt2"), dir.path().join("chars"));
    prepared(&spec(&[&fixture("sample.txt")], &gpt2, TokenizerKind::Gpt2));
    prepared(&spec(
        &[&fixture("sample.txt")],
        &chars,
        TokenizerKind::Char,
    ));
    let runs = dir.path().join("runs");
    let sets = [
        "--set",
        "data.pad_vocab_to=50304",
        "--set",
        "train.sample_every=5",
        "--set",
        "train.sample_tokens=8",
    ];
    let o = train_on(&gpt2, &runs, "10", &sets);
    assert!(o.status.success(), "{}", out_err(&o));
    let log = out_err(&o);
    assert!(log.contains("tokenizer gpt2 (50257 tokens)"), "{log}");
    // GPT-2's tables, built on first use, are built before the first step, not in a sampling one.
    assert!(!log.contains("outlives it"), "{log}");
    let metrics = std::fs::read_to_string(runs.join("r/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"step\":10"), "{metrics}");

    // The folder prepared again with another tokenizer, and the run resumed: refused, the run
    // untouched.
    let run = runs.join("r");
    let kept = dir.path().join("gpt2-kept");
    std::fs::rename(&gpt2, &kept).unwrap();
    std::fs::rename(&chars, &gpt2).unwrap();
    let o = train_bin(&["--resume", run.to_str().unwrap(), "--steps", "12"])
        .output()
        .unwrap();
    failed_with(
        &o,
        &["gpt2: these tokens were made with a char tokenizer, not the checkpoint's (gpt2)"],
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        metrics
    );
    std::fs::rename(&gpt2, &chars).unwrap();
    std::fs::rename(&kept, &gpt2).unwrap();
    // On its own tokens it continues.
    common::resumes(run.to_str().unwrap(), "12", 10);
}

#[test]
fn bad_token_folders_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runs = d.join("runs");
    let folder = |name: &str, train: &[u16], val: &[u16]| -> PathBuf {
        let f = d.join(name);
        std::fs::create_dir(&f).unwrap();
        write_u16(&f.join("train.bin"), train.iter().copied());
        write_u16(&f.join("val.bin"), val.iter().copied());
        f
    };
    let many = |n: usize| (0..n).map(|i| (i * 37 % 50_000) as u16).collect::<Vec<_>>();
    // nanoGPT's files, one cut short by a byte.
    let odd = folder("odd", &many(4000), &many(1000));
    std::fs::OpenOptions::new()
        .append(true)
        .open(odd.join("val.bin"))
        .unwrap()
        .set_len(2001)
        .unwrap();
    let o = train_on(&odd, &runs, "2", &[]);
    failed_with(
        &o,
        &["val.bin: 2001 bytes is not a whole number of 2-byte tokens"],
    );
    // A token beyond GPT-2's vocabulary.
    // (Checked as windows are read: every window holds some.)
    let train: Vec<u16> = many(4000)
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % 25 == 0 { 60_000 } else { t })
        .collect();
    let beyond = folder("beyond", &train, &train);
    let o = train_on(&beyond, &d.join("runs-beyond"), "2", &[]);
    failed_with(
        &o,
        &[
            "not below the vocabulary size (50257)",
            "another tokenizer?",
        ],
    );
    // Fewer tokens than one window.
    let short = folder("short", &many(4000), &many(20));
    let o = train_on(&short, &runs, "2", &[]);
    failed_with(
        &o,
        &["the validation split has 20 tokens but needs more than the context (64)"],
    );
    // An llm.c shard whose header is not llm.c's, and one that disagrees with its size.
    let shards = d.join("shards");
    std::fs::create_dir(&shards).unwrap();
    let mut header = vec![0i32; 256];
    header[..3].copy_from_slice(&[LLMC_MAGIC, 1, 4000]);
    let shard = |name: &str, header: &[i32], tokens: &[u16]| {
        let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
        std::fs::write(shards.join(name), bytes).unwrap();
    };
    shard("x_val_000000.bin", &header, &many(4000));
    shard("x_train_000001.bin", &header, &many(3999));
    let o = train_on(&shards, &runs, "2", &[]);
    failed_with(
        &o,
        &[
            "x_train_000001.bin: the header says 4000 tokens",
            "but the file has",
        ],
    );
    header[0] = 1;
    shard("x_train_000001.bin", &header, &many(4000));
    let o = train_on(&shards, &runs, "2", &[]);
    failed_with(
        &o,
        &["x_train_000001.bin: not an llm.c token shard (magic 1"],
    );
    // A tokenizer.json that does not parse.
    let bpe = d.join("bpe");
    prepared(&spec(&[&fixture("sample.txt")], &bpe, TokenizerKind::Bpe));
    std::fs::write(bpe.join("tokenizer.json"), "{\"model\": [1, 2").unwrap();
    let o = train_on(&bpe, &runs, "2", &[]);
    failed_with(&o, &["tokenizer.json"]);
    assert!(
        !runs.exists(),
        "no run folder for the runs that never started"
    );
}

/// A folder of nanoGPT's files whose `train.bin` is a sparse file of `train_bytes` (no disk is
/// used; the kernel reads zeros, token 0, from the holes).
fn sparse_folder(dir: &Path, train_bytes: u64) -> PathBuf {
    let f = dir.join(format!("d{train_bytes}"));
    std::fs::create_dir(&f).unwrap();
    let train = std::fs::File::create(f.join("train.bin")).unwrap();
    train.set_len(train_bytes).unwrap();
    write_u16(&f.join("val.bin"), (0..5000).map(|i| (i % 50_000) as u16));
    f
}

#[test]
fn windows_drawn_all_over_a_4_gib_file_leave_no_pages_behind() {
    use ember_train::data::{Data, Split};
    use ember_train::rng::SplitMix64;
    use ember_train::sys::rss_bytes;
    let dir = tempfile::tempdir().unwrap();
    let folder = sparse_folder(dir.path(), 4 << 30);
    let config = common::tiny_config(
        dir.path(),
        &[&format!("data.path={:?}", folder.display().to_string())],
    );
    let data = Data::load(&config.data, 64, None).unwrap();
    let device = common::cpu();
    let mut rng = SplitMix64::new(7);
    let mut draw = |batches: usize| {
        for _ in 0..batches {
            (data.dataset.batch(Split::Train, 64, 64, &mut rng, &device)).unwrap();
        }
    };
    draw(50);
    let before = rss_bytes();
    // 128,000 windows, each on pages of its own: 500 MiB to 8 GiB if their pages (and those the
    // kernel maps around them) stayed resident; 258 MiB stayed before the fault-around blocks
    // were handed back too.
    draw(2000);
    let grown = rss_bytes().saturating_sub(before) as f64 / (1 << 20) as f64;
    eprintln!(
        "{}",
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("Rss"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        grown < 16.0,
        "RSS grew by {grown:.1} MiB over 128,000 windows"
    );
}

#[test]
fn a_4_gib_token_file_trains_in_the_memory_of_a_4_mib_one() {
    let dir = tempfile::tempdir().unwrap();
    let peak = |train_bytes: u64| -> f64 {
        let f = sparse_folder(dir.path(), train_bytes);
        let o = train_on(&f, &dir.path().join(format!("r{train_bytes}")), "60", &[]);
        assert!(o.status.success(), "{}", out_err(&o));
        let log = out_err(&o);
        log.split("peak RSS ")
            .nth(1)
            .and_then(|r| r.split(" MiB").next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no peak RSS in: {log}"))
    };
    let (small, large) = (peak(4 << 20), peak(4 << 30));
    // The allocator's arenas vary by a few MiB from run to run (12 MiB seen at most).
    assert!(
        large <= small * 1.05,
        "peak RSS {large} MiB with 4 GiB of tokens against {small} MiB with 4 MiB"
    );
}
