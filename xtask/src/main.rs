//! `cargo xtask`: FlushGuard build and packaging tasks.
//!
//! - `cargo xtask package`: build, PE-gate, test-sign and lay out `target/package/`.
//! - `cargo xtask seh-test`: run the driver's SEH copy shim under wine.
//! - `cargo xtask check-pe FILE`: run the PE gate on any image.
//! - `cargo xtask sys-test [--sys PATH]`: load the packaged flushguard.sys into a test
//!   process and drive it through an ABI-level Filter Manager (issue 14).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// FlushGuard build and packaging tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the release driver, check it (PE gate, SEH unwind info), test-sign it and
    /// lay out target/package/ with flushguard.sys, flushguard.inf, the test certificate
    /// and flushctl.exe.
    Package,
    /// Link the driver's SEH copy shim into a console program and run it under wine.
    SehTest,
    /// Load the signed flushguard.sys into this process at a non-preferred base (relocated,
    /// imports bound to an ABI-level ntoskrnl/fltmgr), run every scenario through its
    /// registered callbacks and port, compare with the host fake, and report violations
    /// and leaks. Exits non-zero on any.
    SysTest {
        /// The image (default: target/package/flushguard.sys of this workspace's target
        /// directory, as `cargo xtask package` lays it out).
        #[arg(long)]
        sys: Option<PathBuf>,
        /// Run only this scenario, in this process (used for the per-scenario child
        /// processes).
        #[arg(long)]
        scenario: Option<String>,
        /// With --scenario: `SITE` or `SITE#N` makes the first (or the N-th, from 0)
        /// call of this Filter Manager call site fail (the host fake's call-site names,
        /// e.g. GetFileNameInformation).
        #[arg(long, requires = "scenario")]
        inject: Option<String>,
        /// Also print the driver's DbgPrintEx output.
        #[arg(long)]
        verbose: bool,
    },
    /// Run the PE gate on an image (machine, subsystem, entry point, imports).
    CheckPe {
        /// The image to check (e.g. target/package/flushguard.sys).
        image: PathBuf,
    },
}

/// `cargo xtask sys-test`: all scenarios (each in a child process running this very
/// executable with `--scenario`), or one scenario in this process.
fn sys_test(
    sys: Option<PathBuf>,
    scenario: Option<String>,
    inject: Option<String>,
    verbose: bool,
) -> anyhow::Result<()> {
    let sys = match sys {
        Some(sys) => sys,
        None => xtask::build::metadata()?
            .target_directory
            .as_std_path()
            .join("package")
            .join(xtask::package::PACKAGED_SYS),
    };
    let passed = match scenario {
        Some(name) => flushguard_sys_test::run_child(&sys, &name, inject.as_deref())?,
        None => {
            let exe = std::env::current_exe()?;
            flushguard_sys_test::run_all(&sys, &exe, &["sys-test"], verbose)?
        }
    };
    if !passed {
        anyhow::bail!("sys-test: violations found (see above)");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Package => xtask::package::package().map(|_| ()),
        Task::SehTest => xtask::package::seh_test(),
        Task::CheckPe { image } => xtask::package::gate(&image).map(|_| ()),
        Task::SysTest {
            sys,
            scenario,
            inject,
            verbose,
        } => sys_test(sys, scenario, inject, verbose),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
