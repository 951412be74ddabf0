//! Decides, at build time, where the cblas symbols that ndarray calls come from.
//!
//! A user on a fresh machine must never meet a link error, so the system library is used only
//! when it is actually there: Accelerate on macOS, OpenBLAS on other systems when pkg-config or
//! a look in the usual library folders finds it. Otherwise the crate compiles its own pure-Rust
//! cblas functions and says so. `EMBER_BLAS=openblas|accelerate|none` overrides the probe.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!(
        "cargo::rustc-check-cfg=cfg(ember_blas, values(\"openblas\", \"accelerate\", \"fallback\"))"
    );
    println!("cargo::rerun-if-env-changed=EMBER_BLAS");
    println!("cargo::rerun-if-env-changed=OPENBLAS_LIB_DIR");
    println!("cargo::rerun-if-changed=build.rs");
    // Probe again when a library folder changes (installing or removing OpenBLAS adds or
    // removes an entry, which changes the folder's time): a build after `apt-get install
    // libopenblas-dev` switches from the fallback to OpenBLAS without `cargo clean`.
    // Cargo scans a watched folder recursively on every build, so on multiarch systems
    // (Debian, Ubuntu) the 70,000 entries under /usr/lib are left out for the arch folder.
    let dirs: Vec<PathBuf> = library_dirs()
        .into_iter()
        .filter(|dir| dir.is_dir())
        .collect();
    let multiarch = dirs.iter().any(|dir| dir.ends_with("-linux-gnu"));
    for dir in &dirs {
        if !(multiarch && dir.as_path() == Path::new("/usr/lib")) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let request = env::var("EMBER_BLAS").unwrap_or_else(|_| "auto".into());
    let engine = match request.as_str() {
        "none" | "fallback" => "fallback",
        "accelerate" => link_accelerate(),
        "openblas" => match find_openblas() {
            Some(dir) => link_openblas(dir),
            None => panic!(
                "EMBER_BLAS=openblas but no OpenBLAS library was found: install it \
                 (Debian/Ubuntu: apt-get install libopenblas-dev; Fedora: dnf install \
                 openblas-devel; macOS: brew install openblas) or set OPENBLAS_LIB_DIR"
            ),
        },
        "auto" | "" if target_os == "macos" || target_os == "ios" => link_accelerate(),
        "auto" | "" => find_openblas().map(link_openblas).unwrap_or("fallback"),
        other => panic!("EMBER_BLAS={other}: expected one of auto, openblas, accelerate, none"),
    };
    if engine == "fallback" && request != "none" && request != "fallback" {
        println!(
            "cargo::warning=ember-blas: no system OpenBLAS found, matmuls use the pure-Rust \
             fallback (several times slower). Install libopenblas-dev (Debian/Ubuntu) or \
             openblas-devel (Fedora) and rebuild for the fast path."
        );
    }
    println!("cargo::rustc-cfg=ember_blas=\"{engine}\"");
}

fn link_accelerate() -> &'static str {
    println!("cargo::rustc-link-lib=framework=Accelerate");
    "accelerate"
}

fn link_openblas(dir: Option<PathBuf>) -> &'static str {
    if let Some(dir) = dir {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    println!("cargo::rustc-link-lib=openblas");
    "openblas"
}

/// `Some(None)`: found through the linker's default search path; `Some(Some(dir))`: found in `dir`.
fn find_openblas() -> Option<Option<PathBuf>> {
    if let Ok(dir) = env::var("OPENBLAS_LIB_DIR") {
        return has_openblas(Path::new(&dir)).then(|| Some(PathBuf::from(dir)));
    }
    if let Some(dir) = pkg_config_libdir() {
        return Some(Some(dir));
    }
    library_dirs()
        .into_iter()
        .find(|dir| has_openblas(dir))
        .map(Some)
}

/// Where OpenBLAS is looked for: `OPENBLAS_LIB_DIR` when set, else the usual library folders.
fn library_dirs() -> Vec<PathBuf> {
    if let Ok(dir) = env::var("OPENBLAS_LIB_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    [
        format!("/usr/lib/{arch}-linux-gnu"),
        "/usr/lib64".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
        "/opt/homebrew/opt/openblas/lib".into(),
        "/usr/local/opt/openblas/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

fn pkg_config_libdir() -> Option<PathBuf> {
    let out = std::process::Command::new("pkg-config")
        .args(["--variable=libdir", "openblas"])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && has_openblas(&dir)).then_some(dir)
}

fn has_openblas(dir: &Path) -> bool {
    ["libopenblas.so", "libopenblas.dylib", "libopenblas.a"]
        .iter()
        .any(|name| dir.join(name).exists())
}
