//! `NTSTATUS` values FlushGuard produces or classifies.
//!
//! Values are from the Windows SDK `ntstatus.h` (MS-ERREF §2.3 "NTSTATUS Values");
//! the unit tests cross-check every one against `windows-sys` (Microsoft's metadata).

use core::fmt;

/// A raw `NTSTATUS` (32-bit signed; severity in the two top bits).
///
/// `Display` prints the conventional 8-digit hex form, e.g. `0xC0000022`.
/// Raw values stay at the FFI edge; Rust callers get `Result<T, NtStatus>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct NtStatus(pub i32);

/// What a status returned by a flush FlushGuard issued (FltFlushBuffers2 /
/// ZwFlushBuffersFileEx) means for durability.
///
/// Every failure means the data was **not** flushed through that object: there is no
/// "benign" failure. A status that says the flush does not apply (a handle without
/// write access: `STATUS_ACCESS_DENIED` per the NtFlushBuffersFileEx page; a pipe or
/// device: `STATUS_INVALID_DEVICE_REQUEST`; an unsupported flush type:
/// `STATUS_NOT_SUPPORTED`) still leaves the written data undurable, so it is
/// [`StatusClass::NotFlushedPermanent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// `NT_SUCCESS`: the flush completed; the data it covers is durable as far as the
    /// file system (or the SMB server's FLUSH) guarantees.
    Flushed,
    /// Not flushed, transient: resources or the network may recover and a later
    /// flush (the next write's, or the one at cleanup) may succeed.
    NotFlushedRetryable,
    /// Not flushed, and retrying through this object will not help (no write access,
    /// no flush support, volume gone, write-protected, invalid request, handle closed).
    NotFlushedPermanent,
}

