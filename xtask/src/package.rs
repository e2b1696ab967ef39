//! `cargo xtask package` and `cargo xtask seh-test`: the main job of the build pipeline.
//!
//! package: release driver for x86_64-pc-windows-msvc -> PE gate -> unwind check of the
//! SEH shim -> fresh test certificate -> Authenticode test signature -> verification ->
//! flushctl.exe (x86_64-pc-windows-gnu) -> `target/package/`:
//! `flushguard.sys`, `flushguard.inf`, `flushguard-test.cer`, `flushctl.exe`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::{self, DriverBuild};
use crate::pe::{self, PeReport};
use crate::tools::{run, step};
use crate::{seh, sign, unwind};

/// The SEH shim routines whose unwind info must carry `__C_specific_handler`.
pub const SHIM_FUNCTIONS: &[&str] = &["fg_copy_from_user", "fg_copy_to_user"];

/// File names inside `target/package/`.
pub const PACKAGED_SYS: &str = "flushguard.sys";
/// The INF, copied from `inf/flushguard.inf`.
pub const PACKAGED_INF: &str = "flushguard.inf";
/// The test certificate (DER).
pub const PACKAGED_CER: &str = "flushguard-test.cer";
/// The CLI.
pub const PACKAGED_CLI: &str = "flushctl.exe";

/// Prints the import table grouped by DLL.
fn print_imports(report: &PeReport) {
    let mut dlls: Vec<&str> = report.imports.iter().map(|i| i.dll.as_str()).collect();
    dlls.dedup();
    for dll in dlls {
        let symbols: Vec<&str> = report
            .imports_from(dll)
            .map(|import| import.symbol.as_str())
            .collect();
        println!("    {dll} ({}): {}", symbols.len(), symbols.join(", "));
    }
}

/// Runs the PE gate on `path`, printing the result.
///
/// # Errors
/// The gate fails (every violation listed) or the file cannot be read.
pub fn gate(path: &Path) -> Result<PeReport> {
    let image = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report = pe::check_driver_image(&image)
        .map_err(|failure| anyhow::anyhow!("{}: {failure}", path.display()))?;
    println!(
        "    PE32+ machine=0x{:04X} (AMD64) subsystem={} (NATIVE) entry=DriverEntry",
        report.machine, report.subsystem
    );
    print_imports(&report);
    Ok(report)
}

