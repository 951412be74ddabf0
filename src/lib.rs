//! Ember: train small GPT language models with Burn. This crate picks the backend (a cargo
//! feature and `--device`), sets the CPU thread policy, and holds the binaries' shared parts.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod console;
pub mod error;
pub mod eval;
pub mod import;
pub mod memory;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod saved;

pub use error::{Error, Result};
