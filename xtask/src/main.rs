//! `cargo xtask`: FlushGuard build and packaging tasks.
//!
//! - `cargo xtask package`: build, PE-gate, test-sign and lay out `target/package/`.
//! - `cargo xtask seh-test`: run the driver's SEH copy shim under wine.
//! - `cargo xtask check-pe FILE`: run the PE gate on any image.
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
    /// Run the PE gate on an image (machine, subsystem, entry point, imports).
    CheckPe {
        /// The image to check (e.g. target/package/flushguard.sys).
        image: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Package => xtask::package::package().map(|_| ()),
        Task::SehTest => xtask::package::seh_test(),
        Task::CheckPe { image } => xtask::package::gate(&image).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
