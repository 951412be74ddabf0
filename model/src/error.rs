//! The one error type of ember-model: what is wrong with a safetensors file being read or
//! written.

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not a safetensors file, or tensors that safetensors cannot lay out.
    #[error("{0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Header metadata that cannot be read (`ember_config`, `n_head`), or that is missing.
    #[error("{0}")]
    Metadata(String),
    /// A shape Ember cannot build (`field`: why).
    #[error("model shape: {field}: {why}")]
    Shape { field: String, why: String },
    /// A Hugging Face `config.json` that is not GPT-2's, or a GPT-2 Ember cannot hold or write.
    #[error("config.json: {0}")]
    HfConfig(String),
    /// A tensor the model needs that is missing, or of the wrong type or shape.
    #[error("{0}")]
    Tensor(String),
}
