//! Runtime choice of the instruction set the kernels' loops are compiled for.
//!
//! The kernels are plain loops over slices. [`vectorized`] runs one inside a function compiled
//! for AVX-512 or AVX2 + FMA when the processor has them (detected once, cached by the
//! standard library), so that LLVM vectorizes them with the wide registers; elsewhere the same
//! loop runs as compiled for the baseline target. This is what a portable-SIMD crate would do,
//! in a dozen lines that build in no time (Burn's own `simd` features cost over 30 CPU-minutes
//! of build here).

/// Runs `f`, inlined into a function compiled for the widest vector instructions available.
/// `f` must be `#[inline(always)]` (closures: `#[inline(always)] || ...`) and so must what it
/// calls in its hot loop, or it is compiled for the baseline target only.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports the features the function is compiled for.
            return unsafe { x86::avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
