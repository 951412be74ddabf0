//! The element types the kernels are written over: `f32` for training, `f64` for the gradient
//! checks. One kernel body serves both; only the transcendental functions differ.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use gemm_common::Parallelism;

use super::math;

/// The gemm crate's matrix product for one element type: `dst = alpha·dst + beta·lhs·rhs`
/// (`alpha` only when `read_dst`), every matrix given by a pointer and its column and row
/// strides.
pub type GemmFn<T> = unsafe fn(
    usize,
    usize,
    usize,
    *mut T,
    isize,
    isize,
    bool,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    T,
    bool,
    bool,
    bool,
    Parallelism,
);

/// A real number type a kernel computes in.
pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// `self · a + b` in one rounding (one FMA instruction in [`super::simd::vectorized`]
    /// code, which only runs on processors with FMA).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `e^x`; for `f32` a branch-free polynomial that vectorizes (within 2 ulp).
    fn exp(self) -> Self;
    /// `ln x` (used once per row, so the standard library's).
    fn ln(self) -> Self;
    /// The complementary error function `1 - erf x`; for `f32` a polynomial with a relative
    /// error below 1.2e-7 that vectorizes ([`math::erfc_f32`]).
    fn erfc(self) -> Self;
    /// The matrix product for this type (picks its kernels for the processor at first use).
    fn gemm() -> GemmFn<Self>;
    /// The BLAS library's matrix product for this type.
    fn cblas(blas: &super::gemm::Blas) -> super::gemm::CblasGemm<Self>;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        // Not `f32::max`: this form compiles to one `maxps` and NaN-propagation is not needed.
        if self > other { self } else { other }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        math::exp_f32(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f32::ln(self)
    }
    #[inline(always)]
    fn erfc(self) -> Self {
        math::erfc_f32(self)
    }
    fn gemm() -> GemmFn<Self> {
        gemm_f32::gemm::f32::get_gemm_fn()
    }
    fn cblas(blas: &super::gemm::Blas) -> super::gemm::CblasGemm<Self> {
        blas.sgemm
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f64::ln(self)
    }
    #[inline(always)]
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
    fn gemm() -> GemmFn<Self> {
        gemm_f64::gemm::f64::get_gemm_fn()
    }
    fn cblas(blas: &super::gemm::Blas) -> super::gemm::CblasGemm<Self> {
        blas.dgemm
    }
}
