//! Everything that turns text and a config into a trained Ember model: tokenizer, data, the
//! AdamW set-up and LR schedule, the step loop with evaluation and sampling, and its metrics.

pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod corpus;
pub mod data;
pub mod error;
pub mod footprint;
mod guard;
pub mod hooks;
pub mod lock;
pub mod metrics;
pub mod optim;
pub mod prepare;
pub mod rng;
pub mod run_dir;
pub mod sample;
pub mod schedule;
pub mod sys;
pub mod timing;
pub mod tokenizer;
pub mod trainer;

pub use config::{ConfigBuilder, RunConfig};
pub use error::TrainError;
pub use hooks::{NoHooks, StepHooks};
pub use timing::PhaseTimes;
pub use trainer::{Start, Summary, Trainer, Update};
