//! The operations the model and the optimizer call. Each takes its fused kernel on a CPU
//! backend that has it (NdArray, Flex; `f32` or `f64`) and its composed Burn form anywhere else
//! (wgpu, cuda), with the same results within float tolerance. The choice is made per call from
//! the tensor's device, so the model is written once for every backend.
//!
//! One folder per op, everything about it in its `mod.rs` beside its Burn-free `kernel.rs`; see
//! [`crate::fused`] for how each is put together.

// The NdArray selector of every op's extension trait names burn-ndarray, deprecated upstream in
// favour of Flex; Ember supports both.
#[allow(deprecated)]
pub mod adamw;
#[allow(deprecated)]
pub mod attention;
#[allow(deprecated)]
pub mod cross_entropy;
pub mod dropout;
#[allow(deprecated)]
pub mod embedding;
#[allow(deprecated)]
pub mod gelu;
#[allow(deprecated)]
pub mod head_loss;
#[allow(deprecated)]
pub mod layer_norm;
#[allow(deprecated)]
pub mod linear;
#[allow(deprecated)]
pub mod snapshot;
#[allow(deprecated)]
pub mod sum_of_squares;

pub use adamw::adamw;
pub use attention::causal_attention;
pub use cross_entropy::cross_entropy;
pub use dropout::{dropout, drops};
pub use embedding::embedding;
pub use gelu::gelu;
pub use head_loss::{HeadWeight, head_loss};
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_onto, linear_transposed};
pub use snapshot::snapshot;
pub use sum_of_squares::sum_of_squares;