impl StatusClass {
    /// Stable label: `flushed`, `not-flushed-retryable`, `not-flushed-permanent`.
    pub const fn label(self) -> &'static str {
        match self {
            StatusClass::Flushed => "flushed",
            StatusClass::NotFlushedRetryable => "not-flushed-retryable",
            StatusClass::NotFlushedPermanent => "not-flushed-permanent",
        }
    }
}

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = $val:expr, $class:ident; )*) => {
        impl NtStatus {
            $( $(#[$m])* pub const $name: NtStatus = NtStatus($val as u32 as i32); )*

            /// Every status this crate names, in declaration order.
            pub const ALL_NAMED: &'static [NtStatus] = &[ $( NtStatus::$name ),* ];

            /// The `STATUS_*` name without the prefix, or `None` for an unnamed value.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 as u32 {
                    $( x if x == $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// What this status, returned by a flush FlushGuard issued, means for
            /// durability. Success and informational severities are `Flushed`;
            /// unnamed failure codes are `NotFlushedPermanent`.
            pub const fn class(self) -> StatusClass {
                match self.0 as u32 {
                    $( x if x == $val => StatusClass::$class, )*
                    _ => if self.0 >= 0 {
                        StatusClass::Flushed
                    } else {
                        StatusClass::NotFlushedPermanent
                    },
                }
            }
        }
    };
}

statuses! {
    /// `STATUS_SUCCESS`.
    SUCCESS = 0x0000_0000u32, Flushed;
    /// `STATUS_PENDING`: the operation completes later.
    PENDING = 0x0000_0103u32, Flushed;
    /// `STATUS_DATATYPE_MISALIGNMENT` (warning severity): reply buffer not
    /// aligned to [`crate::REPLY_ALIGNMENT`].
    DATATYPE_MISALIGNMENT = 0x8000_0002u32, NotFlushedPermanent;
    /// `STATUS_UNSUCCESSFUL`.
    UNSUCCESSFUL = 0xC000_0001u32, NotFlushedPermanent;
    /// `STATUS_NOT_IMPLEMENTED`: the redirector/file system has no flush for this object.
    NOT_IMPLEMENTED = 0xC000_0002u32, NotFlushedPermanent;
    /// `STATUS_INFO_LENGTH_MISMATCH`: a declared length differs from the buffer length.
    INFO_LENGTH_MISMATCH = 0xC000_0004u32, NotFlushedPermanent;
    /// `STATUS_INVALID_HANDLE`.
    INVALID_HANDLE = 0xC000_0008u32, NotFlushedPermanent;
    /// `STATUS_INVALID_PARAMETER`: a bad parameter, e.g. a non-zero reserved field
    /// or an out-of-range enumeration value.
    INVALID_PARAMETER = 0xC000_000Du32, NotFlushedPermanent;
    /// `STATUS_INVALID_DEVICE_REQUEST`: the target does not support the request
    /// (flush on a named pipe or a device); also an unknown port command.
    INVALID_DEVICE_REQUEST = 0xC000_0010u32, NotFlushedPermanent;
    /// `STATUS_NO_MEMORY`.
    NO_MEMORY = 0xC000_0017u32, NotFlushedRetryable;
    /// `STATUS_ACCESS_DENIED`: handle without write/append access, or a directory
    /// flush on a share (NtFlushBuffersFileEx).
    ACCESS_DENIED = 0xC000_0022u32, NotFlushedPermanent;
    /// `STATUS_BUFFER_TOO_SMALL`: the reply buffer cannot hold the reply.
    BUFFER_TOO_SMALL = 0xC000_0023u32, NotFlushedPermanent;
    /// `STATUS_INVALID_PARAMETER_MIX`: a contradictory policy (e.g. purge with the
    /// native method) or an invalid flag combination.
    INVALID_PARAMETER_MIX = 0xC000_0030u32, NotFlushedPermanent;
    /// `STATUS_OBJECT_NAME_INVALID`: bad UTF-16 (odd byte length, embedded NUL,
    /// unpaired surrogate) or a path that is not a valid pattern.
    OBJECT_NAME_INVALID = 0xC000_0033u32, NotFlushedPermanent;
    /// `STATUS_REVISION_MISMATCH`: unknown protocol version, format version or magic.
    REVISION_MISMATCH = 0xC000_0059u32, NotFlushedPermanent;
    /// `STATUS_DISK_FULL`.
    DISK_FULL = 0xC000_007Fu32, NotFlushedRetryable;
    /// `STATUS_INTEGER_OVERFLOW`: a count or offset overflows.
    INTEGER_OVERFLOW = 0xC000_0095u32, NotFlushedPermanent;
    /// `STATUS_INSUFFICIENT_RESOURCES`: pool or redirector resources exhausted.
    INSUFFICIENT_RESOURCES = 0xC000_009Au32, NotFlushedRetryable;
    /// `STATUS_MEDIA_WRITE_PROTECTED`: the volume is write-protected (FltFlushBuffers2).
    MEDIA_WRITE_PROTECTED = 0xC000_00A2u32, NotFlushedPermanent;
    /// `STATUS_IO_TIMEOUT`.
    IO_TIMEOUT = 0xC000_00B5u32, NotFlushedRetryable;
    /// `STATUS_NOT_SUPPORTED`: the target does not support this flush type; also an
    /// undefined flag bit in a request.
    NOT_SUPPORTED = 0xC000_00BBu32, NotFlushedPermanent;
    /// `STATUS_UNEXPECTED_NETWORK_ERROR`.
    UNEXPECTED_NETWORK_ERROR = 0xC000_00C4u32, NotFlushedRetryable;
    /// `STATUS_NETWORK_NAME_DELETED`: the SMB session/tree was torn down.
    NETWORK_NAME_DELETED = 0xC000_00C9u32, NotFlushedRetryable;
    /// `STATUS_NAME_TOO_LONG`: a string exceeds its documented limit.
    NAME_TOO_LONG = 0xC000_0106u32, NotFlushedPermanent;
    /// `STATUS_FILE_CLOSED`: the file object's SRV_OPEN was closed or force-closed;
    /// nothing is left to flush through it.
    FILE_CLOSED = 0xC000_0128u32, NotFlushedPermanent;
    /// `STATUS_INVALID_DEVICE_STATE`: e.g. GetPolicy before any policy is loaded.
    INVALID_DEVICE_STATE = 0xC000_0184u32, NotFlushedPermanent;
    /// `STATUS_INVALID_BUFFER_SIZE`: a message shorter than its fixed layout or
    /// larger than [`crate::MAX_MESSAGE_BYTES`].
    INVALID_BUFFER_SIZE = 0xC000_0206u32, NotFlushedPermanent;
    /// `STATUS_CONNECTION_DISCONNECTED`.
    CONNECTION_DISCONNECTED = 0xC000_020Cu32, NotFlushedRetryable;
    /// `STATUS_RETRY`.
    RETRY = 0xC000_022Du32, NotFlushedRetryable;
    /// `STATUS_VOLUME_DISMOUNTED`: the volume is not mounted (FltFlushBuffers2).
    VOLUME_DISMOUNTED = 0xC000_026Eu32, NotFlushedPermanent;
    /// `STATUS_IMPLEMENTATION_LIMIT`: a policy exceeds a documented limit
    /// (rule count, blob size).
    IMPLEMENTATION_LIMIT = 0xC000_042Bu32, NotFlushedPermanent;
    /// `STATUS_FLT_DO_NOT_ATTACH`: returned by InstanceSetup to decline a volume.
    FLT_DO_NOT_ATTACH = 0xC01C_000Fu32, NotFlushedPermanent;
}

impl NtStatus {
    /// `NT_SUCCESS(status)`: true for success and informational severities.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The raw value as the unsigned 32-bit pattern (as printed).
    pub const fn to_bits(self) -> u32 {
        self.0 as u32
    }

    /// Builds a status from its unsigned 32-bit pattern.
    pub const fn from_bits(bits: u32) -> Self {
        NtStatus(bits as i32)
    }

    /// `Ok(())` for `NT_SUCCESS`, else `Err(self)`.
    pub const fn ok(self) -> Result<(), NtStatus> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0 as u32)
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "STATUS_{n}(0x{:08X})", self.0 as u32),
            None => write!(f, "NtStatus(0x{:08X})", self.0 as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::Foundation as F;

    #[test]
    fn values_match_windows_metadata() {
        let pairs: &[(NtStatus, i32)] = &[
            (NtStatus::SUCCESS, F::STATUS_SUCCESS),
            (NtStatus::PENDING, F::STATUS_PENDING),
            (
                NtStatus::DATATYPE_MISALIGNMENT,
                F::STATUS_DATATYPE_MISALIGNMENT,
            ),
            (NtStatus::UNSUCCESSFUL, F::STATUS_UNSUCCESSFUL),
            (NtStatus::NOT_IMPLEMENTED, F::STATUS_NOT_IMPLEMENTED),
            (
                NtStatus::INFO_LENGTH_MISMATCH,
                F::STATUS_INFO_LENGTH_MISMATCH,
            ),
            (NtStatus::INVALID_HANDLE, F::STATUS_INVALID_HANDLE),
            (NtStatus::INVALID_PARAMETER, F::STATUS_INVALID_PARAMETER),
            (
                NtStatus::INVALID_DEVICE_REQUEST,
                F::STATUS_INVALID_DEVICE_REQUEST,
            ),
            (NtStatus::NO_MEMORY, F::STATUS_NO_MEMORY),
            (NtStatus::ACCESS_DENIED, F::STATUS_ACCESS_DENIED),
            (NtStatus::BUFFER_TOO_SMALL, F::STATUS_BUFFER_TOO_SMALL),
            (
                NtStatus::INVALID_PARAMETER_MIX,
                F::STATUS_INVALID_PARAMETER_MIX,
            ),
            (NtStatus::OBJECT_NAME_INVALID, F::STATUS_OBJECT_NAME_INVALID),
            (NtStatus::REVISION_MISMATCH, F::STATUS_REVISION_MISMATCH),
            (NtStatus::DISK_FULL, F::STATUS_DISK_FULL),
            (NtStatus::INTEGER_OVERFLOW, F::STATUS_INTEGER_OVERFLOW),
            (
                NtStatus::INSUFFICIENT_RESOURCES,
                F::STATUS_INSUFFICIENT_RESOURCES,
            ),
            (
                NtStatus::MEDIA_WRITE_PROTECTED,
                F::STATUS_MEDIA_WRITE_PROTECTED,
            ),
            (NtStatus::IO_TIMEOUT, F::STATUS_IO_TIMEOUT),
            (NtStatus::NOT_SUPPORTED, F::STATUS_NOT_SUPPORTED),
            (
                NtStatus::UNEXPECTED_NETWORK_ERROR,
                F::STATUS_UNEXPECTED_NETWORK_ERROR,
            ),
            (
                NtStatus::NETWORK_NAME_DELETED,
                F::STATUS_NETWORK_NAME_DELETED,
            ),
            (NtStatus::NAME_TOO_LONG, F::STATUS_NAME_TOO_LONG),
            (NtStatus::FILE_CLOSED, F::STATUS_FILE_CLOSED),
            (
                NtStatus::INVALID_DEVICE_STATE,
                F::STATUS_INVALID_DEVICE_STATE,
            ),
            (NtStatus::INVALID_BUFFER_SIZE, F::STATUS_INVALID_BUFFER_SIZE),
            (
                NtStatus::CONNECTION_DISCONNECTED,
                F::STATUS_CONNECTION_DISCONNECTED,
            ),
            (NtStatus::RETRY, F::STATUS_RETRY),
            (NtStatus::VOLUME_DISMOUNTED, F::STATUS_VOLUME_DISMOUNTED),
            (
                NtStatus::IMPLEMENTATION_LIMIT,
                F::STATUS_IMPLEMENTATION_LIMIT,
            ),
            (NtStatus::FLT_DO_NOT_ATTACH, F::STATUS_FLT_DO_NOT_ATTACH),
        ];
        assert_eq!(pairs.len(), NtStatus::ALL_NAMED.len());
        for (ours, theirs) in pairs {
            assert_eq!(ours.0, *theirs, "{ours:?}");
        }
    }

    #[test]
    fn display_is_hex() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{}", NtStatus::ACCESS_DENIED), "0xC0000022");
        assert_eq!(
            format!("{:?}", NtStatus::FILE_CLOSED),
            "STATUS_FILE_CLOSED(0xC0000128)"
        );
        assert_eq!(format!("{:?}", NtStatus(0x1234)), "NtStatus(0x00001234)");
    }

    #[test]
    fn statuses_are_classified_by_durability() {
        use StatusClass::*;
        // The statuses DESIGN §1 lists, classed by what they mean for the data
        // (issue 9 finding 7: a failed flush is never "benign").
        assert_eq!(
            NtStatus::INSUFFICIENT_RESOURCES.class(),
            NotFlushedRetryable
        );
        assert_eq!(NtStatus::FILE_CLOSED.class(), NotFlushedPermanent);
        assert_eq!(
            NtStatus::INVALID_DEVICE_REQUEST.class(),
            NotFlushedPermanent
        );
        assert_eq!(NtStatus::INVALID_PARAMETER.class(), NotFlushedPermanent);
        assert_eq!(NtStatus::NOT_IMPLEMENTED.class(), NotFlushedPermanent);
        assert_eq!(NtStatus::NOT_SUPPORTED.class(), NotFlushedPermanent);
        assert_eq!(NtStatus::MEDIA_WRITE_PROTECTED.class(), NotFlushedPermanent);
        assert_eq!(NtStatus::VOLUME_DISMOUNTED.class(), NotFlushedPermanent);
        // NtFlushBuffersFileEx page: a handle without write access.
        assert_eq!(NtStatus::ACCESS_DENIED.class(), NotFlushedPermanent);
        assert_eq!(NtStatus::IO_TIMEOUT.class(), NotFlushedRetryable);
        assert_eq!(NtStatus(0xC0DE_0001u32 as i32).class(), NotFlushedPermanent);
        assert_eq!(NtStatus(0x4000_0000).class(), Flushed);
        assert!(NtStatus::SUCCESS.ok().is_ok());
        assert_eq!(NtStatus::FILE_CLOSED.ok(), Err(NtStatus::FILE_CLOSED));
    }

    #[test]
    fn only_success_severities_are_flushed() {
        for s in NtStatus::ALL_NAMED {
            assert_eq!(
                s.class() == StatusClass::Flushed,
                s.is_success(),
                "{s:?} is classed {:?}",
                s.class()
            );
        }
    }
}
