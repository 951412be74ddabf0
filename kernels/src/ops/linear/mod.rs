//! The Linear layer `x·W + b` with `W` `[in, out]`, as `burn::tensor::module::linear`, and a
//! residual branch's output projection `r + x·W + b` as one op: what the model calls (fused on
//! the CPU, Burn's own elsewhere), the fused op's host adapter and its backward pass; and, for
//! inference, the same layer with its weight stored `[out, in]` (a head tied to the token
//! embedding), [`linear_transposed`]. The kernels are in [`kernel`].

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

use crate::fused::autodiff::{constant, record, register};
use crate::fused::host::{CpuBackend, HostTensor, Output, rows_and_last, with_float};
use crate::fused::{Optional, fused};
use crate::ops::head_loss::kernel::HeadWeight;

/// `x·weight + bias` for `x` `[.., in]` and `weight` `[in, out]`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if !fused(&x) || D < 2 {
        return burn::tensor::module::linear(x, weight, bias);
    }
    fused_linear(x, weight, bias, None)
}

/// `residual + x·weight + bias`: a residual branch's output projection added onto the stream
/// (`residual` `[.., out]`).
pub fn linear_onto<const D: usize>(
    residual: Tensor<D>,
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if !fused(&x) || D < 2 {
        return residual + burn::tensor::module::linear(x, weight, bias);
    }
    fused_linear(x, weight, bias, Some(residual))
}

/// `x·tableᵀ + bias` for `x` `[.., in]` and `table` `[out, in]` (a head tied to the token
/// embedding, as stored). Fused on the CPU off autodiff (the logits of generated tokens), where
/// it reads the table in place as a transposed view and a generated token's single row runs on
/// every thread (`cpu::gemm`); Burn's matmul packs the whole table into a copy at every token
/// instead (36% of `generate`'s time at GPT-2's size, BENCHMARKS.md). Elsewhere, and under
/// autodiff (no backward is fused), Burn's ops compute `(table·xᵀ)ᵀ`, which reads the table as
/// stored too: a product with `tableᵀ` would copy it into `[in, out]` order first.
pub fn linear_transposed<const D: usize>(
    x: Tensor<D>,
    table: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if !fused(&x) || D < 2 || x.device().is_autodiff() {
        let (mut dims, [out, inputs]) = (x.dims(), table.dims());
        dims[D - 1] = out;
        let xt = x.reshape([-1, inputs as i64]).transpose();
        let y = table.matmul(xt).transpose();
        let y = match bias {
            Some(bias) => y + bias.unsqueeze(),
            None => y,
        };
        return y.reshape(dims);
    }
    Tensor::from_dispatch(<Dispatch as LinearOps>::fused_linear_transposed(
        x.into_dispatch(),
        table.into_dispatch(),
        bias.map(Tensor::into_dispatch).into(),
    ))
}

fn fused_linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as LinearOps>::fused_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.map(Tensor::into_dispatch).into(),
        residual.map(Tensor::into_dispatch).into(),
    ))
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait LinearOps: Backend {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
        #[extension_type] residual: Optional<Self>,
    ) -> FloatTensor<Self>;

    fn fused_linear_transposed(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
    ) -> FloatTensor<Self>;
}

impl<B: CpuBackend> LinearOps for B {
    fn fused_linear(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        bias: Optional<B>,
        residual: Optional<B>,
    ) -> FloatTensor<B> {
        host_linear(x, (w, HeadWeight::InOut), (bias, residual))
    }

    fn fused_linear_transposed(
        x: FloatTensor<B>,
        table: FloatTensor<B>,
        bias: Optional<B>,
    ) -> FloatTensor<B> {
        host_linear(x, (table, HeadWeight::Tied), (bias, Optional::Absent))
    }
}

/// The forward of either layout of the weight on host tensors.
fn host_linear<B: CpuBackend>(
    x: FloatTensor<B>,
    (w, layout): (FloatTensor<B>, HeadWeight),
    (bias, residual): (Optional<B>, Optional<B>),
) -> FloatTensor<B> {
    with_float!(x.dtype(), E => {
        let mut dims = x.dims();
        let (m, k) = rows_and_last(&dims);
        let n = match layout {
            HeadWeight::InOut => w.dims()[1],
            HeadWeight::Tied => w.dims()[0],
        };
        let (xs, ws) = (x.values::<E>(), w.values::<E>());
        let (b, r) = (bias.into_option(), residual.into_option());
        let b = b.as_ref().map(|b| b.values::<E>());
        let r = r.as_ref().map(|r| r.values::<E>());
        let mut y = Output::new(m * n, "linear: y");
        let w = (&ws[..], layout);
        kernel::linear_stored(&xs, w, b.as_deref(), r.as_deref(), (m, k, n), y.slots());
        *dims.last_mut().expect("rank >= 1") = n;
        // SAFETY: linear_stored writes every element of its output.
        HostTensor::from_values(unsafe { y.written() }, dims)
    })
}

