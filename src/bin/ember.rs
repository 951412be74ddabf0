//! `ember`: tools around training runs. `ember export` writes a run's weights as safetensors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use ember::saved::SavedModel;
use ember_model::to_safetensors;
use ember_train::run_dir::atomic_write;

#[derive(Debug, Parser)]
#[command(name = "ember", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a checkpoint's weights as safetensors with nanoGPT's tensor names (see the README).
    Export {
        /// A run folder (its latest checkpoint) or a checkpoint folder.
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Export { run, out } => {
            let device = ember::backend::select("auto", 0)
                .map_err(|e| anyhow!(e))?
                .device;
            let saved = SavedModel::load(&run, &device)?;
            let metadata = HashMap::from([
                ("vocab".to_string(), saved.tokenizer.to_json()),
                ("step".to_string(), saved.state.step.to_string()),
            ]);
            let bytes =
                to_safetensors(&saved.model, &saved.gpt, metadata).map_err(|e| anyhow!(e))?;
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
    }
}
