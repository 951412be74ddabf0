//! Backend selection at run time among those compiled in, and the CPU thread policy.
//!
//! A backend is a cargo feature (`ndarray` by default, `flex`, `wgpu`, `cuda`); the model code
//! never changes, only the `Device` it is given. Asking for a backend this build lacks names the
//! feature that adds it.

use std::fmt;

use burn::tensor::Device;
use ember_kernels::cpu::Isa;

use crate::Error;

/// The backends Ember knows, with the cargo feature that compiles each in.
pub const BACKENDS: [(&str, &str); 4] = [
    ("ndarray", "ndarray"),
    ("flex", "flex"),
    ("wgpu", "wgpu"),
    ("cuda", "cuda"),
];

/// The `--device` help of every command.
pub const DEVICE_HELP: &str = "Backend: auto, ndarray, flex, wgpu, cuda or cuda:N";

/// The `--threads` help of every command.
pub const THREADS_HELP: &str = "CPU worker threads, 0 = one per core";

/// A device chosen by name, with what the start-up banner says about it.
pub struct Selected {
    pub device: Device,
    pub name: String,
    /// The matmul engine, for the CPU backends.
    pub matmul: Option<String>,
    /// The instruction set of the fused kernels (`AVX2+FMA`), for the CPU backends.
    pub kernels: Option<&'static str>,
    /// The graphics adapter, for wgpu.
    pub adapter: Option<String>,
    pub threads: Threads,
}

impl Selected {
    /// Runs `f` where this backend's work is cheapest to start: on a CPU backend, on one of
    /// rayon's worker threads. Every parallel kernel `f` starts is then a fork-join within the
    /// pool; from an outside thread each one is handed to the pool while the caller sleeps until
    /// it is done, two thread switches per kernel (`ember bench`: small +4%, medium +6%, and
    /// `--threads 1` +9%). GPU backends run `f` on the calling thread, which keeps their device
    /// work on one thread.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.is_cpu() {
            rayon::scope(|_| f())
        } else {
            f()
        }
    }

    /// Whether the backend computes on the CPU (on rayon's pool).
    pub fn is_cpu(&self) -> bool {
        matches!(self.name.as_str(), "ndarray" | "flex")
    }
}

/// Worker threads as configured: rayon's pool (the CPU backends' parallel loops) and the BLAS
/// library's own pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    pub rayon: usize,
    pub blas: Option<usize>,
}

impl fmt::Display for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}", self.name)?;
        if let Some(kernels) = self.kernels {
            write!(f, " | kernels {kernels}")?;
        }
        if let Some(matmul) = &self.matmul {
            write!(f, " | matmul {matmul}")?;
        }
        if let Some(adapter) = &self.adapter {
            write!(f, " | adapter {adapter}")?;
        }
        write!(f, " | threads {} rayon", self.threads.rayon)?;
        if let Some(blas) = self.threads.blas {
            write!(f, ", {blas} BLAS")?;
        }
        Ok(())
    }
}

/// Names of the backends compiled into this build, in `auto` order (CPU first: the default
/// build must train with no GPU present).
pub fn compiled() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    names
}

