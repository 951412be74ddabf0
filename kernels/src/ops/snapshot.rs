//! A tensor's values as [`TensorData`] while other handles still share its buffer: what a
//! checkpoint, an export or a checksum reads of the live weights and optimizer moments.
//!
//! Burn's NdArray `into_data` (burn-ndarray 0.22.1) moves a buffer nothing else holds, but
//! copies a shared one element by element through a dynamic-rank iterator, about 30 ns an
//! element: 10.7 s of a 16 s GPT-2 124M checkpoint, whose weights the model and whose moments
//! the optimizer still hold. On the CPU backends the data this returns reads the tensor's own
//! buffer, no copy made: its bytes hold a handle to the tensor, so the buffer lives as long as
//! they do and is shared while they do (Burn's in-place ops and Ember's kernels copy a shared
//! buffer before they write, so the values read are the ones the tensor had when this was
//! called). A strided view is copied once. Elsewhere (wgpu, cuda) it is Burn's `into_data`, a
//! read back from the device.

use std::borrow::Cow;
use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::{AllocationProperty, Bytes, Tensor, TensorData};

use crate::fused::fused;
use crate::fused::host::{CpuBackend, HostFloat, HostTensor, with_float};

/// The values of `x` as they are now, in row-major order.
pub fn snapshot<const D: usize>(x: Tensor<D>) -> TensorData {
    if !fused(&x) {
        return x.into_data();
    }
    <Dispatch as SnapshotOps>::fused_snapshot(x.into_dispatch())
}

#[backend_extension(NdArray: cfg(feature = "ndarray"), Flex: cfg(feature = "flex"), Autodiff)]
pub trait SnapshotOps: Backend {
    fn fused_snapshot(x: FloatTensor<Self>) -> TensorData;
}

impl<B: CpuBackend> SnapshotOps for B {
    fn fused_snapshot(x: FloatTensor<B>) -> TensorData {
        host_snapshot(x)
    }
}

impl<B: CpuBackend, C: CheckpointStrategy> SnapshotOps for Autodiff<B, C> {
    fn fused_snapshot(x: FloatTensor<Self>) -> TensorData {
        host_snapshot::<FloatTensor<B>>(x.into_primitive())
    }
}

fn host_snapshot<T: HostTensor + Send + 'static>(x: T) -> TensorData {
    let (dtype, dims) = (x.dtype(), x.dims());
    with_float!(dtype, E => {
        if let Cow::Owned(values) = x.values::<E>() {
            // A strided view: its values exist only as the copy `values` made.
            return TensorData::new(values, dims);
        }
        let held = bytes::Bytes::from_owner(Held::<T, E>(x, PhantomData));
        TensorData::from_bytes(
            Bytes::from_shared(held, AllocationProperty::Native),
            dims,
            dtype,
        )
    })
}

/// A contiguous host tensor, seen as the bytes of its buffer.
struct Held<T, E>(T, PhantomData<E>);

impl<T: HostTensor, E: HostFloat> AsRef<[u8]> for Held<T, E> {
    fn as_ref(&self) -> &[u8] {
        match self.0.values::<E>() {
            Cow::Borrowed(values) => bytemuck::cast_slice(values),
            Cow::Owned(_) => unreachable!("only a contiguous tensor is held"),
        }
    }
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

    /// A snapshot reads the tensor's own buffer, and keeps the values it was taken with when the
    /// tensor is written afterwards: Burn's arithmetic and the fused AdamW, which update a
    /// buffer nothing else holds in place, copy it first.
    #[test]
    fn snapshot_keeps_its_values_when_the_tensor_is_written() {
        let device = Device::default();
        let tensor = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [4]), &device);
        let before = vec![1.0f32, 2.0, 3.0, 4.0];
        let values = |d: TensorData| d.to_vec::<f32>().unwrap();

        let x = tensor(before.clone());
        let taken = snapshot(x.clone());
        let y = x.add_scalar(1.0);
        assert_eq!(values(taken), before);
        assert_eq!(values(y.into_data()), [2.0, 3.0, 4.0, 5.0]);

        let (param, grad, m, v) = (
            tensor(before.clone()),
            tensor(vec![0.5; 4]),
            tensor(vec![0.0; 4]),
            tensor(vec![0.0; 4]),
        );
        let (taken_param, taken_m) = (snapshot(param.clone()), snapshot(m.clone()));
        let step = crate::cpu::AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            time: 1,
            grad_scale: 1.0,
        };
        let (param, m, _) = crate::ops::adamw(param, grad, m, v, step);
        assert_eq!(values(taken_param), before);
        assert_eq!(values(taken_m), [0.0; 4]);
        assert_ne!(values(param.into_data()), before);
        assert_ne!(values(m.into_data()), [0.0; 4]);
    }
}