impl<B: CpuBackend, C: CheckpointStrategy> LinearOps for Autodiff<B, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: Optional<Self>,
        residual: Optional<Self>,
    ) -> FloatTensor<Self> {
        // Parents `[x, w]`, then the bias and the residual where present.
        let (bias, residual) = (bias.into_option(), residual.into_option());
        let has = LinearBackward {
            bias: bias.is_some(),
            residual: residual.is_some(),
        };
        match (bias, residual) {
            (None, None) => record::<B, C, _, 2>([x, w], has, forward::<B, 2>(has)),
            (Some(b), None) => record::<B, C, _, 3>([x, w, b], has, forward::<B, 3>(has)),
            (None, Some(r)) => record::<B, C, _, 3>([x, w, r], has, forward::<B, 3>(has)),
            (Some(b), Some(r)) => record::<B, C, _, 4>([x, w, b, r], has, forward::<B, 4>(has)),
        }
    }

    /// Not differentiated: [`linear_transposed`] takes Burn's ops under autodiff, so this runs
    /// only when called directly, and its result is a constant.
    fn fused_linear_transposed(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        bias: Optional<Self>,
    ) -> FloatTensor<Self> {
        let bias = bias.into_option().map(|b| b.into_primitive());
        constant::<B, C>(B::fused_linear_transposed(
            x.into_primitive(),
            table.into_primitive(),
            bias.into(),
        ))
    }
}

/// The inner forward of the parents `has` describes, and what the backward keeps.
fn forward<B: CpuBackend, const N: usize>(
    has: LinearBackward,
) -> impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, [FloatTensor<B>; 2]) {
    move |inputs| {
        let mut inputs = inputs.into_iter();
        let (x, w) = (inputs.next().expect("x"), inputs.next().expect("w"));
        let bias = has.bias.then(|| inputs.next().expect("the bias"));
        let residual = has.residual.then(|| inputs.next().expect("the residual"));
        let y = B::fused_linear(x.clone(), w.clone(), bias.into(), residual.into());
        (y, [x, w])
    }
}

/// Parents `[x, weight]`, then `bias` and `residual` where the op has them.
#[derive(Debug, Clone, Copy)]
struct LinearBackward {
    bias: bool,
    residual: bool,
}

impl<B: CpuBackend, const N: usize> Backward<B, N> for LinearBackward {
    /// `[x, weight]`.
    type State = [FloatTensor<B>; 2];

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let parents = &ops.parents;
        let (bias, residual) = (self.bias.then_some(2), self.residual.then(|| N - 1));
        let wanted = |i: Option<usize>| i.is_some_and(|i| parents[i].is_some());
        let want = [parents[0].is_some(), parents[1].is_some(), wanted(bias)];
        // The residual's gradient is `dy` itself (shared, not copied).
        let d_residual = wanted(residual).then(|| dy.clone());
        let [dx, dw, db] = backward(ops.state, dy, want);
        let mut gradients: Vec<Option<FloatTensor<B>>> = vec![dx, dw];
        gradients.extend(self.bias.then_some(db));
        gradients.extend(self.residual.then_some(d_residual));
        register!(B, grads, ops.parents, gradients);
    }
}

/// The gradients asked for in `want` (`[dx, dw, db]`), from the saved `[x, w]` and `dy`.
fn backward<T: HostTensor>([x, w]: [T; 2], dy: T, want: [bool; 3]) -> [Option<T>; 3] {
    with_float!(x.dtype(), E => {
        let x_dims = x.dims();
        let (w_dims, (m, k)) = (w.dims(), rows_and_last(&x_dims));
        let n = w_dims[1];
        let (xs, ws, dys) = (x.values::<E>(), w.values::<E>(), dy.values::<E>());
        let names = ["linear backward: dx", "linear backward: dw", "linear backward: db"];
        let [mut dx, mut dw, mut db] = [(0, m * k), (1, k * n), (2, n)]
            .map(|(i, len)| want[i].then(|| Output::new(len, names[i])));
        let slots = (
            dx.as_mut().map(Output::slots),
            dw.as_mut().map(Output::slots),
            db.as_mut().map(Output::slots),
        );
        kernel::linear_backward(&xs, &ws, &dys, (m, k, n), slots.0, slots.1, slots.2);
        // SAFETY: linear_backward writes every element of the gradients it is given.
        let done = |v: Option<Output<E>>, dims: Vec<usize>| {
            v.map(|v| T::from_values(unsafe { v.written() }, dims))
        };
        [done(dx, x_dims), done(dw, w_dims), done(db, vec![n])]
    })
}
