//! The CPU backends' tensors as the kernels see them: a shape, an element type, and a slice of
//! values (borrowed when the tensor is contiguous, copied once when it is not), and the outputs
//! the kernels write into.
//!
//! NdArray and Flex store tensors differently; [`HostTensor`] is the only place that knows how.
//! [`CpuBackend`] names the backends whose tensors are host tensors: each op's host adapter is one
//! `impl<B: CpuBackend>` that serves both.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::{Backend, TensorMetadata};
use burn::tensor::DType;

use crate::cpu::Float;

/// A backend whose float and int tensors live in host memory as a [`HostTensor`]: NdArray and
/// Flex. The fused ops run their CPU kernels on these. Implemented for each by name (not for
/// every backend with host tensors) so that the compiler can tell an op's host implementation,
/// `impl<B: CpuBackend>`, from its `Autodiff<B>` one.
pub trait CpuBackend:
    Backend<FloatTensorPrimitive: HostTensor, IntTensorPrimitive: HostTensor>
{
}

#[cfg(feature = "ndarray")]
impl CpuBackend for burn::backend::NdArray {}

#[cfg(feature = "flex")]
impl CpuBackend for burn::backend::Flex {}

/// A CPU backend's tensor primitive (float or int).
pub trait HostTensor: Sized {
    fn dims(&self) -> Vec<usize>;
    fn dtype(&self) -> DType;
    /// The values in row-major order. Panics if the tensor does not hold `E`.
    fn values<E: HostFloat>(&self) -> Cow<'_, [E]>;
    /// The values of an integer tensor, as indices.
    fn indices(&self) -> Vec<usize>;
    fn from_values<E: HostFloat>(values: Vec<E>, dims: Vec<usize>) -> Self;
    /// The values, in row-major order, to update in place: the tensor's own buffer when nothing
    /// else shares it, else a copy it then holds (copy on write), made contiguous first if the
    /// tensor is a view. Panics if the tensor does not hold `E`.
    fn values_mut<E: HostFloat>(&mut self) -> &mut [E];
}

/// An element type both the kernels and the backends support: `f32` and `f64`.
pub trait HostFloat: Float + burn::tensor::Element + bytemuck::Pod {
    /// A NaN whose payload no arithmetic produces (arithmetic on a signalling NaN quiets it),
    /// written into outputs before a kernel runs when [`check_outputs`] is on.
    const CANARY: Self;
    fn is_canary(self) -> bool;
    /// NdArray's values of this element type, if `t` holds them.
    #[cfg(feature = "ndarray")]
    fn ndarray_values(t: &NdArrayTensor) -> Option<Cow<'_, [Self]>>;
    #[cfg(feature = "ndarray")]
    fn ndarray_tensor(values: SharedArray<Self>) -> NdArrayTensor;
    /// NdArray's values of this element type to update in place, if `t` holds them.
    #[cfg(feature = "ndarray")]
    fn ndarray_values_mut(t: &mut NdArrayTensor) -> Option<&mut [Self]>;
}

macro_rules! host_float {
    ($t:ty, $variant:ident, $canary:expr) => {
        impl HostFloat for $t {
            const CANARY: Self = <$t>::from_bits($canary);
            fn is_canary(self) -> bool {
                self.to_bits() == $canary
            }
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
            #[cfg(feature = "ndarray")]
            fn ndarray_values_mut(t: &mut NdArrayTensor) -> Option<&mut [Self]> {
                let NdArrayTensor::$variant(storage) = t else {
                    return None;
                };
                let array = storage.ensure_owned();
                if !array.is_standard_layout() {
                    *array = array.as_standard_layout().into_owned().into_shared();
                }
                // `ArcArray` copies the buffer first if another array shares it.
                Some(
                    array
                        .as_slice_mut()
                        .expect("a standard-layout array is a slice"),
                )
            }
        }
    };
}
host_float!(f32, F32, 0x7FA5_A5A5);
host_float!(f64, F64, 0x7FF4_A5A5_A5A5_A5A5);

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
    fn values_mut<E: HostFloat>(&mut self) -> &mut [E] {
        let dtype = HostTensor::dtype(self);
        E::ndarray_values_mut(self)
            .unwrap_or_else(|| panic!("expected a {:?} tensor, got {dtype:?}", E::dtype()))
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
    fn values_mut<E: HostFloat>(&mut self) -> &mut [E] {
        let len = HostTensor::dims(self).iter().product();
        if self.as_slice::<E>().is_none() {
            *self = self.to_contiguous();
        }
        // `storage_mut` copies the buffer first if another tensor shares it; a contiguous
        // tensor's values are the first `len` of its buffer.
        &mut self.storage_mut::<E>()[..len]
    }
}

