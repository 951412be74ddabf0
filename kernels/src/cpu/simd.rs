//! Runtime choice of the instruction set the kernels' loops are compiled for.
//!
//! The kernels are plain loops over slices. [`vectorized`] runs one inside a function compiled
//! for AVX-512 or AVX2 + FMA, so that LLVM vectorizes it with the wide registers, or as compiled
//! for the baseline target. This is what a portable-SIMD crate would do, in a few dozen lines
//! that build in no time (Burn's own `simd` features cost over 30 CPU-minutes of build here).
//!
//! The instruction set is the widest the processor has ([`Isa::best`]), or the one named by
//! `EMBER_SIMD=avx512|avx2|scalar`, so that a machine with AVX-512 tests (and measures) the AVX2
//! and scalar code as well; CI runs the fused-op tests under each. A path runs only where the
//! processor has every feature it is compiled for. The gemm crate chooses its own kernels from
//! the processor and is not governed by `EMBER_SIMD`.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set the kernels carry code for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + VL with AVX2 and FMA: 16 `f32` per register.
    Avx512,
    /// AVX2 + FMA: 8 `f32` per register (AMD Zen 1-4 but Zen 4's AVX-512, most laptops).
    Avx2,
    /// The baseline target (SSE2 on x86-64), and every processor that is not x86-64.
    Scalar,
}

/// The features each x86 path is compiled with, all of which the processor must have.
#[cfg(target_arch = "x86_64")]
const AVX512_FEATURES: [&str; 4] = ["avx512f", "avx512vl", "avx2", "fma"];
#[cfg(target_arch = "x86_64")]
const AVX2_FEATURES: [&str; 2] = ["avx2", "fma"];

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Scalar];

    /// The name `EMBER_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    /// What the start-up banner says.
    pub fn describe(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Scalar => "scalar",
        }
    }

    /// Whether this processor has every feature the path is compiled for.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => AVX512_FEATURES.iter().all(|f| has_feature(f)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => AVX2_FEATURES.iter().all(|f| has_feature(f)),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest instruction set this processor runs.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.supported())
            .unwrap_or(Isa::Scalar)
    }

    /// The instruction set named `name` (`EMBER_SIMD`'s value), if this processor runs it.
    pub fn parse(name: &str) -> Result<Isa, String> {
        let names = Isa::ALL.map(Isa::name).join(", ");
        let isa = Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name)
            .ok_or_else(|| format!("EMBER_SIMD={name}: expected one of {names}"))?;
        if !isa.supported() {
            let runs: Vec<&str> = Isa::ALL
                .into_iter()
                .filter(|i| i.supported())
                .map(Isa::name)
                .collect();
            return Err(format!(
                "EMBER_SIMD={name}: this processor lacks {}; it runs {}",
                isa.missing().join(", "),
                runs.join(", ")
            ));
        }
        Ok(isa)
    }

    /// The instruction set the kernels run on: `EMBER_SIMD` if set, else [`Isa::best`]. Decided
    /// on the first call.
    ///
    /// # Panics
    /// If `EMBER_SIMD` names no instruction set this processor runs (the binaries check it first,
    /// with [`Isa::from_env`], and report it as an error).
    pub fn active() -> Isa {
        match ACTIVE.load(Ordering::Relaxed) {
            0 => {
                let isa = Isa::from_env().unwrap_or_else(|why| panic!("{why}"));
                ACTIVE.store(isa as u8 + 1, Ordering::Relaxed);
                isa
            }
            n => Isa::ALL[usize::from(n - 1)],
        }
    }

    /// `EMBER_SIMD`'s choice, or the best when it is not set.
    pub fn from_env() -> Result<Isa, String> {
        match std::env::var("EMBER_SIMD") {
            Ok(name) => Isa::parse(&name),
            Err(_) => Ok(Isa::best()),
        }
    }

    /// The features of this path the processor lacks.
    fn missing(self) -> Vec<&'static str> {
        match self {
            Isa::Scalar => Vec::new(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => AVX512_FEATURES
                .into_iter()
                .filter(|f| !has_feature(f))
                .collect(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => AVX2_FEATURES
                .into_iter()
                .filter(|f| !has_feature(f))
                .collect(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => vec!["x86-64"],
        }
    }
}

/// [`Isa::active`], as `ALL`'s index + 1 (0: not decided yet).
static ACTIVE: AtomicU8 = AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
fn has_feature(feature: &str) -> bool {
    match feature {
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        other => unreachable!("no check for {other}"),
    }
}

/// Runs `f`, inlined into a function compiled for the [active](Isa::active) instruction set.
/// `f` must be `#[inline(always)]` (closures: `#[inline(always)] || ...`) and so must what it
/// calls in its hot loop, or it is compiled for the baseline target only.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    match Isa::active() {
        // SAFETY: `active` returns a path only when the processor has every feature it is
        // compiled for (`Isa::supported`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    // The feature lists are `super::AVX512_FEATURES` and `AVX2_FEATURES`.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_runs_and_scalar_always_does() {
        assert!(Isa::best().supported());
        assert!(Isa::Scalar.supported());
        assert_eq!(Isa::parse("scalar"), Ok(Isa::Scalar));
        let err = Isa::parse("sse9").unwrap_err();
        assert_eq!(err, "EMBER_SIMD=sse9: expected one of avx512, avx2, scalar");
    }

    #[test]
    fn an_instruction_set_the_processor_lacks_is_refused_with_what_it_lacks() {
        for isa in Isa::ALL.into_iter().filter(|i| !i.supported()) {
            let err = Isa::parse(isa.name()).unwrap_err();
            assert!(err.contains("this processor lacks"), "{err}");
        }
    }

    /// CI runs the fused-op tests once per instruction set with `EMBER_SIMD` set: this makes a
    /// run that asked for one the processor lacks fail instead of silently testing another.
    #[test]
    fn ember_simd_is_the_instruction_set_the_kernels_run() {
        if let Ok(name) = std::env::var("EMBER_SIMD") {
            assert_eq!(Isa::active().name(), name);
        }
    }
}
