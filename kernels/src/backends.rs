//! The fused operations on the CPU backends: how NdArray's and Flex's tensors are read and
//! made ([`HostTensor`]), and the two operation traits implemented for each through the shared
//! [`crate::host`] functions.

use std::borrow::Cow;

#[cfg(feature = "flex")]
use burn::backend::Flex;
#[cfg(feature = "ndarray")]
use burn::backend::NdArray;
use burn::backend::TensorMetadata;
use burn::tensor::DType;

use crate::cpu::{AdamWStep, Float};
use crate::extension::Optional;
use crate::host::{self, HostTensor};

/// An element type both the kernels and the backends support: `f32` and `f64`.
pub trait HostFloat: Float + burn::tensor::Element + bytemuck::Pod {
    /// NdArray's values of this element type, if `t` holds them.
    #[cfg(feature = "ndarray")]
    fn ndarray_values(t: &NdArrayTensor) -> Option<Cow<'_, [Self]>>;
    #[cfg(feature = "ndarray")]
    fn ndarray_tensor(values: SharedArray<Self>) -> NdArrayTensor;
}

macro_rules! host_float {
    ($t:ty, $variant:ident) => {
        impl HostFloat for $t {
            #[cfg(feature = "ndarray")]
            fn ndarray_values(t: &NdArrayTensor) -> Option<Cow<'_, [Self]>> {
                let NdArrayTensor::$variant(storage) = t else {
                    return None;
                };
                let view = storage.view();
                Some(match view.to_slice() {
                    Some(values) => Cow::Borrowed(values),
                    None => Cow::Owned(view.iter().copied().collect()),
                })
            }
            #[cfg(feature = "ndarray")]
            fn ndarray_tensor(values: SharedArray<Self>) -> NdArrayTensor {
                values.into()
            }
        }
    };
}
host_float!(f32, F32);
host_float!(f64, F64);

fn not_an_index(dtype: DType) -> ! {
    panic!("fused kernels take int32 or int64 indices, not {dtype:?}")
}

#[cfg(feature = "ndarray")]
use burn::backend::ndarray::{NdArrayTensor, SharedArray};

#[cfg(feature = "ndarray")]
impl HostTensor for NdArrayTensor {
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn dtype(&self) -> DType {
        TensorMetadata::dtype(self)
    }
    fn values<E: HostFloat>(&self) -> Cow<'_, [E]> {
        E::ndarray_values(self).unwrap_or_else(|| {
            panic!(
                "expected a {:?} tensor, got {:?}",
                E::dtype(),
                HostTensor::dtype(self)
            )
        })
    }
    fn indices(&self) -> Vec<usize> {
        match self {
            NdArrayTensor::I64(s) => s.view().iter().map(|&v| v as usize).collect(),
            NdArrayTensor::I32(s) => s.view().iter().map(|&v| v as usize).collect(),
            other => not_an_index(HostTensor::dtype(other)),
        }
    }
    fn from_values<E: HostFloat>(values: Vec<E>, dims: Vec<usize>) -> Self {
        let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
            .expect("the kernel wrote as many values as the shape holds");
        E::ndarray_tensor(array.into_shared())
    }
}

#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;

#[cfg(feature = "flex")]
impl HostTensor for FlexTensor {
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn dtype(&self) -> DType {
        TensorMetadata::dtype(self)
    }
    fn values<E: HostFloat>(&self) -> Cow<'_, [E]> {
        match self.as_slice::<E>() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(self.to_contiguous().storage::<E>().to_vec()),
        }
    }
    fn indices(&self) -> Vec<usize> {
        let t = self.to_contiguous();
        match t.dtype() {
            DType::I64 => t.storage::<i64>().iter().map(|&v| v as usize).collect(),
            DType::I32 => t.storage::<i32>().iter().map(|&v| v as usize).collect(),
            other => not_an_index(other),
        }
    }
    fn from_values<E: HostFloat>(values: Vec<E>, dims: Vec<usize>) -> Self {
        FlexTensor::from_data(burn::tensor::TensorData::new(values, dims))
    }
}

