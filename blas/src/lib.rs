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

#[cfg(ember_blas = "openblas")]
mod openblas {
    use std::ffi::{CStr, c_char, c_int};

    unsafe extern "C" {
        fn openblas_set_num_threads(n: c_int);
        fn openblas_get_num_threads() -> c_int;
        fn openblas_get_config() -> *const c_char;
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
}

#[cfg(not(ember_blas = "openblas"))]
mod openblas {
    pub fn set_threads(_: usize) -> Option<usize> {
        None
    }

    pub fn config() -> String {
        String::new()
    }
}
