//! The matmul engine behind Burn's ndarray backend.
//!
//! ndarray's `blas` feature declares the cblas functions it calls but links none: this crate
//! provides them. The build script picks the engine (see `build.rs`); [`engine`] tells the
//! program which one it got, so that the start-up banner can say it and how to get a faster one.

use std::fmt;

#[cfg(ember_blas = "fallback")]
mod fallback;

/// Where matrix products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The system OpenBLAS library, found at build time.
    OpenBlas,
    /// Apple's Accelerate framework.
    Accelerate,
    /// This crate's own cblas functions on `matrixmultiply` (pure Rust, always builds).
    Fallback,
}

impl Engine {
    /// The library's name alone (`OpenBLAS`).
    pub fn short_name(self) -> &'static str {
        match self {
            Engine::OpenBlas => "OpenBLAS",
            Engine::Accelerate => "Accelerate",
            Engine::Fallback => "matrixmultiply",
        }
    }

    /// What a user can do to get a faster engine, if there is one.
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Engine::Fallback => Some(
                "install a system OpenBLAS (Debian/Ubuntu: apt-get install libopenblas-dev) \
                 and rebuild for faster matmuls",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::OpenBlas => write!(f, "OpenBLAS ({})", openblas::config()),
            Engine::Accelerate => f.write_str("Accelerate"),
            Engine::Fallback => f.write_str("pure-Rust matrixmultiply (no system BLAS found)"),
        }
    }
}

/// The engine this build links.
pub const fn engine() -> Engine {
    if cfg!(ember_blas = "openblas") {
        Engine::OpenBlas
    } else if cfg!(ember_blas = "accelerate") {
        Engine::Accelerate
    } else {
        Engine::Fallback
    }
}

/// Sets how many threads the BLAS library may use for one product; `None` where the engine
/// manages its own threads (Accelerate) or runs on the caller's thread (the fallback).
pub fn set_threads(n: usize) -> Option<usize> {
    openblas::set_threads(n)
}

/// `cblas_sgemm` / `cblas_dgemm`.
pub type Gemm<T> = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    T,
    *const T,
    i32,
    *const T,
    i32,
    T,
    *mut T,
    i32,
);

/// A system library's matrix products, for callers other than ndarray (Ember's fused kernels).
pub struct Products {
    pub sgemm: Gemm<f32>,
    pub dgemm: Gemm<f64>,
    /// The processor core the library's kernels were chosen for (OpenBLAS: `Zen`, `SkylakeX`,
    /// `Prescott` for a processor newer than it knows), or its name.
    pub core: String,
}

/// The system library's products; `None` for the fallback (the fused kernels' own engine is
/// faster than it).
pub fn products() -> Option<Products> {
    system::products()
}

#[cfg(not(ember_blas = "fallback"))]
mod system {
    use std::ffi::c_int;

    use super::{Gemm, Products};

    unsafe extern "C" {
        fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn cblas_dgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f64,
            a: *const f64,
            lda: c_int,
            b: *const f64,
            ldb: c_int,
            beta: f64,
            c: *mut f64,
            ldc: c_int,
        );
    }

    pub fn products() -> Option<Products> {
        Some(Products {
            sgemm: cblas_sgemm as Gemm<f32>,
            dgemm: cblas_dgemm as Gemm<f64>,
            core: super::openblas::core().unwrap_or_else(|| "Accelerate".into()),
        })
    }
}

#[cfg(ember_blas = "fallback")]
mod system {
    pub fn products() -> Option<super::Products> {
        None
    }
}

#[cfg(ember_blas = "openblas")]
mod openblas {
    use std::ffi::{CStr, c_char, c_int};

    unsafe extern "C" {
        fn openblas_set_num_threads(n: c_int);
        fn openblas_get_num_threads() -> c_int;
        fn openblas_get_config() -> *const c_char;
        fn openblas_get_corename() -> *const c_char;
    }

    pub fn set_threads(n: usize) -> Option<usize> {
        // SAFETY: plain setters/getters of the library's global thread count.
        unsafe {
            openblas_set_num_threads(n.max(1) as c_int);
            Some(openblas_get_num_threads() as usize)
        }
    }

    pub fn config() -> String {
        // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
        unsafe { CStr::from_ptr(openblas_get_config()) }
            .to_string_lossy()
            .into_owned()
    }

    /// The core whose kernels OpenBLAS chose (`Zen`, `Haswell`, `Prescott`...).
    pub fn core() -> Option<String> {
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(openblas_get_corename()) };
        Some(name.to_string_lossy().into_owned())
    }
}

#[cfg(not(ember_blas = "openblas"))]
mod openblas {
    pub fn set_threads(_: usize) -> Option<usize> {
        None
    }

    pub fn config() -> String {
        String::new()
    }

    #[allow(dead_code)] // only the system library reads it
    pub fn core() -> Option<String> {
        None
    }
}
