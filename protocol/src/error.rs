//! Typed decode errors, one variant per bad-input class of DESIGN §4, each mapped
//! to the `NTSTATUS` the driver answers with.

use crate::NtStatus;
use core::fmt;

/// What is wrong with a UTF-16 string field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Utf16Problem {
    /// Byte length is odd (UTF-16 code units are 2 bytes).
    OddLength,
    /// A U+0000 code unit inside the string (strings are counted, never terminated).
    EmbeddedNul,
    /// An unpaired surrogate code unit.
    UnpairedSurrogate,
    /// Longer than the field's limit, in UTF-16 code units.
    TooLong {
        /// Limit in UTF-16 code units.
        max: u32,
        /// Actual length in UTF-16 code units.
        got: u32,
    },
}

/// What is wrong with a name or pattern that is valid UTF-16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// A `..` component (no escapes above the share root).
    DotDotComponent,
    /// A `.` component.
    DotComponent,
    /// An empty component (`a\\b`), or an empty string where one is required.
    EmptyComponent,
    /// A share that is not `\\server\share` in one of the accepted spellings.
    NotAShare,
    /// A character Windows forbids in names (`< > " | ?` or a control character),
    /// or a wildcard where none is allowed.
    IllegalCharacter,
    /// An extension containing `.`, `\`, `|` or a wildcard.
    BadExtension,
    /// A `**` mixed with other characters inside one component.
    BadRecursiveWildcard,
}

/// A policy whose parts contradict each other (`STATUS_INVALID_PARAMETER_MIX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contradiction {
    /// More than one flush type bit: FltFlushBuffers2 and ZwFlushBuffersFileEx
    /// take exactly one FlushType / Flags value.
    MultipleFlushTypes,
    /// `FLUSH_AND_PURGE` requested with the native method: ZwFlushBuffersFileEx
    /// has no purge flag.
    PurgeWithNativeMethod,
    /// Flush settings (flush type, native method) on a `pass` rule, or upgrade
    /// flags without the upgrade flag.
    SettingsOnPassMode,
    /// `audit` whose audited mode is `pass` or `audit`, or an audited mode on a
    /// non-audit rule.
    BadAuditTarget,
    /// Two rules with the same name (names identify per-rule counters).
    DuplicateRuleName,
    /// A share constraint on a rule whose provider cannot serve shares
    /// (none today; reserved for provider-specific syntax).
    ProviderShareMismatch,
    /// A share constraint naming a server's interprocess-communication share
    /// (`PIPE`, `MAILSLOT`, `IPC$`: remote named pipes and mailslots), which
    /// FlushGuard never governs: the rule could never apply.
    IpcShare,
    /// `max-batch` / `max-batch-wait-us` on an action whose (audited) mode is not
    /// group-commit.
    GroupOptionsOutsideGroupCommit,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::DotDotComponent => "a `..` component (no escapes above the share root)",
            NameProblem::DotComponent => "a `.` component",
            NameProblem::EmptyComponent => "an empty name or component",
            NameProblem::NotAShare => "not a share (\\\\server\\share)",
            NameProblem::IllegalCharacter => "a character Windows forbids here",
            NameProblem::BadExtension => "not a plain extension",
            NameProblem::BadRecursiveWildcard => "`**` must be a whole component",
        })
    }
}

impl fmt::Display for Contradiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Contradiction::MultipleFlushTypes => {
                "more than one flush type (FltFlushBuffers2 and ZwFlushBuffersFileEx take one)"
            }
            Contradiction::PurgeWithNativeMethod => {
                "flush-and-purge with the native method (ZwFlushBuffersFileEx has no purge)"
            }
            Contradiction::SettingsOnPassMode => "flush settings on a pass action",
            Contradiction::BadAuditTarget => {
                "audit-mode must name an enforcing mode, and only with mode audit"
            }
            Contradiction::DuplicateRuleName => "two rules with the same name",
            Contradiction::ProviderShareMismatch => "a share on a provider without shares",
            Contradiction::IpcShare => {
                "a named pipe / mailslot share (PIPE, MAILSLOT, IPC$), which FlushGuard never governs"
            }
            Contradiction::GroupOptionsOutsideGroupCommit => {
                "max-batch / max-batch-wait-us on a mode other than group-commit"
            }
        })
    }
}

