//! The CPU kernels, written once over slices of [`Float`] (`f32` in training, `f64` in the
//! gradient checks), parallel on rayon's pool and vectorized for the processor at hand. They
//! know nothing of Burn: `host` feeds them the backends' tensors.

mod adamw;
mod attention;
mod cross_entropy;
mod float;
mod gelu;
mod layer_norm;
mod linear;
mod math;
mod simd;
mod vector;

pub use adamw::{AdamWStep, adamw, sum_of_squares};
pub use attention::{AttentionShape, attention, attention_backward};
pub use cross_entropy::{cross_entropy, cross_entropy_backward};
pub use float::Float;
pub use gelu::{gelu, gelu_backward};
pub use layer_norm::{layer_norm, layer_norm_backward};
pub use linear::{linear, linear_backward, linear_engine};

/// Elements a parallel task should have at least: below that, handing work to another thread
/// costs more than it saves.
const TASK_ELEMENTS: usize = 1 << 14;

/// Rows of `row_len` elements per parallel task.
fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMENTS / row_len.max(1)).max(1)
}
