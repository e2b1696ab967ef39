//! Building the driver and flushctl through cargo, reading cargo's JSON messages
//! (`cargo_metadata`) for the produced files instead of guessing paths.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use cargo_metadata::Message;

use crate::tools::{self, cargo, CLI_TARGET, DRIVER_TARGET};

/// What the release driver build produced.
#[derive(Debug, Clone)]
pub struct DriverBuild {
    /// The linked image (`flushguard.dll`, to be shipped as `flushguard.sys`).
    pub image: PathBuf,
    /// The build script's OUT_DIR: `seh_shim.lib` and `flushguard.map` live here.
    pub out_dir: PathBuf,
}

impl DriverBuild {
    /// The static library of the SEH copy shim that was linked into the image.
    pub fn seh_shim_lib(&self) -> PathBuf {
        self.out_dir.join("seh_shim.lib")
    }

    /// The linker map of the image.
    pub fn linker_map(&self) -> PathBuf {
        self.out_dir.join("flushguard.map")
    }
}

/// Workspace metadata (root and target directory).
///
/// # Errors
/// `cargo metadata` fails.
pub fn metadata() -> Result<cargo_metadata::Metadata> {
    cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo())
        .no_deps()
        .exec()
        .context("cargo metadata failed")
}

/// Runs `cargo build` with JSON messages and returns them; diagnostics go to the terminal.
fn cargo_build_json(workspace: &Path, args: &[&str]) -> Result<Vec<Message>> {
    let mut command = tools::cmd(cargo(), args);
    command
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!("+ cargo {}", args.join(" "));
    let mut child = command.spawn().context("cannot run cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let messages = Message::parse_stream(BufReader::new(stdout))
        .collect::<Result<Vec<_>, _>>()
        .context("reading cargo JSON messages")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed with {status}", args.join(" "));
    }
    Ok(messages)
}

/// Builds `flushguard` for `x86_64-pc-windows-msvc` with the `kernel` profile
/// (release, optimised for size: Cargo.toml `[profile.kernel]`).
///
/// # Errors
/// The build fails or produces no image.
pub fn build_driver(metadata: &cargo_metadata::Metadata) -> Result<DriverBuild> {
    let driver_id = metadata
        .workspace_packages()
        .into_iter()
        .find(|package| package.name.as_str() == "flushguard")
        .map(|package| package.id.clone())
        .context("no flushguard package in the workspace")?;
    let messages = cargo_build_json(
        metadata.workspace_root.as_std_path(),
        &[
            "build",
            "--profile",
            "kernel",
            "--target",
            DRIVER_TARGET,
            "--package",
            "flushguard",
        ],
    )?;
    let mut image = None;
    let mut out_dir = None;
    for message in messages {
        match message {
            Message::CompilerArtifact(artifact) if artifact.package_id == driver_id => {
                image = artifact
                    .filenames
                    .iter()
                    .find(|file| file.extension() == Some("dll"))
                    .map(|file| file.clone().into_std_path_buf());
            }
            Message::BuildScriptExecuted(script) if script.package_id == driver_id => {
                out_dir = Some(script.out_dir.into_std_path_buf());
            }
            _ => {}
        }
    }
    Ok(DriverBuild {
        image: image.context("cargo reported no flushguard .dll artifact")?,
        out_dir: out_dir.context("cargo reported no flushguard build-script OUT_DIR")?,
    })
}

/// Builds `flushctl.exe` in release mode for `x86_64-pc-windows-gnu` (mingw-w64).
///
/// # Errors
/// The build fails (reported, never skipped) or produces no executable.
pub fn build_flushctl(workspace: &Path) -> Result<PathBuf> {
    let messages = cargo_build_json(
        workspace,
        &[
            "build",
            "--release",
            "--target",
            CLI_TARGET,
            "--package",
            "flushctl",
            "--bin",
            "flushctl",
        ],
    )
    .context("building flushctl.exe for x86_64-pc-windows-gnu failed")?;
    messages
        .into_iter()
        .find_map(|message| match message {
            Message::CompilerArtifact(artifact) if artifact.target.name == "flushctl" => {
                artifact.executable.map(|path| path.into_std_path_buf())
            }
            _ => None,
        })
        .context("cargo reported no flushctl executable")
}
