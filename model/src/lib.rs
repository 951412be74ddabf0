//! The Ember GPT: a decoder-only transformer as nanoGPT defines it, written once against Burn's
//! backend-agnostic modules. The backend is whatever the `Device` passed to
//! [`GptConfig::init`] runs on.

mod attention;
mod block;
mod config;
mod error;
mod export;
mod gpt;
mod hf;
mod layers;
mod parameters;

pub use attention::{CausalSelfAttention, LayerCache};
pub use block::{Block, Mlp};
pub use config::{Activation, GptConfig};
pub use error::ModelError;
pub use export::{from_safetensors, to_safetensors};
pub use gpt::{Gpt, Head, KvCache};
pub use hf::{from_hf, to_hf};
pub use layers::LAYER_NORM_EPS;
pub use parameters::{Parameter, ValuesReader, parameters, with_readers, with_values};
