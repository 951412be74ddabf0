//! `generate --run runs/<name> --prompt "ROMEO:"`: streams text from a trained model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::Parser;
use ember::backend;
use ember::saved::SavedModel;
use ember_train::rng::{SplitMix64, Stream};
use ember_train::sample::{SamplingConfig, generate};
use ember_train::tokenizer::Utf8Stream;

/// Generate text with a trained Ember model. Output is streamed as it is produced; the same
/// seed gives the same text.
#[derive(Debug, Parser)]
#[command(name = "generate", version, args_override_self = true)]
struct Args {
    /// The run folder (its latest checkpoint is used).
    #[arg(long, value_name = "DIR", required_unless_present = "checkpoint")]
    run: Option<PathBuf>,
    /// A specific checkpoint folder (runs/<name>/checkpoints/step-N) instead of the latest.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Text to continue (with a character-level model, every character must be in its
    /// vocabulary).
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 500)]
    max_tokens: usize,
    /// Sampling temperature (> 0); lower is more conservative.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens covering this probability mass (1 = all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    #[arg(long, default_value = "auto", help = ember::backend::DEVICE_HELP)]
    device: String,
    #[arg(long, default_value_t = 0, help = ember::backend::THREADS_HELP)]
    threads: usize,
}

fn main() -> ExitCode {
    ember::cli::main_with(|| run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature {}: expected a positive number",
            args.temperature
        );
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p {}: expected a number in (0, 1]", args.top_p);
    }
    let selected = backend::select(&args.device, args.threads)?;
    let path = args
        .checkpoint
        .as_ref()
        .or(args.run.as_ref())
        .expect("clap requires one");
    let saved = SavedModel::load(path, &selected.device)?;
    let prompt = saved
        .tokenizer
        .encode(&args.prompt)
        .map_err(|e| anyhow!("--prompt: {e} of {}", saved.checkpoint.display()))?;
    if prompt.is_empty() {
        bail!("--prompt is empty: give at least one character");
    }
    eprintln!(
        "ember {} | {selected} | {} at step {} ({} parameters)",
        env!("CARGO_PKG_VERSION"),
        saved.checkpoint.display(),
        saved.state.step,
        saved.gpt.num_params()
    );
    let config = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    let mut rng = SplitMix64::keyed(args.seed, Stream::Sampling, 0);
    let mut out = std::io::stdout().lock();
    write!(out, "{}", args.prompt)?;
    let start = Instant::now();
    let mut failed = None;
    // A byte-level token may end inside a character: print characters once whole.
    let mut text = Utf8Stream::default();
    generate(
        &saved.model,
        &prompt,
        args.max_tokens,
        config,
        saved.tokenizer.vocab_size(),
        &mut rng,
        &selected.device,
        |t| {
            if failed.is_none() {
                let piece = text.push(&saved.tokenizer.decode_bytes(&[t]));
                failed = write!(out, "{piece}").and_then(|()| out.flush()).err();
            }
        },
    );
    writeln!(out, "{}", text.finish())?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{} tokens in {secs:.2}s ({:.0} tokens/s)",
        args.max_tokens,
        args.max_tokens as f64 / secs
    );
    Ok(())
}
