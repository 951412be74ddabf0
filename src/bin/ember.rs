//! `ember`: tools around training runs. `ember export` writes a run's weights as safetensors,
//! `ember import` reads them (or a nanoGPT state dict) back into a run folder, `ember report`
//! draws runs' metrics, `ember eval` scores a checkpoint on a text file, `ember bench` measures
//! training throughput.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ember::bench::BenchSpec;
use ember::eval::EvalSpec;
use ember::import::ImportSpec;
use ember::report;
use ember::saved::SavedModel;
use ember_model::{to_hf, to_safetensors};
use ember_train::prepare::PrepareSpec;
use ember_train::run_dir::atomic_write;
use ember_train::tokenizer::TokenizerKind;
use ember_train::tokenizer::VOCAB_JSON;
use std::io::Write;

use ember::memory::TrackingAllocator;

/// The allocator `train` registers, so that `ember bench` measures the steps `train` runs.
#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

#[derive(Debug, Parser)]
#[command(name = "ember", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a checkpoint's weights as safetensors with nanoGPT's tensor names, or as a
    /// Hugging Face GPT2LMHeadModel folder (see the README).
    Export {
        /// A run folder (its latest checkpoint) or a checkpoint folder.
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
        /// The file to write (nanogpt), or the folder (hf: config.json, model.safetensors and
        /// a BPE run's tokenizer.json).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// nanogpt (a state dict nanoGPT's GPT loads) or hf (a folder transformers'
        /// GPT2LMHeadModel.from_pretrained loads).
        #[arg(long, default_value = "nanogpt", value_parser = ["nanogpt", "hf"])]
        format: String,
    },
    /// Turn a safetensors file with nanoGPT's names (a nanoGPT state dict or an Ember export),
    /// or a Hugging Face GPT-2 folder, into a run folder that `generate` reads and
    /// `train --resume` fine-tunes.
    Import {
        #[command(flatten)]
        spec: ImportSpec,
    },
    /// Draw runs' metrics (loss, learning rate, tokens/s, memory against step) as an SVG
    /// picture; several runs are overlaid with the config keys they differ in.
    Report {
        /// Run folders.
        #[arg(required = true, value_name = "RUN")]
        runs: Vec<PathBuf>,
        /// The picture to write [default: RUN/report.svg for one run, ember-report.svg for
        /// several].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Loss on a logarithmic axis.
        #[arg(long)]
        log_loss: bool,
    },
    /// Turn text files (or folders of them) into a dataset folder `train --data DIR` reads:
    /// train.bin and val.bin (nanoGPT's format), meta.json and the tokenizer.
    Prepare {
        /// gpt2 (OpenAI's GPT-2 encoding), bpe (a byte-level BPE learnt from the text) or char.
        #[arg(long, value_parser = parse_tokenizer)]
        tokenizer: TokenizerKind,
        /// The BPE vocabulary's size (bpe).
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// The last fraction of the text (by characters) becomes the validation split.
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        /// The dataset folder to create (it must not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Text files, or folders of them (every file under them, in name order).
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<PathBuf>,
    },
    /// A checkpoint's loss on a whole text file, in nats and bits per byte (and per character).
    Eval {
        #[command(flatten)]
        spec: EvalSpec,
    },
    /// Time training steps of a preset after a warm-up: tokens/s, phases, GFLOP/s, share of the
    /// measured matmul ceiling, peak RSS. Run on a quiet machine.
    Bench {
        #[command(flatten)]
        spec: BenchSpec,
        /// Also append the report as one JSON line to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// `ember export --format hf`: `out` becomes a folder `GPT2LMHeadModel.from_pretrained` loads.
fn export_hf(saved: &SavedModel, out: &Path) -> Result<()> {
    let (config, weights) = to_hf(&saved.model, &saved.gpt)
        .with_context(|| format!("{}: cannot export", saved.checkpoint.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut files = vec![
        ("config.json", config.into_bytes()),
        ("model.safetensors", weights),
    ];
    if let Some((name, text)) = saved.tokenizer.file().filter(|(n, _)| *n != VOCAB_JSON) {
        files.push((name, text.into_bytes()));
    }
    for (name, bytes) in &files {
        let path = out.join(name);
        atomic_write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    println!(
        "wrote {} (config.json, model.safetensors) from {}",
        out.display(),
        saved.checkpoint.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    ember::cli::main_with(|| run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Export { run, out, format } => {
            let device = ember::backend::select("auto", 0)?.device;
            let saved = SavedModel::load(&run, &device)?;
            if format == "hf" {
                return export_hf(&saved, &out);
            }
            let mut metadata = HashMap::from([
                ("step".to_string(), saved.state.step.to_string()),
                ("tokenizer".to_string(), saved.tokenizer.kind().to_string()),
            ]);
            // The tokenizer's file: `vocab` (a character vocabulary, as Ember has always written
            // it) or `tokenizer_json` (a BPE's tokenizer.json); GPT-2's is built in.
            if let Some((name, text)) = saved.tokenizer.file() {
                let key = if name == VOCAB_JSON {
                    "vocab"
                } else {
                    "tokenizer_json"
                };
                metadata.insert(key.to_string(), text);
            }
            let bytes = to_safetensors(&saved.model, &saved.gpt, metadata)
                .with_context(|| format!("{}: cannot export", saved.checkpoint.display()))?;
            atomic_write(&out, &bytes)
                .with_context(|| format!("{}: cannot write", out.display()))?;
            println!(
                "wrote {} ({} bytes) from {}",
                out.display(),
                bytes.len(),
                saved.checkpoint.display()
            );
            Ok(())
        }
        Command::Import { spec } => {
            let checkpoint = ember::import::run(&spec)?;
            println!(
                "imported {} into {}\nnext: generate --run {} | train --resume {} --steps N",
                spec.source().display(),
                checkpoint.display(),
                spec.run.display(),
                spec.run.display()
            );
            Ok(())
        }
        Command::Report {
            runs,
            out,
            log_loss,
        } => {
            let series = runs
                .iter()
                .map(|run| report::load_run(run))
                .collect::<ember::Result<Vec<_>>>()?;
            let out = out.unwrap_or_else(|| report::default_out(&runs));
            report::write_svg(&series, &out, report::ReportOptions { log_loss })?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Prepare {
            tokenizer,
            vocab_size,
            val_fraction,
            out,
            inputs,
        } => {
            let spec = PrepareSpec {
                inputs,
                out,
                tokenizer,
                vocab_size,
                val_fraction,
            };
            Ok(ember::prepare::run(&spec)?)
        }
        Command::Eval { spec } => {
            let r = ember::eval::run(&spec)?;
            let per_char = match r.characters {
                true => format!(", {:.4} bits per character", r.bits_per_token()),
                false => String::new(),
            };
            println!(
                "{} on {} (step {}): {} tokens, {} predicted: loss {:.4} per token, {:.4} bits per byte{per_char}, perplexity {:.3}",
                spec.data.display(),
                spec.run.display(),
                r.step,
                r.tokens,
                r.predictions,
                r.loss,
                r.bits_per_byte(),
                r.perplexity()
            );
            Ok(())
        }
        Command::Bench { spec, json } => {
            // Under an MPI launcher, every rank trains its share; rank 0 reports.
            let joined = ember::cluster::join()?;
            joined.quiet_unless_root();
            let report = joined.run(|| ember::bench::run(&spec, &joined))?;
            if !joined.collective.is_root() {
                return Ok(());
            }
            println!("{report}");
            if let Some(path) = json {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("{}: cannot open", path.display()))?;
                writeln!(file, "{}", serde_json::to_string(&report)?)?;
            }
            Ok(())
        }
    }
}

fn parse_tokenizer(name: &str) -> std::result::Result<TokenizerKind, String> {
    [TokenizerKind::Gpt2, TokenizerKind::Bpe, TokenizerKind::Char]
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| format!("`{name}`: expected gpt2, bpe or char"))
}