/// Runs `$body` with `$e` bound to the element type of `$dtype` (`f32` or `f64`).
macro_rules! with_float {
    ($dtype:expr, $e:ident => $body:expr) => {
        match $dtype {
            burn::tensor::DType::F32 => {
                type $e = f32;
                $body
            }
            burn::tensor::DType::F64 => {
                type $e = f64;
                $body
            }
            other => panic!("fused kernels run in f32 or f64, not {other:?}"),
        }
    };
}
pub(crate) use with_float;

/// `(rows, last)`: `dims` as a matrix whose rows are all but the last dimension.
pub fn rows_and_last(dims: &[usize]) -> (usize, usize) {
    let last = *dims.last().expect("a tensor of rank >= 1");
    (dims.iter().product::<usize>() / last.max(1), last)
}

/// Whether outputs are checked: 0 not decided yet, 1 off, 2 on.
static CHECK_OUTPUTS: AtomicU8 = AtomicU8::new(0);

/// Turns the output check on or off for the whole process: each kernel output then starts
/// filled with [`HostFloat::CANARY`], and an output that still holds one after its kernel ran
/// is a panic naming the operation and the element. On by default in debug builds and when
/// `EMBER_KERNEL_CANARY=1`; the fused-op tests turn it on. Costs a pass over each output to
/// fill it and one to check it.
pub fn check_outputs(on: bool) {
    CHECK_OUTPUTS.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

fn checking_outputs() -> bool {
    match CHECK_OUTPUTS.load(Ordering::Relaxed) {
        0 => {
            let on = cfg!(debug_assertions)
                || std::env::var("EMBER_KERNEL_CANARY").is_ok_and(|v| v == "1");
            check_outputs(on);
            on
        }
        state => state == 2,
    }
}

/// A kernel's output: `len` elements that start uninitialized, which spares the pass that would
/// zero them first (5% of a step, on one thread, when the outputs were zeroed), or filled with
/// the canary when outputs are checked.
pub struct Output<E> {
    values: Vec<E>,
    len: usize,
    /// The operation and output, for the check's message (`"gelu: y"`).
    name: &'static str,
}

impl<E: HostFloat> Output<E> {
    pub fn new(len: usize, name: &'static str) -> Self {
        let mut values = Vec::with_capacity(len);
        if checking_outputs() {
            values.resize(len, E::CANARY);
            // Empty again, the canaries left in the spare capacity for the kernel to overwrite.
            // SAFETY: shrinking the length of initialized elements.
            unsafe { values.set_len(0) };
        }
        Self { values, len, name }
    }

    /// The slots for the kernel to write.
    pub fn slots(&mut self) -> &mut [MaybeUninit<E>] {
        &mut self.values.spare_capacity_mut()[..self.len]
    }

    /// The values, once the kernel has run.
    ///
    /// # Safety
    /// Every slot was written: each kernel writes every element of its outputs (checked against
    /// the canary in test and debug builds).
    pub unsafe fn written(mut self) -> Vec<E> {
        // SAFETY: the caller's guarantee.
        unsafe { self.values.set_len(self.len) };
        if checking_outputs()
            && let Some(i) = self.values.iter().position(|v| v.is_canary())
        {
            panic!(
                "{}: the kernel left element {i} of {} unwritten",
                self.name, self.len
            );
        }
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwritten_output_element_is_caught() {
        check_outputs(true);
        let mut out = Output::<f32>::new(5, "test: y");
        for (i, slot) in out.slots().iter_mut().enumerate().filter(|(i, _)| *i != 3) {
            slot.write(i as f32);
        }
        let caught = std::panic::catch_unwind(move || unsafe { out.written() });
        let message = *caught.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(message, "test: y: the kernel left element 3 of 5 unwritten");

        let mut out = Output::<f64>::new(2, "test: z");
        out.slots().iter_mut().for_each(|s| {
            s.write(f64::NAN);
        });
        // SAFETY: every slot written. A NaN a kernel computes is not the canary.
        assert!(unsafe { out.written() }.iter().all(|v| v.is_nan()));
    }
}