/// A malformed message, connect context or policy blob.
///
/// Every variant maps to one `NTSTATUS` via [`DecodeError::ntstatus`]; decoding a
/// bad input never changes driver state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Buffer shorter than the fixed layout (bytes). `STATUS_INVALID_BUFFER_SIZE`.
    TooShort {
        /// Bytes required.
        needed: u32,
        /// Bytes present.
        got: u32,
    },
    /// Buffer larger than the layout or limit allows (bytes). `STATUS_INVALID_BUFFER_SIZE`.
    TooLong {
        /// Largest accepted size in bytes.
        max: u32,
        /// Bytes present.
        got: u32,
    },
    /// Declared length field != actual buffer length (bytes). `STATUS_INFO_LENGTH_MISMATCH`.
    LengthMismatch {
        /// Length the header declares.
        declared: u32,
        /// Length of the buffer.
        actual: u32,
    },
    /// Wrong magic number. `STATUS_REVISION_MISMATCH`.
    BadMagic {
        /// Expected magic.
        expected: u32,
        /// Magic found.
        got: u32,
    },
    /// Unknown protocol or format version. `STATUS_REVISION_MISMATCH`.
    UnknownVersion {
        /// Version this build speaks.
        expected: u32,
        /// Version found.
        got: u32,
    },
    /// Unknown command code. `STATUS_INVALID_DEVICE_REQUEST`.
    UnknownCommand(u16),
    /// A reserved field is not zero. `STATUS_INVALID_PARAMETER`.
    NonZeroReserved {
        /// Field name (layout.field).
        field: &'static str,
    },
    /// Flag bits this version does not define. `STATUS_NOT_SUPPORTED`.
    UndefinedFlags {
        /// Field name.
        field: &'static str,
        /// The undefined bits.
        bits: u32,
    },
    /// An enumeration field holds an undefined value. `STATUS_INVALID_PARAMETER`.
    BadValue {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// Output buffer address not aligned. `STATUS_DATATYPE_MISALIGNMENT`.
    Misaligned {
        /// Required alignment in bytes.
        alignment: u32,
    },
    /// Output buffer too small for the reply (bytes). `STATUS_BUFFER_TOO_SMALL`.
    OutputTooSmall {
        /// Bytes required.
        needed: u32,
        /// Bytes available.
        got: u32,
    },
    /// A count or offset overflows 32 bits or the buffer. `STATUS_INTEGER_OVERFLOW`.
    Overflow {
        /// Field name.
        field: &'static str,
    },
    /// Bad UTF-16 string. `STATUS_NAME_TOO_LONG` for `TooLong`,
    /// else `STATUS_OBJECT_NAME_INVALID`.
    Utf16 {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        problem: Utf16Problem,
    },
    /// A name or pattern Windows semantics reject. `STATUS_OBJECT_NAME_INVALID`.
    Name {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        problem: NameProblem,
    },
    /// Contradictory settings. `STATUS_INVALID_PARAMETER_MIX`.
    Contradictory(Contradiction),
    /// A documented limit is exceeded. `STATUS_IMPLEMENTATION_LIMIT`.
    LimitExceeded {
        /// What is limited.
        what: &'static str,
        /// The limit.
        max: u32,
        /// The value found.
        got: u32,
    },
}

impl DecodeError {
    /// The `NTSTATUS` the driver's message callback returns for this error.
    pub const fn ntstatus(&self) -> NtStatus {
        match self {
            DecodeError::TooShort { .. } | DecodeError::TooLong { .. } => {
                NtStatus::INVALID_BUFFER_SIZE
            }
            DecodeError::LengthMismatch { .. } => NtStatus::INFO_LENGTH_MISMATCH,
            DecodeError::BadMagic { .. } | DecodeError::UnknownVersion { .. } => {
                NtStatus::REVISION_MISMATCH
            }
            DecodeError::UnknownCommand(_) => NtStatus::INVALID_DEVICE_REQUEST,
            DecodeError::NonZeroReserved { .. } | DecodeError::BadValue { .. } => {
                NtStatus::INVALID_PARAMETER
            }
            DecodeError::UndefinedFlags { .. } => NtStatus::NOT_SUPPORTED,
            DecodeError::Misaligned { .. } => NtStatus::DATATYPE_MISALIGNMENT,
            DecodeError::OutputTooSmall { .. } => NtStatus::BUFFER_TOO_SMALL,
            DecodeError::Overflow { .. } => NtStatus::INTEGER_OVERFLOW,
            DecodeError::Utf16 {
                problem: Utf16Problem::TooLong { .. },
                ..
            } => NtStatus::NAME_TOO_LONG,
            DecodeError::Utf16 { .. } | DecodeError::Name { .. } => NtStatus::OBJECT_NAME_INVALID,
            DecodeError::Contradictory(_) => NtStatus::INVALID_PARAMETER_MIX,
            DecodeError::LimitExceeded { .. } => NtStatus::IMPLEMENTATION_LIMIT,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { needed, got } => {
                write!(f, "buffer too short: {got} bytes, need {needed}")
            }
            DecodeError::TooLong { max, got } => {
                write!(f, "buffer too long: {got} bytes, at most {max}")
            }
            DecodeError::LengthMismatch { declared, actual } => write!(
                f,
                "declared length {declared} does not match buffer length {actual}"
            ),
            DecodeError::BadMagic { expected, got } => {
                write!(f, "bad magic 0x{got:08X}, expected 0x{expected:08X}")
            }
            DecodeError::UnknownVersion { expected, got } => {
                write!(f, "unknown version {got}, this build speaks {expected}")
            }
            DecodeError::UnknownCommand(c) => write!(f, "unknown command {c}"),
            DecodeError::NonZeroReserved { field } => {
                write!(f, "reserved field {field} is not zero")
            }
            DecodeError::UndefinedFlags { field, bits } => {
                write!(f, "undefined flag bits 0x{bits:X} in {field}")
            }
            DecodeError::BadValue { field, value } => {
                write!(f, "undefined value {value} in {field}")
            }
            DecodeError::Misaligned { alignment } => {
                write!(f, "output buffer not aligned to {alignment} bytes")
            }
            DecodeError::OutputTooSmall { needed, got } => {
                write!(f, "output buffer too small: {got} bytes, need {needed}")
            }
            DecodeError::Overflow { field } => write!(f, "integer overflow in {field}"),
            DecodeError::Utf16 { field, problem } => match problem {
                Utf16Problem::OddLength => write!(f, "{field}: odd UTF-16 byte length"),
                Utf16Problem::EmbeddedNul => write!(f, "{field}: embedded NUL"),
                Utf16Problem::UnpairedSurrogate => write!(f, "{field}: unpaired surrogate"),
                Utf16Problem::TooLong { max, got } => {
                    write!(f, "{field}: {got} UTF-16 code units, at most {max}")
                }
            },
            DecodeError::Name { field, problem } => write!(f, "{field}: {problem}"),
            DecodeError::Contradictory(c) => write!(f, "contradictory policy: {c}"),
            DecodeError::LimitExceeded { what, max, got } => {
                write!(f, "{what}: {got} exceeds the limit of {max}")
            }
        }
    }
}

impl core::error::Error for DecodeError {}
