//! What every fused op's `Autodiff<B>` implementation shares: splitting tracked tensors into the
//! inner backend's primitives and their graph nodes, handing gradients back to the parents that
//! want them, and results that no gradient flows through.
//!
//! Each op's forward runs its kernel on the inner backend, keeps what its backward pass needs
//! (inputs are reference-counted, so keeping them copies nothing), and registers a [`Backward`]
//! that produces the gradients of all inputs in one call (see `ops/gelu/mod.rs` for the shortest
//! example).
//!
//! [`Backward`]: burn::backend::autodiff::ops::Backward

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::host::CpuBackend;

/// Runs an op's `forward` on the inner backend's primitives of `inputs` and, when any input is
/// tracked, registers `backward` with the state `forward` returned for it: the one way every
/// fused op enters the autodiff graph.
pub fn record<B, C, Op, const N: usize>(
    inputs: [FloatTensor<Autodiff<B>>; N],
    backward: Op,
    forward: impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, Op::State),
) -> FloatTensor<Autodiff<B, C>>
where
    B: CpuBackend,
    C: CheckpointStrategy,
    Op: Backward<B, N>,
{
    record_when::<B, C, Op, N>(inputs, backward, |inputs, _| {
        let (y, state) = forward(inputs);
        (y, Some(state))
    })
}

/// [`record`] for an op whose forward does more when a backward pass will follow: `forward` is
/// told whether any input is tracked, and must return the state when one is.
pub fn record_when<B, C, Op, const N: usize>(
    inputs: [FloatTensor<Autodiff<B>>; N],
    backward: Op,
    forward: impl FnOnce([FloatTensor<B>; N], bool) -> (FloatTensor<B>, Option<Op::State>),
) -> FloatTensor<Autodiff<B, C>>
where
    B: CpuBackend,
    C: CheckpointStrategy,
    Op: Backward<B, N>,
{
    let (primitives, nodes) = into_parts(inputs);
    match backward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, state) = forward(primitives, true);
            prep.finish(state.expect("a tracked forward keeps its state"), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(primitives, false).0),
    }
}

/// Splits autodiff tensors into their inner primitives and the guards that keep their graph
/// nodes alive until the new operation is registered. (The checkpoint strategy does not change
/// the tensor type, so `Autodiff<B>` names it for every strategy.)
fn into_parts<B: CpuBackend, const N: usize>(
    inputs: [FloatTensor<Autodiff<B>>; N],
) -> ([FloatTensor<B>; N], [NodeGuard; N]) {
    let (primitives, nodes): (Vec<_>, Vec<_>) = inputs.into_iter().map(|t| t.into_parts()).unzip();
    (array(primitives), array(nodes))
}

fn array<T, const N: usize>(items: Vec<T>) -> [T; N] {
    items
        .try_into()
        .unwrap_or_else(|_| unreachable!("N items in, N out"))
}

/// Registers each gradient with the parent it belongs to; parents that need none are `None`.
/// (A macro: the parents' node type is not exported by burn-autodiff.)
macro_rules! register {
    ($b:ty, $grads:expr, $parents:expr, $gradients:expr) => {
        for (parent, grad) in $parents.iter().zip($gradients) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                $grads.register::<$b>(parent.id, grad);
            }
        }
    };
}
pub(crate) use register;

/// The gradient an op's input already has, taken out of `grads` so that the op can write its own
/// share summed onto it in the pass that computes it. Burn runs the backward of the deepest node
/// first, so an input read again further on (the residual stream after its LayerNorm, a tied token
/// table by the head) has that reader's gradient registered by then; registering a second one
/// instead makes Burn allocate a third tensor and add the two on one thread. `None` when nothing is
/// registered (the op is the only reader). The op keeps `input` (a clone of the tracked tensor) in
/// its state for this: the values are shared, not copied, and are kept until the backward anyway.
pub fn take_gradient<B: CpuBackend>(
    grads: &mut Gradients,
    input: &FloatTensor<Autodiff<B>>,
) -> Option<FloatTensor<B>> {
    grads.remove::<B>(input)
}

/// An untracked autodiff tensor: a result no gradient flows through (an optimizer's update).
pub fn constant<B: CpuBackend, C: CheckpointStrategy>(
    x: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    <FloatTensor<Autodiff<B, C>>>::new(x)
}
