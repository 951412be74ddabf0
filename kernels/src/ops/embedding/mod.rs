//! The GPT's input, `wte[tokens] + wpe[positions]`: what the model calls (fused on the CPU,
//! Burn's embedding lookups and an add elsewhere), the fused op's host adapter and its backward
//! pass. The kernels are in [`kernel`].

pub mod kernel;

use kernel::TokenGradient;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::{Int, Tensor};

use crate::fused::autodiff::{record, register, take_gradient};
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, Output, with_float};

/// `[b, t, d]`: the token embeddings `wte` `[vocab, d]` of `tokens` `[b, t]` plus the position
/// embeddings `wpe` `[context, d]` of positions `past ..past + t` (`past`: positions already in
/// a decoding cache, 0 in training).
pub fn embedding(tokens: Tensor<2, Int>, wte: Tensor<2>, wpe: Tensor<2>, past: usize) -> Tensor<3> {
    if fused(&wte) {
        return Tensor::from_dispatch(<Dispatch as EmbeddingOps>::fused_embedding(
            tokens.into_dispatch(),
            wte.into_dispatch(),
            wpe.into_dispatch(),
            past,
        ));
    }
    let [b, t] = tokens.dims();
    let positions = Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &tokens.device())
        .unsqueeze::<2>()
        .expand([b, t]);
    burn::tensor::module::embedding(wte, tokens) + burn::tensor::module::embedding(wpe, positions)
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait EmbeddingOps: Backend {
    fn fused_embedding(
        tokens: IntTensor<Self>,
        wte: FloatTensor<Self>,
        wpe: FloatTensor<Self>,
        past: usize,
    ) -> FloatTensor<Self>;
}

impl<B: CpuBackend> EmbeddingOps for B {
    fn fused_embedding(
        tokens: IntTensor<B>,
        wte: FloatTensor<B>,
        wpe: FloatTensor<B>,
        past: usize,
    ) -> FloatTensor<B> {
        with_float!(wte.dtype(), E => {
            let dims = tokens.dims();
            let (ids, d) = (tokens.indices(), wte.dims()[1]);
            let (wte, wpe) = (wte.values::<E>(), wpe.values::<E>());
            let mut x = Output::new(ids.len() * d, "embedding: x");
            kernel::embedding(&ids, &wte, &wpe, (dims[1], d), past, x.slots());
            // SAFETY: embedding writes every element of its output.
            HostTensor::from_values(unsafe { x.written() }, vec![dims[0], dims[1], d])
        })
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> EmbeddingOps for Autodiff<B, C> {
    fn fused_embedding(
        tokens: IntTensor<Self>,
        wte: FloatTensor<Self>,
        wpe: FloatTensor<Self>,
        past: usize,
    ) -> FloatTensor<Self> {
        let backward = EmbeddingBackward { past };
        let table = wte.clone();
        record::<B, C, _, 2>([wte, wpe], backward, |[wte, wpe]| {
            let rows = [wte.dims()[0], wpe.dims()[0]];
            (
                B::fused_embedding(tokens.clone(), wte, wpe, past),
                (tokens, rows, table),
            )
        })
    }
}

/// Parents `[wte, wpe]`.
#[derive(Debug)]
struct EmbeddingBackward {
    past: usize,
}

impl<B: CpuBackend> Backward<B, 2> for EmbeddingBackward {
    /// The tokens, the rows of both tables, and the token table as the graph knows it: not for
    /// its values (the gradients need none) but to take out a gradient it already has.
    type State = (IntTensor<B>, [usize; 2], FloatTensor<Autodiff<B>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dx = grads.consume::<B>(&ops.node);
        let (tokens, rows, table) = ops.state;
        let want = [ops.parents[0].is_some(), ops.parents[1].is_some()];
        // When the head shares the token table, its backward ran first and registered the
        // table's `[vocab, d]` gradient; the rows are added onto that one.
        let head = want[0].then(|| take_gradient::<B>(grads, &table)).flatten();
        let gradients = backward(&tokens, dx, rows, self.past, head, want);
        register!(B, grads, ops.parents, gradients);
    }
}

/// The gradients asked for in `want` (`[dwte, dwpe]`), tables of `rows` rows each; `dwte` added
/// onto `head`, the tied head's gradient of the token table, when there is one.
fn backward<T: HostTensor, I: HostTensor>(
    tokens: &I,
    dx: T,
    rows: [usize; 2],
    past: usize,
    mut head: Option<T>,
    want: [bool; 2],
) -> [Option<T>; 2] {
    with_float!(dx.dtype(), E => {
        let (ids, t) = (tokens.indices(), tokens.dims()[1]);
        let d = *dx.dims().last().expect("x is [b, t, d]");
        let dxs = dx.values::<E>();
        let fresh_wte = want[0] && head.is_none();
        let mut dwte = fresh_wte.then(|| Output::new(rows[0] * d, "embedding backward: dwte"));
        let mut dwpe = want[1].then(|| Output::new(rows[1] * d, "embedding backward: dwpe"));
        let token_gradient = match &mut head {
            Some(head) => Some(TokenGradient::Onto(head.values_mut::<E>())),
            None => dwte.as_mut().map(|g| TokenGradient::Fresh(g.slots())),
        };
        let dwpe_slots = dwpe.as_mut().map(Output::slots);
        kernel::embedding_backward(&ids, &dxs, (t, d), past, token_gradient, dwpe_slots);
        // SAFETY: embedding_backward writes every element of the fresh gradients it is given.
        let done = |g: Option<Output<E>>, rows: usize| {
            g.map(|g| T::from_values(unsafe { g.written() }, vec![rows, d]))
        };
        [head.or_else(|| done(dwte, rows[0])), done(dwpe, rows[1])]
    })
}
