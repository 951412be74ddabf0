//! A tensor's values as [`TensorData`] while other handles still share its buffer: what a
//! checkpoint, an export or a checksum reads of the live weights and optimizer moments.
//!
//! Burn's NdArray `into_data` (burn-ndarray 0.22.1) moves a buffer nothing else holds, but
//! copies a shared one element by element through a dynamic-rank iterator, about 30 ns an
//! element: 10.7 s of a 16 s GPT-2 124M checkpoint, whose weights the model and whose moments
//! the optimizer still hold. On the CPU backends this copies the values into a buffer of its own
//! in one slice copy and hands that over, which `into_data` moves without copying again;
//! elsewhere (wgpu, cuda) it is Burn's `into_data`, a read back from the device.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::{Tensor, TensorData};

use crate::fused::autodiff::constant;
use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostTensor, with_float};

/// The values of `x` now, in row-major order.
pub fn snapshot<const D: usize>(x: Tensor<D>) -> TensorData {
    if !fused(&x) {
        return x.into_data();
    }
    Tensor::<D>::from_dispatch(<Dispatch as SnapshotOps>::fused_unshared(x.into_dispatch()))
        .into_data()
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait SnapshotOps: Backend {
    /// `x`'s values in a contiguous buffer no other tensor holds.
    fn fused_unshared(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl<B: CpuBackend> SnapshotOps for B {
    fn fused_unshared(x: FloatTensor<B>) -> FloatTensor<B> {
        unshared(x)
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> SnapshotOps for Autodiff<B, C> {
    fn fused_unshared(x: FloatTensor<Self>) -> FloatTensor<Self> {
        constant::<B, C>(unshared(x.into_primitive()))
    }
}

fn unshared<T: HostTensor>(x: T) -> T {
    with_float!(x.dtype(), E => T::from_values(x.values::<E>().into_owned(), x.dims()))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::snapshot;

    /// The values of a tensor another handle shares, of a view, of an f64 tensor and of a
    /// parameter on an autodiff device are the ones Burn's own `into_data` gives, bit for bit
    /// (a negative zero and a NaN among them).
    #[test]
    fn snapshot_is_burns_into_data() {
        let device = Device::default();
        let values: Vec<f32> = (0..600)
            .map(|i| match i {
                7 => -0.0,
                11 => f32::NAN,
                _ => (i as f32 * 0.37).sin(),
            })
            .collect();
        let data = TensorData::new(values, [20, 30]);
        let x = Tensor::<2>::from_data(data.clone(), &device);
        let shared = x.clone();
        let view = x.clone().transpose().narrow(0, 3, 20);
        let wide: Tensor<2> = x.clone().cast(burn::tensor::DType::F64);
        let tracked = Tensor::<2>::from_data(data, &device.autodiff()).require_grad();
        for t in [shared, view, wide, tracked] {
            let expected = t.clone().into_data();
            let got = snapshot(t);
            assert_eq!(got.shape(), expected.shape());
            assert_eq!(got.dtype(), expected.dtype());
            assert_eq!(got.as_bytes(), expected.as_bytes());
        }
        // The original is untouched and still readable.
        assert_eq!(x.into_data().num_elements(), 600);
    }
}
