//! The target file under test: how each `--pattern` opens it and positional writes.
//! Per-platform code lives behind one name (`imp`): `unix` (O_DSYNC, `pwrite`) and
//! `windows` (FILE_FLAG_WRITE_THROUGH, `WriteFile` at an offset).

use std::fs::File;
use std::path::Path;

/// How `durability run` makes a record durable before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Plain writes: durability is left to FlushGuard's policy (or to nothing).
    Plain,
    /// Write-through handle: FILE_FLAG_WRITE_THROUGH on Windows, O_DSYNC elsewhere.
    WriteThrough,
    /// A flush after each write: FlushFileBuffers on Windows, fdatasync elsewhere.
    Flush,
    /// Windows only: the target is created anew (truncated) by a FILE_FLAG_WRITE_THROUGH
    /// open, so the create itself carries FILE_WRITE_THROUGH; other writers open it
    /// write-through. Elsewhere there is no such distinction and it is refused.
    CreateWriteThrough,
}

impl Pattern {
    /// The name on the command line (`write-through`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Plain => "plain",
            Pattern::WriteThrough => "write-through",
            Pattern::Flush => "flush",
            Pattern::CreateWriteThrough => "create-write-through",
        }
    }

    /// Whether the pattern exists on this OS (`create-write-through` only on Windows).
    pub fn supported(self) -> bool {
        cfg!(windows) || self != Pattern::CreateWriteThrough
    }
}

/// Opens `path` for writing as `pattern` says; `first` is the run's first open (the one
/// that creates the file; with create-write-through it also truncates it).
///
/// # Errors
/// The OS error of the open; `ErrorKind::Unsupported` for create-write-through off
/// Windows.
pub fn open(path: &Path, pattern: Pattern, first: bool) -> std::io::Result<File> {
    imp::open(path, pattern, first)
}

/// Writes all of `buf` at byte `offset` of `file`, independent of the file cursor.
///
/// # Errors
/// The OS error of the write (`pwrite` / `WriteFile`); `WriteZero` when the OS accepts
/// no bytes.
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    imp::write_all_at(file, buf, offset)
}

#[cfg(unix)]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;

    use super::Pattern;

    pub fn open(path: &Path, pattern: Pattern, _first: bool) -> std::io::Result<File> {
        let mut o = OpenOptions::new();
        o.write(true).create(true);
        match pattern {
            Pattern::Plain | Pattern::Flush => {}
            Pattern::WriteThrough => {
                o.custom_flags(libc::O_DSYNC);
            }
            Pattern::CreateWriteThrough => return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "create-write-through is Windows only; here it would be write-through (O_DSYNC)",
            )),
        }
        o.open(path)
    }

    pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        file.write_all_at(buf, offset)
    }
}

#[cfg(windows)]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::os::windows::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;

    use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_WRITE_THROUGH;

    use super::Pattern;

    pub fn open(path: &Path, pattern: Pattern, first: bool) -> std::io::Result<File> {
        let mut o = OpenOptions::new();
        o.write(true).create(true);
        match pattern {
            Pattern::Plain | Pattern::Flush => {}
            Pattern::WriteThrough => {
                o.custom_flags(FILE_FLAG_WRITE_THROUGH);
            }
            Pattern::CreateWriteThrough => {
                o.custom_flags(FILE_FLAG_WRITE_THROUGH).truncate(first);
            }
        }
        o.open(path)
    }

    pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
        while !buf.is_empty() {
            match file.seek_write(buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