/// Picks the device for `spec` (`auto`, `ndarray`, `flex`, `wgpu`, `cuda` or `cuda:N`) and sets
/// the CPU thread policy (`threads` = 0: one per core).
pub fn select(spec: &str, threads: usize) -> Result<Selected, Error> {
    let (kind, index) = match spec.split_once(':') {
        Some((kind, index)) => {
            let index = index.parse::<usize>().map_err(|_| {
                Error::Backend(format!("--device {spec}: `{index}` is not a device index"))
            })?;
            (kind, Some(index))
        }
        None => (spec, None),
    };
    let kind = match kind {
        "auto" => *compiled().first().ok_or_else(|| {
            Error::Backend(
                "this build has no backend: rebuild with a backend feature (ndarray, flex, wgpu, cuda)"
                    .into(),
            )
        })?,
        other => other,
    };
    if index.is_some() && kind != "cuda" {
        return Err(Error::Backend(format!(
            "--device {spec}: only cuda takes a device index"
        )));
    }
    let threads = set_threads(threads);
    // Asked before the device exists: Burn's wgpu runtime panics when there is no adapter.
    let adapter = match kind {
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            Some(wgpu_adapter().map_err(|why| Error::Backend(format!("--device {spec}: {why}")))?)
        }
        _ => None,
    };
    let (device, matmul) = match kind {
        // Deprecated upstream in favour of flex; kept as the default because with a system BLAS
        // it is the fastest CPU backend here (BENCHMARKS.md).
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => {
            register_blas()?;
            (
                Device::ndarray(),
                Some(cpu_matmul(&ember_blas::engine().to_string())),
            )
        }
        #[cfg(feature = "flex")]
        "flex" => (Device::flex(), Some(cpu_matmul("gemm crate"))),
        #[cfg(feature = "wgpu")]
        "wgpu" => (Device::wgpu(burn::tensor::DeviceKind::default()), None),
        #[cfg(feature = "cuda")]
        "cuda" => (Device::cuda(index.unwrap_or(0)), None),
        other => {
            return Err(Error::Backend(
                match BACKENDS.iter().find(|(name, _)| *name == other) {
                    Some((_, feature)) => format!(
                        "--device {spec}: the {other} backend is not compiled into this build; \
                     rebuild with `--features {feature}` (compiled in: {})",
                        compiled().join(", ")
                    ),
                    None => format!(
                        "--device {spec}: unknown backend, expected auto, {}",
                        BACKENDS.map(|(name, _)| name).join(", ")
                    ),
                },
            ));
        }
    };
    let name = match index {
        Some(i) => format!("{kind}:{i}"),
        None => kind.to_string(),
    };
    // The kernels' instruction set (EMBER_SIMD, or the widest the processor has), checked here so
    // that a request the processor cannot run is an error before anything starts.
    let kernels = match matmul {
        Some(_) => Some(Isa::from_env().map_err(Error::Backend)?.describe()),
        None => None,
    };
    Ok(Selected {
        device,
        name,
        matmul,
        kernels,
        adapter,
        threads,
    })
}

