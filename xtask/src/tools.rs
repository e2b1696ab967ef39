//! Running external tools (cargo, rust-lld, clang, llvm-*, openssl, osslsigncode, wine)
//! with the command line printed first and a clear error when a tool is missing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// The rustup target of the kernel driver.
pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";
/// The target of the runnable flushctl.exe (mingw-w64).
pub const CLI_TARGET: &str = "x86_64-pc-windows-gnu";

/// Prints a step banner (what is about to happen and why).
pub fn step(text: &str) {
    println!("==> {text}");
}

/// Renders `command` as a shell-like line for the log.
fn render(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Spawns `command` with captured output; a missing program becomes an error naming the
/// setup script.
fn spawn_capture(command: &mut Command) -> Result<Output> {
    println!("+ {}", render(command));
    command.stdin(Stdio::null());
    command.output().map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{}` is not installed (run `bash scripts/setup.sh`)",
                command.get_program().to_string_lossy()
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot run {}", render(command)))
        }
    })
}

/// Runs `command`, returning its output; fails (with stdout and stderr) on a non-zero
/// exit status.
///
/// # Errors
/// Missing program, spawn failure, or non-zero exit.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = spawn_capture(command)?;
    if !output.status.success() {
        bail!(
            "{} failed with {}\n--- stdout ---\n{}--- stderr ---\n{}",
            render(command),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Runs `command`, returning its output whatever the exit status.
///
/// # Errors
/// Missing program or spawn failure.
pub fn run_unchecked(command: &mut Command) -> Result<Output> {
    spawn_capture(command)
}

/// A `Command` for `program` with `args`.
pub fn cmd<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// The cargo that runs us (`$CARGO`), or `cargo`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The `rust-lld` shipped with the active Rust toolchain
/// (`<sysroot>/lib/rustlib/<host>/bin/rust-lld`).
///
/// # Errors
/// `rustc` cannot be run, or the toolchain has no rust-lld.
pub fn rust_lld() -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = run(&mut cmd(&rustc, ["--print", "sysroot"]))?;
    let version = run(&mut cmd(&rustc, ["-vV"]))?;
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host line")?;
    let path = Path::new(String::from_utf8_lossy(&sysroot.stdout).trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/rust-lld");
    if !path.is_file() {
        bail!("rust-lld not found at {}", path.display());
    }
    Ok(path)
}
