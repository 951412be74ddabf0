//! `cargo run --release --bin train`: trains the small preset on the built-in corpus, or
//! whatever the config and flags say. See `train --help`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ember::backend;
use ember::cli::TrainArgs;
use ember::cluster::{self, Joined};
use ember::memory::{GLOBAL_COUNTERS, MemoryScope, ReusingAllocator, TrackingAllocator};
use ember::progress::Progress;
use ember::{report, say};
use ember_train::checkpoint;
use ember_train::data::Data;
use ember_train::footprint::Footprint;
use ember_train::sys::{available_memory_bytes, mib};
use ember_train::{RunConfig, Start, Trainer};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator::system();

fn main() -> ExitCode {
    let args = TrainArgs::parse();
    init_logging(args.debug);
    ember::cli::main_with(|| {
        let joined = cluster::join()?;
        joined.quiet_unless_root();
        joined.run(|| run(&args, &joined))
    })
}

/// One rank's run (the only one without a launcher). Every rank does all of it, printing to an
/// output only rank 0's is left to ([`Joined::quiet_unless_root`]).
fn run(args: &TrainArgs, joined: &Joined) -> Result<()> {
    let resume = match &args.resume {
        Some(path) => {
            let opened = checkpoint::open(path).context("--resume")?;
            if let Some(note) = opened.fallback_note() {
                eprintln!("warning: {note}");
            }
            Some((opened.dir, opened.files))
        }
        None => None,
    };
    let (config, stem) = match &resume {
        Some((dir, files)) => (args.resolve_resume(dir, &files.config_toml)?, String::new()),
        None => args.resolve()?,
    };
    if args.print_config {
        say!("{}", config.to_toml().trim_end());
        return Ok(());
    }
    let saved_tokenizer = match &resume {
        Some((dir, files)) => Some(files.config_and_tokenizer(dir)?.1),
        None => None,
    };
    let data = Data::load(&config.data, config.model.context, saved_tokenizer)?;
    let selected = backend::select(&config.run.device, joined.threads(config.run.threads))?;
    say!("ember {} | {selected}", env!("CARGO_PKG_VERSION"));
    if let Some(advice) = backend::matmul_advice() {
        say!("note: {advice}");
    }
    check_memory(
        &config,
        &data,
        selected.is_cpu(),
        args.skip_memory_check,
        (joined.collective.size(), joined.ranks_here),
    )?;
    let m = &config.model;
    let resumed_from = resume.as_ref().map(|(dir, _)| dir.clone());
    let start = match resume {
        Some((checkpoint, files)) => Start::Resume {
            checkpoint,
            files: Box::new(files),
        },
        None => Start::New { stem: &stem },
    };
    let banner = format!(
        "data {} | tokenizer {} ({} tokens)",
        data.name,
        data.tokenizer.kind(),
        data.tokenizer.vocab_size()
    );
    let vocab = config.model_vocab(&data.tokenizer)?;
    let char_level = data.tokenizer.kind() == ember_train::tokenizer::TokenizerKind::Char;
    let ranks = joined.collective.size();
    let mut trainer = ReusingAllocator::system().while_paused(|| {
        Trainer::start(
            config.clone(),
            data,
            selected.device.clone(),
            start,
            joined.collective.clone(),
        )
    })?;
    let gpt = m.gpt(vocab);
    say!(
        "model d={} layers={} heads={} context={} vocab={} params={} | {banner} | {} steps x {} seqs{}{}",
        m.d_model,
        m.n_layer,
        m.n_head,
        m.context,
        gpt.vocab_size,
        gpt.num_params(),
        config.train.steps,
        config.train.sequences_per_step(),
        match config.train.grad_accum {
            1 => String::new(),
            n => format!(" ({n} micro-batches of {})", config.train.batch_size),
        },
        match ranks {
            1 => String::new(),
            n => format!(
                " | {n} ranks ({} here), {} rows each per micro-batch",
                joined.ranks_here,
                config.train.batch_size / n
            ),
        },
    );
    if trainer.start_step() > 0 {
        say!("resuming after step {}", trainer.start_step());
    }
    let now_changed: Vec<_> = trainer
        .changes()
        .iter()
        .filter(|c| c.step == trainer.start_step())
        .map(|c| format!("{} {} -> {}", c.key, c.from, c.to))
        .collect();
    if !now_changed.is_empty() {
        say!(
            "note: changed on resume: {}; from here on this run is no longer identical to an uninterrupted one (recorded in metrics.jsonl and the checkpoints)",
            now_changed.join(", ")
        );
    }
    say!("run folder {}", trainer.run_dir().display());
    // Standard output closed (`train | head`): stop as on Ctrl-C, below.
    ember::console::stop_when_closed(trainer.stop_flag(), trainer.run_dir().to_path_buf());
    // Ctrl-C or SIGTERM: finish the step, save a checkpoint, exit 0. A second one exits at once.
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, trainer.stop_flag())?;
        signal_hook::flag::register(signal, trainer.stop_flag())?;
    }

    let notice = joined.stop_notice(trainer.run_dir(), resumed_from)?;

    let started = std::time::Instant::now();
    // The memory scope first: it opens each step before, and accounts before, the display.
    let mut hooks = (
        MemoryScope::new(
            config.memory.clone(),
            &GLOBAL_COUNTERS,
            selected.device.clone(),
        ),
        (Progress::new(config.train.steps), notice),
    );
    let summary = selected.run(|| trainer.train(&mut hooks));
    hooks.1.0.finish();
    let summary = summary?;
    if !joined.collective.is_root() {
        // The run folder and its report are rank 0's.
        return Ok(());
    }
    let wall_s = started.elapsed().as_secs_f64();
    let eval = summary
        .last_eval
        .map(|e| format!(" | val loss {:.4} (train {:.4})", e.val_loss, e.train_loss))
        .unwrap_or_default();
    say!(
        "{}: {} steps in {:.1}s | {:.0} tok/s | last loss {:.4}{eval} | peak RSS {}",
        if summary.stopped { "stopped" } else { "done" },
        summary.steps,
        summary.train_time_s,
        summary.tokens_per_sec,
        summary.last_loss,
        mib(summary.peak_rss_bytes),
    );
    say!("{}", hooks.0.summary());
    print_run_table(trainer.run_dir(), &summary, wall_s, char_level);
    if let Some(path) = &summary.last_checkpoint {
        say!("checkpoint {}", path.display());
    }
    if summary.stopped {
        say!(
            "continue with: train --resume {}",
            trainer.run_dir().display()
        );
    }
    say!("run folder {}", trainer.run_dir().display());
    Ok(())
}

