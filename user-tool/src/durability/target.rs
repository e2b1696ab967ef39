//! The target file under test: a local path (or one on a share the OS mounted) or an
//! `smb://` URL spoken to directly ([`super::smb`]); how each `--pattern` opens it,
//! positional writes and flushes. Per-platform code for local files lives behind one
//! name (`imp`): `unix` (O_DSYNC, `pwrite`) and `windows` (FILE_FLAG_WRITE_THROUGH,
//! `WriteFile` at an offset).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::smb::{SmbFile, SmbTarget, SmbUrl, UrlError};

/// `--target` as given: a path, or an `smb://` URL (not yet connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A file path.
    Local(PathBuf),
    /// `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`.
    Smb(SmbUrl),
}

impl TargetSpec {
    /// A string starting with `smb://` (any case) is parsed as an SMB URL, anything
    /// else is a path.
    ///
    /// # Errors
    /// Every error of [`SmbUrl::parse`], for an `smb://` string; an empty string is
    /// [`UrlError::NotSmb`] (no path either).
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        if SmbUrl::is_smb(s) {
            SmbUrl::parse(s).map(TargetSpec::Smb)
        } else if s.is_empty() {
            Err(UrlError::NotSmb(String::new()))
        } else {
            Ok(TargetSpec::Local(PathBuf::from(s)))
        }
    }
}

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

    /// Whether the pattern exists for local files on this OS (`create-write-through`
    /// only on Windows; on an `smb://` target every pattern exists).
    pub fn supported(self) -> bool {
        cfg!(windows) || self != Pattern::CreateWriteThrough
    }
}

/// Where `durability run` writes and `durability verify` reads.
#[derive(Debug, Clone)]
pub enum Target {
    /// A file through the OS: local, or on a share its SMB client (the Windows
    /// redirector, where FlushGuard sits) mounted.
    Local(PathBuf),
    /// A file on an SMB share, spoken to directly over a signed-in session.
    Smb(Arc<SmbTarget>),
}

impl Target {
    /// The path, or the URL without password, for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Local(p) => p.display().to_string(),
            Target::Smb(s) => s.url().to_string(),
        }
    }

    /// Whether `pattern` can be expressed on this target (see [`Pattern::supported`]).
    pub fn supports(&self, pattern: Pattern) -> bool {
        matches!(self, Target::Smb(_)) || pattern.supported()
    }

    /// Opens the target for writing as `pattern` says; `first` is the run's first open
    /// (it creates the file; with create-write-through it also truncates it).
    ///
    /// # Errors
    /// Local: as [`open`]. SMB: as [`SmbTarget::open`].
    pub fn open(&self, pattern: Pattern, first: bool) -> std::io::Result<TargetFile<'_>> {
        Ok(match self {
            Target::Local(p) => TargetFile::Local(open(p, pattern, first)?),
            Target::Smb(s) => TargetFile::Smb(s.open(pattern, first)?),
        })
    }

    /// Opens the target for reading from its start; returns the reader and the
    /// target's length in bytes.
    ///
    /// # Errors
    /// The OS error of the open or of reading the length; SMB: as
    /// [`SmbTarget::open_read`] (`NotFound` for a missing file).
    pub fn open_read(&self) -> std::io::Result<(Box<dyn Read + '_>, u64)> {
        match self {
            Target::Local(p) => {
                let f = File::open(p)?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Target::Smb(s) => {
                let (r, len) = s.open_read()?;
                Ok((Box::new(r), len))
            }
        }
    }
}

/// An open handle on a [`Target`].
#[derive(Debug)]
pub enum TargetFile<'a> {
    /// A local file.
    Local(File),
    /// A handle on an SMB share.
    Smb(SmbFile<'a>),
}

impl TargetFile<'_> {
    /// Writes all of `buf` at byte `offset`, independent of any cursor.
    ///
    /// # Errors
    /// Local: as [`write_all_at`]. SMB: as [`SmbFile::write_all_at`].
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match self {
            TargetFile::Local(f) => write_all_at(f, buf, offset),
            TargetFile::Smb(f) => f.write_all_at(buf, offset),
        }
    }

    /// Makes what was written durable: `fdatasync` / FlushFileBuffers locally, an
    /// SMB2 FLUSH on a share.
    ///
    /// # Errors
    /// The OS error, or the FLUSH's NTSTATUS or connection error.
    pub fn flush(&self) -> std::io::Result<()> {
        match self {
            TargetFile::Local(f) => f.sync_data(),
            TargetFile::Smb(f) => f.flush(),
        }
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
