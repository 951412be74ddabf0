//! Fused CPU operations for Ember's GPT, with hand-written backward passes: GELU, LayerNorm,
//! Linear, causal self-attention and softmax cross-entropy.
//!
//! Burn's CPU backends run a model as one pass over memory per primitive op, single-threaded
//! outside matmul, and its autodiff decomposes attention and LayerNorm into those primitives.
//! Here each operation is one kernel forward and one backward, parallel on rayon's pool and
//! vectorized for the processor at hand.
//!
//! - [`ops`]: what the model calls; fused on NdArray and Flex, composed ([`composed`]) elsewhere.
//! - `extension`: the Burn backend extension ([`FusedOps`], [`FusedBackward`]).
//! - `autodiff`: the backward passes registered under `Autodiff<B>`.
//! - `backends`, `host`: NdArray's and Flex's tensors in and out of the kernels.
//! - [`cpu`]: the kernels over plain slices.

mod autodiff;
// burn-ndarray is deprecated upstream in favour of Flex; Ember supports both.
#[cfg(any(feature = "ndarray", feature = "flex"))]
#[allow(deprecated)]
mod backends;
pub mod composed;
pub mod cpu;
// The NdArray selector is deprecated upstream; without a CPU backend feature the macro leaves
// the declarations' arguments unused.
#[allow(deprecated, unused_variables)]
mod extension;
#[cfg(any(feature = "ndarray", feature = "flex"))]
mod host;
pub mod ops;

pub use extension::{FusedBackward, FusedOps, Optional};
