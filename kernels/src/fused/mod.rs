//! The machinery every fused op shares, written once: which tensors take the fused path
//! ([`is_fused`]), the CPU backends' tensors as slices ([`host`]), and the autodiff plumbing
//! ([`autodiff`]).
//!
//! # How a fused op is put together
//! One folder per op under `ops/`, as llm.c keeps a layer's forward and backward side by side:
//! - `kernel.rs`: the kernels over plain slices, forward and backward, knowing nothing of Burn;
//! - `mod.rs`: everything Burn sees of the op:
//!   1. the function the model calls, which takes the fused path on a CPU backend and the
//!      op's composed form (`composed`, Burn's own ops) elsewhere: the GPU fallback and the
//!      reference the tests compare with;
//!   2. the op's backend extension trait (`#[backend_extension]`), which routes a call to the
//!      backend the tensor lives on;
//!   3. the host adapter, one `impl<B: CpuBackend>` for NdArray and Flex: tensors to slices,
//!      the kernel, slices to a tensor;
//!   4. the `Autodiff<B>` implementation and its `Backward`, which calls the backward kernel.
//!
//! Adding an op is adding a folder like `ops/gelu/` and a line in `ops/mod.rs`.
//!
//! The composed form is the second branch of the op's function, not a function of its own: the
//! tests and benchmarks reach it by running the op under [`composed`].

pub mod autodiff;
// burn-ndarray is deprecated upstream in favour of Flex; Ember supports both.
#[allow(deprecated)]
pub mod host;

#[cfg(any(feature = "ndarray", feature = "flex"))]
use burn::backend::DispatchDevice;
use burn::backend::{Backend, ExtensionType, tensor::FloatTensor};
use std::cell::Cell;

use burn::tensor::{DType, Device, Tensor};

/// Whether tensors on `device` of type `dtype` run the fused kernels: `f32` and `f64` on the
/// CPU backends compiled in.
pub fn is_fused(device: &Device, dtype: DType) -> bool {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return false;
    }
    match device.clone().without_autodiff().as_dispatch() {
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Runs `f` with rayon's other workers polling for work
/// ([`with_workers_polling`](crate::cpu::with_workers_polling)) when `device` is a CPU backend,
/// whose kernels run on rayon's pool; elsewhere `f()` on the calling thread, where GPU backends
/// keep their device work.
pub fn with_workers_polling_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if is_fused(device, DType::F32) {
        crate::cpu::with_workers_polling(f)
    } else {
        f()
    }
}

/// Whether `x` runs the fused kernels: [`is_fused`], unless [`composed`] says otherwise.
pub fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    !COMPOSED.get() && is_fused(&x.device(), x.dtype())
}

thread_local! {
    /// Set by [`composed`]: every op on this thread takes its composed path.
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every op called on this thread taking its composed path (Burn's own ops), as on
/// a GPU backend: the reference the fused kernels are tested and benchmarked against.
pub fn composed<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the previous setting, even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED.set(self.0);
        }
    }
    let _restore = Restore(COMPOSED.replace(true));
    f()
}

/// `[a, b]` or `[a, b, c]` as `(a, b, Some(c))`: the inputs of an op with an optional third
/// (a bias, a shift) after [`autodiff::record`] split them.
pub fn with_optional<T, const N: usize>(inputs: [T; N]) -> (T, T, Option<T>) {
    let mut inputs = inputs.into_iter();
    let mut next = || inputs.next();
    let (a, b) = (next(), next());
    (a.expect("two inputs"), b.expect("two inputs"), next())
}

/// A tensor input that may be absent (a bias or a LayerNorm shift, which a model may go
/// without). The extension macro routes `Option` inputs only in Burn's own dispatch, so this
/// is its stand-in.
#[derive(ExtensionType, Debug, Clone)]
pub enum Optional<B: Backend> {
    Present(FloatTensor<B>),
    Absent,
}

impl<B: Backend> Optional<B> {
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Optional::Present(t) => Some(t),
            Optional::Absent => None,
        }
    }
}

impl<B: Backend> From<Option<FloatTensor<B>>> for Optional<B> {
    fn from(t: Option<FloatTensor<B>>) -> Self {
        t.map_or(Optional::Absent, Optional::Present)
    }
}