/// The graphics adapter Burn's wgpu runtime will find, described, or what is missing and what to
/// do about it.
///
/// Burn starts its wgpu runtime on a thread of its own and panics there when no adapter exists
/// ("Unable to acquire wgpu device: AdapterUnavailable"), and again in the caller ("RecvError"),
/// so the question is asked here first, the way cubecl-wgpu asks it: every adapter of every
/// graphics API wgpu was built with, a GPU preferred to a software one.
/// `WGPU_BACKEND` (e.g. `vulkan`) limits the APIs asked, as it does for wgpu itself.
#[cfg(feature = "wgpu")]
fn wgpu_adapter() -> Result<String, String> {
    // The graphics APIs in cubecl's order, stopping at the first that has an adapter: asking
    // OpenGL when Vulkan has answered only makes Mesa's EGL complain about XDG_RUNTIME_DIR.
    let apis = [
        wgpu::Backends::VULKAN,
        wgpu::Backends::METAL,
        wgpu::Backends::DX12,
        wgpu::Backends::GL,
    ];
    let descriptor = || wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    let wanted = descriptor().backends;
    let infos: Vec<wgpu::AdapterInfo> = apis
        .into_iter()
        .filter(|api| wanted.contains(*api))
        .map(|api| {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: api,
                ..descriptor()
            });
            let adapters = pollster::block_on(instance.enumerate_adapters(api));
            adapters
                .iter()
                .map(wgpu::Adapter::get_info)
                .collect::<Vec<_>>()
        })
        .find(|infos| !infos.is_empty())
        .unwrap_or_default();
    let best = infos
        .iter()
        .find(|i| i.device_type != wgpu::DeviceType::Cpu)
        .or_else(|| infos.first());
    match best {
        Some(info) => Ok(format!(
            "{} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        )),
        None => Err(no_adapter_advice()),
    }
}

/// Why no adapter was found, as far as this machine tells, and what to install or use instead.
#[cfg(feature = "wgpu")]
fn no_adapter_advice() -> String {
    let instead = format!(
        "or train on the CPU with --device {}",
        compiled()
            .first()
            .copied()
            .filter(|&n| n != "wgpu")
            .unwrap_or("ndarray")
    );
    if cfg!(target_os = "macos") {
        return format!("no Metal adapter found; wgpu needs a Mac with Metal support, {instead}");
    }
    if !cfg!(unix) {
        return format!(
            "no DirectX 12 or Vulkan adapter found; install your GPU's driver, {instead}"
        );
    }
    if vulkan_loader_present() {
        format!(
            "no graphics adapter found: the Vulkan loader is installed but no Vulkan driver is \
             (install your GPU's driver, e.g. NVIDIA's, or Mesa's: `apt install mesa-vulkan-drivers`, \
             which includes lavapipe, a Vulkan driver that runs on the CPU), {instead}"
        )
    } else {
        format!(
            "no graphics adapter found: there is no Vulkan loader (libvulkan.so.1) on this machine \
             (`apt install libvulkan1 mesa-vulkan-drivers`, or your GPU's driver), {instead}"
        )
    }
}

/// Whether the Vulkan loader library can be loaded (Linux and other Unix systems).
#[cfg(all(feature = "wgpu", unix))]
fn vulkan_loader_present() -> bool {
    // SAFETY: dlopen with a constant name only loads the library (or fails); the handle is
    // closed at once.
    unsafe {
        let handle = libc::dlopen(
            c"libvulkan.so.1".as_ptr(),
            libc::RTLD_LAZY | libc::RTLD_LOCAL,
        );
        if !handle.is_null() {
            libc::dlclose(handle);
        }
        !handle.is_null()
    }
}

#[cfg(all(feature = "wgpu", not(unix)))]
fn vulkan_loader_present() -> bool {
    false
}

/// OpenBLAS cores whose kernels beat the gemm crate on the model's products, measured with
/// `cargo bench --bench matmul_engines` (BENCHMARKS.md): Zen on an AMD EPYC (Zen 3), by 5-60%.
/// On an Intel Xeon (AVX-512) the gemm crate won even against OpenBLAS's SkylakeX kernels.
#[cfg(feature = "ndarray")]
const BLAS_FASTER_ON: [&str; 1] = ["Zen"];

/// Lets the fused kernels' products run on the system BLAS the build linked, preferred where it
/// was measured faster (`BLAS_FASTER_ON`) or where `EMBER_MATMUL=blas` asks for it
/// (`EMBER_MATMUL=gemm` keeps the gemm crate).
#[cfg(feature = "ndarray")]
fn register_blas() -> Result<(), Error> {
    let Some(products) = ember_blas::products() else {
        return Ok(());
    };
    let preferred = match std::env::var("EMBER_MATMUL").as_deref() {
        Ok("blas") => true,
        Ok("gemm") => false,
        Ok(other) => {
            return Err(Error::Backend(format!(
                "EMBER_MATMUL={other}: expected blas or gemm"
            )));
        }
        Err(_) => BLAS_FASTER_ON.contains(&products.core.as_str()),
    };
    ember_kernels::cpu::gemm::use_blas(ember_kernels::cpu::gemm::Blas {
        name: format!(
            "{} ({} kernels)",
            ember_blas::engine().short_name(),
            products.core
        ),
        sgemm: products.sgemm,
        dgemm: products.dgemm,
        set_threads: |n| {
            ember_blas::set_threads(n);
        },
        preferred,
    });
    Ok(())
}

/// The CPU backends' matmul engines: Ember's fused Linear layers, and the backend's own for the
/// rest (attention and LayerNorm have fused kernels, so in training that is nothing).
#[cfg(any(feature = "ndarray", feature = "flex"))]
fn cpu_matmul(backend_engine: &str) -> String {
    format!(
        "Linear {}, other {backend_engine}",
        ember_kernels::cpu::gemm::engine()
    )
}

/// Sizes rayon's global pool once (later calls keep the first size) and the BLAS pool.
///
/// The policy: rayon gets every thread, BLAS one. Burn's ndarray backend runs the independent
/// matmuls of a batched product (one per sequence and head) on rayon threads, each calling
/// BLAS; a threaded BLAS inside each would ask for cores² threads and thrash. Measured in
/// BENCHMARKS.md. `OPENBLAS_NUM_THREADS` in the environment overrides the BLAS side.
fn set_threads(requested: usize) -> Threads {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rayon = if requested == 0 { cores } else { requested };
    // Fails only if the pool already exists (a second run in one process); keep that one.
    // Training runs on the pool's workers: subnormals there cost a microcode assist each.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon)
        .start_handler(|_| ember_kernels::cpu::flush_subnormals_on_this_thread())
        .build_global();
    ember_kernels::cpu::flush_subnormals_on_this_thread();
    let blas = match std::env::var("OPENBLAS_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => blas_threads(n),
        None => blas_threads(1),
    };
    Threads {
        rayon: rayon::current_num_threads(),
        blas,
    }
}

/// Sets the BLAS library's thread count; `None` where the build has no threaded BLAS.
#[cfg(feature = "ndarray")]
pub fn blas_threads(n: usize) -> Option<usize> {
    ember_blas::set_threads(n)
}

/// Sets the BLAS library's thread count; `None` where the build has no threaded BLAS.
#[cfg(not(feature = "ndarray"))]
pub fn blas_threads(_: usize) -> Option<usize> {
    None
}

/// How to get a faster matmul engine, when there is one to get.
pub fn matmul_advice() -> Option<&'static str> {
    #[cfg(feature = "ndarray")]
    {
        ember_blas::engine().advice()
    }
    #[cfg(not(feature = "ndarray"))]
    {
        None
    }
}