/// Checks the shim's unwind info in the built image, two ways: the structural parse of
/// `.pdata`/`UNWIND_INFO` and `llvm-readobj --unwind`.
///
/// # Errors
/// A shim routine lacks the ntoskrnl `__C_specific_handler`, or the two views disagree.
pub fn check_unwind(driver: &DriverBuild, report: &PeReport) -> Result<()> {
    let image = fs::read(&driver.image)?;
    let base = unwind::image_base(&image)?;
    let map_text = fs::read_to_string(driver.linker_map())
        .with_context(|| format!("reading {}", driver.linker_map().display()))?;
    let map = unwind::LinkerMap::parse(&map_text, base);
    let checks = unwind::check_seh_handlers(&image, report, &map, SHIM_FUNCTIONS)?;
    let readobj = run(Command::new("llvm-readobj")
        .arg("--unwind")
        .arg(&driver.image))?;
    let readobj = String::from_utf8_lossy(&readobj.stdout);
    for check in &checks {
        let start_va = base + u64::from(check.begin);
        let handler_va = base + u64::from(check.handler_rva);
        match unwind::readobj_handler_va(&readobj, start_va) {
            Some(va) if va == handler_va => {}
            other => bail!(
                "llvm-readobj --unwind shows handler {other:X?} for {} at 0x{start_va:X}, \
                 expected 0x{handler_va:X}",
                check.function
            ),
        }
        println!(
            "    {}: RUNTIME_FUNCTION 0x{:X}-0x{:X}, UNW_FLAG_EHANDLER, handler {} \
             (thunk 0x{handler_va:X}), {} scope entr{}",
            check.function,
            check.begin,
            check.end,
            check.handler_import,
            check.scope_count,
            if check.scope_count == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// Builds, checks, signs and lays out the package; returns the package directory.
///
/// # Errors
/// Any step fails; the message names the step and the offending item.
pub fn package() -> Result<PathBuf> {
    let metadata = build::metadata()?;
    let workspace = metadata.workspace_root.as_std_path().to_owned();
    let target_dir = metadata.target_directory.as_std_path().to_owned();
    let package_dir = target_dir.join("package");
    let scratch = target_dir.join("package-scratch");

    step(
        "build flushguard.sys: cargo build --profile kernel --target x86_64-pc-windows-msvc -p flushguard",
    );
    let driver = build::build_driver(&metadata)?;

    step("PE gate: PE32+, AMD64, NATIVE, entry DriverEntry, imports only ntoskrnl.exe/FLTMGR.SYS");
    let report = gate(&driver.image)?;

    step("unwind check: SEH shim routines keep ntoskrnl.exe!__C_specific_handler");
    check_unwind(&driver, &report)?;

    step("fresh self-signed code-signing certificate (openssl) and test signature (osslsigncode)");
    for dir in [&package_dir, &scratch] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir)?;
    }
    let certificate = sign::make_test_certificate(&scratch, PACKAGED_CER)?;
    let signed = package_dir.join(PACKAGED_SYS);
    sign::sign(&driver.image, &signed, &certificate)?;
    fs::copy(&certificate.cer, package_dir.join(PACKAGED_CER))?;
    // The private key must not outlive the signing step.
    fs::remove_dir_all(&scratch)?;

    step(
        "verify: osslsigncode verify against the packaged certificate; PE gate on the signed file",
    );
    fs::create_dir_all(&scratch)?;
    let verification = sign::verify(&signed, &package_dir.join(PACKAGED_CER), &scratch)?;
    for line in verification.lines().filter(|line| {
        line.contains("Signature verification")
            || line.contains("Subject:")
            || line.contains("message digest")
            || line.contains("Number of verified signatures")
    }) {
        println!("    {}", line.trim());
    }
    fs::remove_dir_all(&scratch)?;
    gate(&signed)?;

    step("INF: copy inf/flushguard.inf");
    fs::copy(
        workspace.join("inf").join(PACKAGED_INF),
        package_dir.join(PACKAGED_INF),
    )
    .context("copying inf/flushguard.inf")?;

    step("flushctl.exe: cargo build --release --target x86_64-pc-windows-gnu -p flushctl (mingw-w64)");
    let flushctl = build::build_flushctl(&workspace)?;
    fs::copy(&flushctl, package_dir.join(PACKAGED_CLI))?;

    step(&format!("package ready: {}", package_dir.display()));
    let mut entries: Vec<_> = fs::read_dir(&package_dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        println!(
            "    {:>9} bytes  {}",
            entry.metadata()?.len(),
            entry.file_name().to_string_lossy()
        );
    }
    Ok(package_dir)
}

/// Builds the driver (for its `seh_shim.lib`), links the harness and runs it under wine.
///
/// # Errors
/// Any step fails.
pub fn seh_test() -> Result<()> {
    let metadata = build::metadata()?;
    let work = metadata.target_directory.as_std_path().join("seh-test");
    step("build the driver's SEH shim: cargo build --profile kernel --target x86_64-pc-windows-msvc -p flushguard");
    let driver = build::build_driver(&metadata)?;
    step("link the driver's seh_shim.lib into a CRT-less console program (clang, llvm-dlltool, rust-lld)");
    let exe = seh::build_harness(&driver.seh_shim_lib(), &work)?;
    step("run it under wine: bad addresses must return 0xC0000005, valid copies must succeed");
    seh::run_harness(&exe, &work)?;
    step("unwind check of flushguard.sys: shim routines keep __C_specific_handler");
    let image = fs::read(&driver.image)?;
    let report = pe::inspect(&image)?;
    check_unwind(&driver, &report)?;
    Ok(())
}
