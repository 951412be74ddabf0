//! Fused CPU operations for Ember's GPT, with hand-written backward passes: GELU, LayerNorm,
//! Linear, causal self-attention, softmax cross-entropy, and the optimizer's AdamW step and sum
//! of squares.
//!
//! Burn's CPU backends run a model as one pass over memory per primitive op, single-threaded
//! outside matmul, and its autodiff decomposes attention and LayerNorm into those primitives.
//! Here each operation is one kernel forward and one backward, parallel on rayon's pool and
//! vectorized for the processor at hand.
//!
//! - [`ops`]: what the model calls, one folder per op (`ops/gelu/`: `mod.rs` is everything Burn
//!   sees of the op, `kernel.rs` its kernels over slices); fused on NdArray and Flex, composed
//!   from Burn ops elsewhere.
//! - [`fused`]: the machinery the ops share: which tensors take the fused path, tensors as
//!   slices, the autodiff plumbing, and the check that kernels write every output element.
//! - [`cpu`]: the vector toolkit, the instruction-set dispatch (`EMBER_SIMD`), the gemm call, and
//!   an index of the kernels for benchmarks.

// Built without a CPU backend (a GPU-only build), the extension traits route to nothing: their
// arguments go unused and the host adapters are never reached.
#![cfg_attr(
    not(any(feature = "ndarray", feature = "flex")),
    allow(unused_variables, unused_imports, dead_code)
)]

pub mod cpu;
pub mod fused;
pub mod ops;