/// Implements [`FusedOps`](crate::FusedOps) and [`FusedBackward`](crate::FusedBackward) for a
/// CPU backend whose float and int tensors are one [`HostTensor`] type.
macro_rules! host_backend {
    ($backend:ty) => {
        impl crate::FusedOps for $backend {
            fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host::gelu(x)
            }
            fn fused_layer_norm(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: Optional<Self>,
                eps: f64,
            ) -> FloatTensor<Self> {
                host::layer_norm(x, gamma, beta.into_option(), eps).0
            }
            fn fused_linear(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: Optional<Self>,
            ) -> FloatTensor<Self> {
                host::linear(x, weight, bias.into_option())
            }
            fn fused_causal_attention(
                qkv: FloatTensor<Self>,
                n_head: usize,
                past: usize,
            ) -> FloatTensor<Self> {
                host::attention(qkv, n_head, past).0
            }
            fn fused_cross_entropy(
                logits: FloatTensor<Self>,
                targets: IntTensor<Self>,
            ) -> FloatTensor<Self> {
                host::cross_entropy(logits, &targets).0
            }
            fn fused_adamw(
                param: FloatTensor<Self>,
                grad: FloatTensor<Self>,
                m: FloatTensor<Self>,
                v: FloatTensor<Self>,
                step: AdamWStep,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                host::adamw(param, grad, m, v, step)
            }
            fn fused_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host::sum_of_squares(x)
            }
        }

        impl crate::FusedBackward for $backend {
            fn fused_gelu_backward(
                x: FloatTensor<Self>,
                dy: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::gelu_backward(x, dy)
            }
            fn fused_layer_norm_with_stats(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: Option<FloatTensor<Self>>,
                eps: f64,
            ) -> [FloatTensor<Self>; 3] {
                let (y, mean, rstd) = host::layer_norm(x, gamma, beta, eps);
                [y, mean, rstd]
            }
            fn fused_layer_norm_backward(
                saved: [FloatTensor<Self>; 5],
                with_beta: bool,
            ) -> (
                FloatTensor<Self>,
                FloatTensor<Self>,
                Option<FloatTensor<Self>>,
            ) {
                host::layer_norm_backward(saved, with_beta)
            }
            fn fused_linear_backward(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                want: [bool; 3],
            ) -> [Option<FloatTensor<Self>>; 3] {
                host::linear_backward(x, weight, dy, want)
            }
            fn fused_attention_with_probs(
                qkv: FloatTensor<Self>,
                n_head: usize,
                past: usize,
            ) -> [FloatTensor<Self>; 2] {
                let (y, probs) = host::attention(qkv, n_head, past);
                [y, probs]
            }
            fn fused_attention_backward(
                qkv: FloatTensor<Self>,
                probs: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                n_head: usize,
                past: usize,
            ) -> FloatTensor<Self> {
                host::attention_backward(qkv, probs, dy, n_head, past)
            }
            fn fused_cross_entropy_with_lse(
                logits: FloatTensor<Self>,
                targets: &IntTensor<Self>,
            ) -> [FloatTensor<Self>; 2] {
                let (loss, lse) = host::cross_entropy(logits, targets);
                [loss, lse]
            }
            fn fused_cross_entropy_backward(
                logits: FloatTensor<Self>,
                targets: &IntTensor<Self>,
                lse: FloatTensor<Self>,
                dloss: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::cross_entropy_backward(logits, targets, lse, dloss)
            }
        }
    };
}

use burn::backend::tensor::{FloatTensor, IntTensor};

#[cfg(feature = "ndarray")]
mod ndarray_backend {
    use super::*;
    host_backend!(NdArray);
}

#[cfg(feature = "flex")]
mod flex_backend {
    use super::*;
    host_backend!(Flex);
}
