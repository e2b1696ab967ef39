//! Build script of the `flushguard` driver package (DESIGN.md section 3).
//!
//! - Host targets (Linux, the CLI's targets): nothing; the driver crate is empty there.
//! - `x86_64-pc-windows-msvc` (the kernel driver):
//!   - compiles the SEH copy shim `driver/seh/seh_copy.c` into the static library
//!     `seh_shim` with the `cc` crate (on a Linux host: `clang` + `llvm-lib`; cc adds
//!     `--target=x86_64-pc-windows-msvc` itself);
//!   - emits the kernel-driver link arguments: on a Windows host through
//!     `wdk_build::configure_wdk_binary_build()`, on any other host for rust-lld
//!     (`/DRIVER /SUBSYSTEM:NATIVE /ENTRY:DriverEntry /NODEFAULTLIB ...`);
//!   - sets `--cfg flushguard_kernel`, under which all kernel code of `driver/src` compiles.

use std::env;

/// The C source of the SEH copy shim, relative to the package root.
const SEH_SHIM_SOURCE: &str = "driver/seh/seh_copy.c";

/// Linker arguments for a kernel-mode driver image, in lld-link / link.exe syntax.
///
/// `/DRIVER` marks the image as a driver (and implies the WDM/NATIVE conventions),
/// `/SUBSYSTEM:NATIVE` (IMAGE_SUBSYSTEM_NATIVE) is what the kernel loader requires,
/// `/ENTRY:DriverEntry` names the routine the I/O manager calls, `/NODEFAULTLIB` keeps any
/// user-mode CRT out, `/RELEASE` writes the PE checksum, `/INTEGRITYCHECK` sets
/// IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY (signature checked at load), `/OPT:REF,ICF`
/// drops unreferenced and folds identical functions.
#[cfg(not(windows))]
const KERNEL_LINK_ARGS: &[&str] = &[
    "/DRIVER",
    "/SUBSYSTEM:NATIVE,10.00",
    "/ENTRY:DriverEntry",
    "/NODEFAULTLIB",
    "/RELEASE",
    "/INTEGRITYCHECK",
    "/OPT:REF,ICF",
    // Keep both SEH shim routines even while one is unused, so that the unwind-info
    // check of `cargo xtask package` always has both to inspect.
    "/INCLUDE:fg_copy_from_user",
    "/INCLUDE:fg_copy_to_user",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SEH_SHIM_SOURCE}");
    println!("cargo::rustc-check-cfg=cfg(flushguard_kernel)");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "windows" || target_env != "msvc" {
        // Host and CLI targets: the driver crate compiles to an empty library.
        return;
    }
    println!("cargo:rustc-cfg=flushguard_kernel");

    build_seh_shim();
    configure_link();
}

/// Compiles the SEH shim into `OUT_DIR/seh_shim.lib` and links it into the driver.
fn build_seh_shim() {
    let mut build = cc::Build::new();
    build
        .file(SEH_SHIM_SOURCE)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true);
    if !cfg!(windows) {
        build.compiler("clang").archiver("llvm-lib");
        // Kernel code: no stack-protector cookie (there is no __security_cookie runtime).
        build.flag("-fno-stack-protector");
    } else {
        // cl.exe: kernel-mode code generation, no /GS cookie.
        build.flag("/kernel").flag("/GS-");
    }
    build.compile("seh_shim");
}

/// Emits the link arguments that turn the cdylib into a `.sys` image.
#[cfg(windows)]
fn configure_link() {
    if let Err(error) = wdk_build::configure_wdk_binary_build() {
        panic!("wdk_build::configure_wdk_binary_build failed: {error:?}");
    }
}

/// Emits the link arguments that turn the cdylib into a `.sys` image (rust-lld).
#[cfg(not(windows))]
fn configure_link() {
    for arg in KERNEL_LINK_ARGS {
        println!("cargo:rustc-cdylib-link-arg={arg}");
    }
    // A linker map (symbol -> RVA) for `cargo xtask package`, which uses it to find the
    // shim routines in the image and check their unwind info.
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    println!("cargo:rustc-cdylib-link-arg=/MAP:{out_dir}/flushguard.map");
}
