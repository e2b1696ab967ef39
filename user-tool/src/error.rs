//! flushctl's errors, their messages (each says what to do) and exit codes.

use std::path::PathBuf;

use thiserror::Error;

use crate::exit;
use crate::port::PortError;

/// Everything that can make a command fail.
#[derive(Debug, Error)]
pub enum CliError {
    /// Talking to the driver failed.
    #[error(transparent)]
    Port(#[from] PortError),
    /// Talking to the driver failed, for a command that can also work without it.
    #[error("{source}\n  {hint}")]
    PortWithHint {
        /// Why.
        source: PortError,
        /// What else works.
        hint: &'static str,
    },
    /// A policy file could not be read or was rejected.
    #[error("policy file {}: {message}", path.display())]
    Policy {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column when it has them).
        message: String,
    },
    /// A policy received from the driver could not be decoded.
    #[error("the driver's policy could not be decoded: {0}")]
    PolicyDecode(String),
    /// `--strict` replay hit a malformed line.
    #[error("{}: line {line}: {reason} (--strict stops at the first malformed line)", path.display())]
    MalformedTrace {
        /// The trace.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The trace could not be read at all: exit 7 when its contents are rejected as a
    /// whole (empty, UTF-16, not a Process Monitor CSV), 1 when reading it failed.
    #[error("{}: {source}", path.display())]
    Trace {
        /// The trace.
        path: PathBuf,
        /// Why.
        source: crate::trace::TraceError,
    },
    /// A bad argument value found after parsing (e.g. `--map`).
    #[error("{0}")]
    Usage(String),
    /// The durability witness refused an acknowledgement, or is unreadable or malformed.
    #[error("{0}")]
    Witness(String),
    /// Not supported on this operating system.
    #[error("{0}")]
    Unsupported(String),
    /// An `smb://` target could not be reached: connect, sign-in or tree connect failed.
    #[error("{0}")]
    Smb(String),
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Port(p) | CliError::PortWithHint { source: p, .. } => p.exit_code(),
            CliError::Policy { .. } | CliError::MalformedTrace { .. } => exit::INVALID_INPUT,
            CliError::Trace { source, .. } if source.is_invalid_input() => exit::INVALID_INPUT,
            CliError::Usage(_) => exit::USAGE,
            CliError::Unsupported(_) => exit::UNSUPPORTED,
            CliError::Witness(_) | CliError::Smb(_) => exit::FAILED,
            CliError::PolicyDecode(_) | CliError::Trace { .. } | CliError::Io { .. } => {
                exit::FAILED
            }
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }

    /// [`CliError::io`] as a `map_err` argument: `.map_err(CliError::io_while("stdout"))`.
    pub fn io_while(what: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |e| CliError::io(what, e)
    }
}
