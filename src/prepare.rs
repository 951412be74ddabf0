//! `ember prepare`: the command around `ember_train::prepare`, with a progress bar (bytes/s,
//! tokens/s) on a terminal, Ctrl-C to abandon (nothing is kept), and a summary.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ember_train::prepare::{PrepareSpec, input_files, prepare};
use ember_train::sys::mib;
use indicatif::{ProgressBar, ProgressStyle};

use crate::Result;

pub fn run(spec: &PrepareSpec) -> Result<()> {
    let total: u64 = input_files(&spec.inputs)?
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} | {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("the template is valid"),
        );
        bar
    });
    let started = Instant::now();
    let progress = |bytes: u64, tokens: u64| {
        if let Some(bar) = &bar {
            bar.set_position(bytes);
            let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{tokens} tokens, {rate:.0} tokens/s"));
        }
    };
    // Ctrl-C or SIGTERM abandons the work at the next batch and removes what was written.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let meta = prepare(spec, &progress, &stop);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let meta = meta?;
    let secs = started.elapsed().as_secs_f64();
    let tokens = meta.train_tokens + meta.val_tokens;
    let bytes = meta.train_bytes + meta.val_bytes;
    println!(
        "prepared {}: {} train + {} val tokens ({}, {} tokenizer, {} tokens) from {} file{}, {} of text, in {secs:.1}s ({:.1} MiB/s, {:.0} tokens/s)",
        spec.out.display(),
        meta.train_tokens,
        meta.val_tokens,
        match meta.dtype {
            ember_train::data::TokenWidth::Uint16 => "uint16",
            ember_train::data::TokenWidth::Uint32 => "uint32",
        },
        meta.tokenizer,
        meta.vocab_size,
        meta.sources.len(),
        if meta.sources.len() == 1 { "" } else { "s" },
        mib(bytes),
        bytes as f64 / secs / (1024.0 * 1024.0),
        tokens as f64 / secs
    );
    println!("next: train --data {}", spec.out.display());
    Ok(())
}
