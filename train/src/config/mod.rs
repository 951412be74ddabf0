//! A run's configuration: what it holds and its defaults ([`schema`]), how it is built from a
//! preset, a file and the command line ([`layering`]), and the rules it must follow
//! ([`checks`]).

pub mod checks;
pub mod layering;
pub mod schema;

pub use checks::{OPTIMIZER_KEYS, RESUMABLE_KEYS};
pub use layering::{ConfigBuilder, DEFAULT_PRESET, PRESETS};
pub use schema::{
    DataSection, LeakPolicy, MemorySection, ModelSection, RunConfig, RunSection, TrainSection,
};