/// The end-of-run table, and the run's report picture (a picture that cannot be drawn is a
/// warning: the run itself succeeded).
fn print_run_table(
    run_dir: &std::path::Path,
    summary: &ember_train::Summary,
    wall_s: f64,
    char_level: bool,
) {
    let series = report::load_run(run_dir);
    let picture = series.as_ref().map_err(|e| e.to_string()).and_then(|s| {
        let out = run_dir.join("report.svg");
        report::write_svg(
            std::slice::from_ref(s),
            &out,
            report::ReportOptions::default(),
        )
        .map(|()| out)
        .map_err(|e| e.to_string())
    });
    let best = series.ok().and_then(|s| {
        s.get("val_loss")
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
    });
    say!("---- run summary ----");
    if let Some(e) = summary.last_eval {
        // Bits per byte compare runs of any tokenizers; a character-level run also has them per
        // character (its tokens).
        let per_char = match char_level {
            true => format!(", {:.3} bits/char", e.val_loss / std::f64::consts::LN_2),
            false => String::new(),
        };
        say!(
            "final loss       train {:.4} | val {:.4} ({:.3} bits/byte{per_char})",
            e.train_loss,
            e.val_loss,
            e.val_bpb
        );
    }
    if let Some((step, loss)) = best {
        say!("best val loss    {loss:.4} at step {step}");
    }
    say!(
        "time             {wall_s:.1}s wall, {:.1}s training | {:.0} tokens/s | peak RSS {}",
        summary.train_time_s,
        summary.tokens_per_sec,
        mib(summary.peak_rss_bytes)
    );
    match picture {
        Ok(path) => say!("report           {}", path.display()),
        Err(e) => eprintln!("warning: no report picture: {e}"),
    }
}

/// Prints the memory estimate and refuses a run that cannot fit in the memory available (on the
/// CPU backends; a GPU's memory is not known before its runtime starts), before anything big is
/// allocated. Ranks on one machine share its memory: each may have its share.
fn check_memory(
    config: &RunConfig,
    data: &Data,
    cpu: bool,
    skip: bool,
    (ranks, ranks_here): (usize, usize),
) -> Result<()> {
    let vocab_size = config.model_vocab(&data.tokenizer)?;
    let footprint = Footprint::estimate(config, vocab_size, data.dataset.tokens_in_memory(), ranks);
    let available = available_memory_bytes().map(|a| a / ranks_here as u64);
    let free = available.map_or_else(|| "unknown".to_string(), mib);
    let share = match ranks_here {
        1 => String::new(),
        n => format!(" to each of {n} ranks"),
    };
    say!(
        "memory estimate {} | available {free}{share}",
        footprint.describe()
    );
    match available.and_then(|a| footprint.refusal(a)) {
        Some(why) if cpu && !skip => bail!("{why}"),
        Some(why) if cpu => say!("warning: {why} (--skip-memory-check given)"),
        _ => {}
    }
    Ok(())
}

/// Warnings by default; `--debug` or `RUST_LOG` for more (`RUST_LOG=ember_train=trace` logs
/// the phases of every step, to find where a run hangs).
fn init_logging(debug: bool) {
    let filter = if debug {
        EnvFilter::new("ember=debug,ember_train=debug")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
