//! The SEH shim test: links the driver's own `seh_shim.lib` into a tiny CRT-less console
//! program (`xtask/seh-harness/harness.c`) and runs it under wine (DESIGN.md section 3).
//!
//! The program is compiled by clang for `x86_64-pc-windows-msvc`, import libraries for
//! `kernel32.dll` and `ntdll.dll` (`__C_specific_handler`, which the kernel gets from
//! ntoskrnl.exe) are made by `llvm-dlltool`, and `rust-lld` links everything. Under wine,
//! copying from or to address 0x10, to read-only pages and across a no-access page must
//! return STATUS_ACCESS_VIOLATION (0xC0000005) and valid copies must succeed. If someone
//! inlines the copy back into the `__try`, clang drops the handler and the program dies
//! with an unhandled exception instead.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::tools::{run, run_unchecked, rust_lld, DRIVER_TARGET};

/// Source of the harness program.
pub const HARNESS_SOURCE: &str = include_str!("../seh-harness/harness.c");

/// Case lines the harness must print as `PASS <case>`.
pub const EXPECTED_CASES: &[&str] = &[
    "copy_from_user(0x10) status=0xC0000005",
    "copy_to_user(0x10) status=0xC0000005",
    "copy_to_user(read-only page) status=0xC0000005",
    "copy_from_user(valid) status=0x00000000",
    "copy_to_user(valid) status=0x00000000",
    "copy_from_user(straddling no-access page) status=0xC0000005",
    "copy_to_user(straddling no-access page) status=0xC0000005",
    "copy_to_user(page made read-only) status=0xC0000005",
];

/// Builds the harness against `seh_shim_lib` in `work` and returns the .exe path.
///
/// # Errors
/// A tool is missing or fails.
pub fn build_harness(seh_shim_lib: &Path, work: &Path) -> Result<std::path::PathBuf> {
    fs::create_dir_all(work)?;
    let source = work.join("harness.c");
    fs::write(&source, HARNESS_SOURCE)?;
    let object = work.join("harness.obj");
    let mut compile = Command::new("clang");
    compile
        .arg(format!("--target={DRIVER_TARGET}"))
        .args(["-O2", "-fno-stack-protector", "-Wall", "-Werror", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object);
    run(&mut compile)?;

    let mut libraries = Vec::new();
    for (dll, exports) in [
        (
            "kernel32.dll",
            &[
                "GetStdHandle",
                "WriteFile",
                "ExitProcess",
                "VirtualAlloc",
                "VirtualProtect",
            ][..],
        ),
        ("ntdll.dll", &["__C_specific_handler"][..]),
    ] {
        let stem = dll.trim_end_matches(".dll");
        let def = work.join(format!("{stem}.def"));
        let lib = work.join(format!("{stem}.lib"));
        fs::write(
            &def,
            format!("LIBRARY {dll}\nEXPORTS\n{}\n", exports.join("\n")),
        )?;
        let mut dlltool = Command::new("llvm-dlltool");
        dlltool
            .args(["-m", "i386:x86-64", "-d"])
            .arg(&def)
            .arg("-l")
            .arg(&lib);
        run(&mut dlltool)?;
        libraries.push(lib);
    }

    let exe = work.join("seh_harness.exe");
    let mut link = Command::new(rust_lld()?);
    link.args(["-flavor", "link", "/NOLOGO", "/SUBSYSTEM:CONSOLE"])
        .args(["/ENTRY:harness_main", "/NODEFAULTLIB"])
        .arg(format!("/OUT:{}", exe.display()))
        .arg(&object)
        .arg(seh_shim_lib)
        .args(&libraries);
    run(&mut link)?;
    Ok(exe)
}

/// Runs the harness under wine (prefix in `work/wineprefix`, at most 10 minutes) and
/// checks every expected case passed. Returns the harness output.
///
/// # Errors
/// wine is missing, the program crashed or exited non-zero, or a case is missing.
pub fn run_harness(exe: &Path, work: &Path) -> Result<String> {
    let prefix = work.join("wineprefix");
    let mut wine = Command::new("timeout");
    wine.arg("600")
        .arg("wine")
        .arg(exe)
        .env("WINEPREFIX", &prefix)
        .env("WINEDEBUG", "-all")
        // No Mono/Gecko installer prompts in a fresh prefix.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .env_remove("DISPLAY");
    let output = run_unchecked(&mut wine).context("running the SEH harness under wine")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    if !output.status.success() {
        bail!(
            "SEH harness under wine exited with {} (a crash means the shim's __except \
             handler is missing)\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for case in EXPECTED_CASES {
        let line = format!("PASS {case}");
        if !stdout.lines().any(|printed| printed.trim_end() == line) {
            bail!("SEH harness did not print `{line}`");
        }
    }
    if !stdout.lines().any(|line| line.trim_end() == "ALL PASSED") {
        bail!("SEH harness did not report ALL PASSED");
    }
    Ok(stdout)
}
