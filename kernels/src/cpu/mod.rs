//! The Burn-free half of the fused ops: the vector toolkit the kernels are written with
//! ([`Float`], the vector loops, `exp`/`erfc`, the instruction-set dispatch [`Isa`], the
//! [`gemm`] call, [`with_workers_polling`] for the runs of kernels a step is), and an index of
//! the kernels themselves, which live beside their ops in `ops/<op>/kernel.rs`. Everything here
//! works on plain slices, `f32` in training and `f64` in the gradient checks, parallel on
//! rayon's pool and vectorized for the processor at hand.

mod disjoint;
mod float;
pub mod gemm;
pub(crate) mod math;
mod polling;
pub(crate) mod simd;
mod subnormals;
pub(crate) mod vector;

pub(crate) use disjoint::DisjointOutput;
pub use float::Float;
pub use polling::with_workers_polling;
pub use simd::Isa;
pub use subnormals::flush_subnormals_on_this_thread;

pub use crate::ops::adamw::kernel::{AdamWStep, adamw};
pub use crate::ops::attention::kernel::{
    AttentionShape, Qkv, causal_attention, causal_attention_backward,
};
pub use crate::ops::cross_entropy::kernel::{cross_entropy, cross_entropy_backward};
pub use crate::ops::embedding::kernel::{embedding, embedding_backward};
pub use crate::ops::gelu::kernel::{gelu, gelu_backward};
pub use crate::ops::layer_norm::kernel::{layer_norm, layer_norm_backward};
pub use crate::ops::linear::kernel::{linear, linear_backward};
pub use crate::ops::sum_of_squares::kernel::sum_of_squares;

/// Elements a parallel task should have at least: below that, handing work to another thread
/// costs more than it saves.
pub(crate) const TASK_ELEMENTS: usize = 1 << 14;

/// Rows of `row_len` elements per parallel task.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMENTS / row_len.max(1)).max(1)
}
