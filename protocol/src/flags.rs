//! [`FlushFlags`]: one typed flush type with exact conversions to the three Windows
//! encodings, which use DIFFERENT bit values:
//!
//! | FlushFlags          | FltFlushBuffers2 `FlushType`      | ZwFlushBuffersFileEx `Flags`        | IRP_MJ_FLUSH_BUFFERS MinorFunction |
//! |---------------------|-----------------------------------|-------------------------------------|------------------------------------|
//! | empty (full flush)  | 0                                 | 0                                   | 0                                  |
//! | `FLUSH_AND_PURGE`   | `FLT_FLUSH_TYPE_FLUSH_AND_PURGE` 0x1 | none (error)                     | `IRP_MN_FLUSH_AND_PURGE` 1         |
//! | `FILE_DATA_ONLY`    | `FLT_FLUSH_TYPE_FILE_DATA_ONLY` 0x2  | `FLUSH_FLAGS_FILE_DATA_ONLY` 0x1 | `IRP_MN_FLUSH_DATA_ONLY` 2         |
//! | `NO_SYNC`           | `FLT_FLUSH_TYPE_NO_SYNC` 0x4         | `FLUSH_FLAGS_NO_SYNC` 0x2        | `IRP_MN_FLUSH_NO_SYNC` 3           |
//! | `DATA_SYNC_ONLY`    | `FLT_FLUSH_TYPE_DATA_SYNC_ONLY` 0x8  | `FLUSH_FLAGS_FILE_DATA_SYNC_ONLY` 0x4 | `IRP_MN_FLUSH_DATA_SYNC_ONLY` 4 |
//!
//! Sources: "FltFlushBuffers2 function (fltkernel.h)" and "NtFlushBuffersFileEx /
//! ZwFlushBuffersFileEx function (ntifs.h)" DDI pages: both say the value "can be one
//! of the following", so at most one flag may be set. The SMB2 FLUSH request
//! (MS-SMB2 §2.2.17) carries no flush type: over SMB every type becomes a plain
//! flush on the server; the types matter for local file systems and some redirectors.

use crate::nt;
use crate::{Contradiction, DecodeError};

bitflags::bitflags! {
    /// A flush type. Empty = full flush (file data + metadata, storage cache
    /// synchronized). At most one bit may be set ([`FlushFlags::validate`]).
    ///
    /// The bit values are FlushGuard's own wire values and deliberately differ
    /// from both Windows encodings; convert with the `to_*`/`from_*` methods.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct FlushFlags: u16 {
        /// Write data and metadata, do not synchronize the storage cache.
        const NO_SYNC = 0x0001;
        /// Write data (and only metadata needed to read it back), synchronize storage.
        const DATA_SYNC_ONLY = 0x0002;
        /// Write data only, no metadata, no storage synchronization.
        const FILE_DATA_ONLY = 0x0004;
        /// Full flush, then purge the cache (FltFlushBuffers2 only).
        const FLUSH_AND_PURGE = 0x0008;
    }
}

impl FlushFlags {
    /// Checks the wire value: no undefined bits, at most one flag.
    ///
    /// Errors: [`DecodeError::UndefinedFlags`], [`DecodeError::Contradictory`]
    /// ([`Contradiction::MultipleFlushTypes`]).
    pub fn from_wire(field: &'static str, bits: u16) -> Result<Self, DecodeError> {
        let flags = FlushFlags::from_bits(bits).ok_or(DecodeError::UndefinedFlags {
            field,
            bits: u32::from(bits & !FlushFlags::all().bits()),
        })?;
        flags.validate()?;
        Ok(flags)
    }

    /// At most one flag set. Error: `Contradictory(MultipleFlushTypes)`.
    pub fn validate(self) -> Result<(), DecodeError> {
        if self.bits().count_ones() > 1 {
            Err(DecodeError::Contradictory(
                Contradiction::MultipleFlushTypes,
            ))
        } else {
            Ok(())
        }
    }

    /// The `FlushType` argument of `FltFlushBuffers2` (FLT_FLUSH_TYPE_*).
    pub const fn to_flt_flush_type(self) -> u32 {
        let mut v = 0;
        if self.contains(FlushFlags::FLUSH_AND_PURGE) {
            v |= nt::FLT_FLUSH_TYPE_FLUSH_AND_PURGE;
        }
        if self.contains(FlushFlags::FILE_DATA_ONLY) {
            v |= nt::FLT_FLUSH_TYPE_FILE_DATA_ONLY;
        }
        if self.contains(FlushFlags::NO_SYNC) {
            v |= nt::FLT_FLUSH_TYPE_NO_SYNC;
        }
        if self.contains(FlushFlags::DATA_SYNC_ONLY) {
            v |= nt::FLT_FLUSH_TYPE_DATA_SYNC_ONLY;
        }
        v
    }

    /// Parses a `FltFlushBuffers2` FlushType.
    ///
    /// Errors: `UndefinedFlags` for bits outside FLT_FLUSH_TYPE_*;
    /// `Contradictory(MultipleFlushTypes)` for more than one type.
    pub fn from_flt_flush_type(v: u32) -> Result<Self, DecodeError> {
        const KNOWN: u32 = nt::FLT_FLUSH_TYPE_FLUSH_AND_PURGE
            | nt::FLT_FLUSH_TYPE_FILE_DATA_ONLY
            | nt::FLT_FLUSH_TYPE_NO_SYNC
            | nt::FLT_FLUSH_TYPE_DATA_SYNC_ONLY;
        if v & !KNOWN != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "FlushType",
                bits: v & !KNOWN,
            });
        }
        let mut f = FlushFlags::empty();
        f.set(
            FlushFlags::FLUSH_AND_PURGE,
            v & nt::FLT_FLUSH_TYPE_FLUSH_AND_PURGE != 0,
        );
        f.set(
            FlushFlags::FILE_DATA_ONLY,
            v & nt::FLT_FLUSH_TYPE_FILE_DATA_ONLY != 0,
        );
        f.set(FlushFlags::NO_SYNC, v & nt::FLT_FLUSH_TYPE_NO_SYNC != 0);
        f.set(
            FlushFlags::DATA_SYNC_ONLY,
            v & nt::FLT_FLUSH_TYPE_DATA_SYNC_ONLY != 0,
        );
        f.validate()?;
        Ok(f)
    }

    /// The `Flags` argument of `ZwFlushBuffersFileEx` (FLUSH_FLAGS_*).
    ///
    /// Error: `Contradictory(PurgeWithNativeMethod)` for `FLUSH_AND_PURGE`, which
    /// has no ZwFlushBuffersFileEx equivalent.
    pub fn to_flush_flags_ex(self) -> Result<u32, DecodeError> {
        if self.contains(FlushFlags::FLUSH_AND_PURGE) {
            return Err(DecodeError::Contradictory(
                Contradiction::PurgeWithNativeMethod,
            ));
        }
        let mut v = 0;
        if self.contains(FlushFlags::FILE_DATA_ONLY) {
            v |= nt::FLUSH_FLAGS_FILE_DATA_ONLY;
        }
        if self.contains(FlushFlags::NO_SYNC) {
            v |= nt::FLUSH_FLAGS_NO_SYNC;
        }
        if self.contains(FlushFlags::DATA_SYNC_ONLY) {
            v |= nt::FLUSH_FLAGS_FILE_DATA_SYNC_ONLY;
        }
        Ok(v)
    }

    /// Parses `ZwFlushBuffersFileEx` Flags.
    ///
    /// Errors: `UndefinedFlags`, `Contradictory(MultipleFlushTypes)`.
    pub fn from_flush_flags_ex(v: u32) -> Result<Self, DecodeError> {
        const KNOWN: u32 = nt::FLUSH_FLAGS_FILE_DATA_ONLY
            | nt::FLUSH_FLAGS_NO_SYNC
            | nt::FLUSH_FLAGS_FILE_DATA_SYNC_ONLY;
        if v & !KNOWN != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "Flags",
                bits: v & !KNOWN,
            });
        }
        let mut f = FlushFlags::empty();
        f.set(
            FlushFlags::FILE_DATA_ONLY,
            v & nt::FLUSH_FLAGS_FILE_DATA_ONLY != 0,
        );
        f.set(FlushFlags::NO_SYNC, v & nt::FLUSH_FLAGS_NO_SYNC != 0);
        f.set(
            FlushFlags::DATA_SYNC_ONLY,
            v & nt::FLUSH_FLAGS_FILE_DATA_SYNC_ONLY != 0,
        );
        f.validate()?;
        Ok(f)
    }

    /// The `Iopb->MinorFunction` of an IRP_MJ_FLUSH_BUFFERS with this type
    /// (0 = full flush). Assumes [`validate`](Self::validate) passed; with several
    /// bits the strongest-purpose one wins (purge, data-sync, no-sync, data-only).
    pub const fn to_flush_minor(self) -> u8 {
        if self.contains(FlushFlags::FLUSH_AND_PURGE) {
            nt::IRP_MN_FLUSH_AND_PURGE
        } else if self.contains(FlushFlags::DATA_SYNC_ONLY) {
            nt::IRP_MN_FLUSH_DATA_SYNC_ONLY
        } else if self.contains(FlushFlags::NO_SYNC) {
            nt::IRP_MN_FLUSH_NO_SYNC
        } else if self.contains(FlushFlags::FILE_DATA_ONLY) {
            nt::IRP_MN_FLUSH_DATA_ONLY
        } else {
            0
        }
    }

    /// Parses the MinorFunction of an IRP_MJ_FLUSH_BUFFERS.
    /// Error: `BadValue` for a minor function other than 0..=4.
    pub fn from_flush_minor(minor: u8) -> Result<Self, DecodeError> {
        Ok(match minor {
            0 => FlushFlags::empty(),
            nt::IRP_MN_FLUSH_AND_PURGE => FlushFlags::FLUSH_AND_PURGE,
            nt::IRP_MN_FLUSH_DATA_ONLY => FlushFlags::FILE_DATA_ONLY,
            nt::IRP_MN_FLUSH_NO_SYNC => FlushFlags::NO_SYNC,
            nt::IRP_MN_FLUSH_DATA_SYNC_ONLY => FlushFlags::DATA_SYNC_ONLY,
            other => {
                return Err(DecodeError::BadValue {
                    field: "MinorFunction",
                    value: u32::from(other),
                })
            }
        })
    }

    /// Rank in the durability order: FILE_DATA_ONLY(0) < NO_SYNC, DATA_SYNC_ONLY(1)
    /// < full(2) < FLUSH_AND_PURGE(3). NO_SYNC and DATA_SYNC_ONLY are incomparable.
    const fn rank(self) -> u8 {
        if self.contains(FlushFlags::FLUSH_AND_PURGE) {
            3
        } else if self.contains(FlushFlags::NO_SYNC) || self.contains(FlushFlags::DATA_SYNC_ONLY) {
            1
        } else if self.contains(FlushFlags::FILE_DATA_ONLY) {
            0
        } else {
            2
        }
    }

    /// True when a flush of type `self` writes at least what a flush of type
    /// `other` writes (data, metadata, storage sync, purge). Both must be valid.
    pub const fn covers(self, other: FlushFlags) -> bool {
        let (a, b) = (self.rank(), other.rank());
        if a == 1 && b == 1 {
            self.bits() == other.bits()
        } else {
            a >= b
        }
    }

    /// The weakest single flush type that covers both `self` and `other`.
    pub const fn join(self, other: FlushFlags) -> FlushFlags {
        if self.covers(other) {
            self
        } else if other.covers(self) {
            other
        } else {
            // Only NO_SYNC vs DATA_SYNC_ONLY: a full flush covers both.
            FlushFlags::empty()
        }
    }

    /// Lower-case policy-file spelling: `full`, `no-sync`, `data-sync-only`,
    /// `file-data-only`, `flush-and-purge` (valid values only; else `invalid`).
    pub const fn policy_name(self) -> &'static str {
        match self.bits() {
            0 => "full",
            0x0001 => "no-sync",
            0x0002 => "data-sync-only",
            0x0004 => "file-data-only",
            0x0008 => "flush-and-purge",
            _ => "invalid",
        }
    }

    /// Parses a policy-file spelling (see [`policy_name`](Self::policy_name)).
    pub fn from_policy_name(s: &str) -> Option<Self> {
        Some(match s {
            "full" => FlushFlags::empty(),
            "no-sync" => FlushFlags::NO_SYNC,
            "data-sync-only" => FlushFlags::DATA_SYNC_ONLY,
            "file-data-only" => FlushFlags::FILE_DATA_ONLY,
            "flush-and-purge" => FlushFlags::FLUSH_AND_PURGE,
            _ => return None,
        })
    }

    /// All valid (single-type) values.
    pub const VALID: [FlushFlags; 5] = [
        FlushFlags::empty(),
        FlushFlags::NO_SYNC,
        FlushFlags::DATA_SYNC_ONLY,
        FlushFlags::FILE_DATA_ONLY,
        FlushFlags::FLUSH_AND_PURGE,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_values_each_direction() {
        let table: [(FlushFlags, u32, Option<u32>, u8); 5] = [
            (FlushFlags::empty(), 0, Some(0), 0),
            (FlushFlags::FLUSH_AND_PURGE, 0x1, None, 1),
            (FlushFlags::FILE_DATA_ONLY, 0x2, Some(0x1), 2),
            (FlushFlags::NO_SYNC, 0x4, Some(0x2), 3),
            (FlushFlags::DATA_SYNC_ONLY, 0x8, Some(0x4), 4),
        ];
        for (f, flt, ex, minor) in table {
            assert_eq!(f.to_flt_flush_type(), flt, "{f:?}");
            assert_eq!(FlushFlags::from_flt_flush_type(flt), Ok(f));
            match ex {
                Some(ex) => {
                    assert_eq!(f.to_flush_flags_ex(), Ok(ex), "{f:?}");
                    assert_eq!(FlushFlags::from_flush_flags_ex(ex), Ok(f));
                }
                None => assert_eq!(
                    f.to_flush_flags_ex(),
                    Err(DecodeError::Contradictory(
                        Contradiction::PurgeWithNativeMethod
                    ))
                ),
            }
            assert_eq!(f.to_flush_minor(), minor);
            assert_eq!(FlushFlags::from_flush_minor(minor), Ok(f));
            assert_eq!(FlushFlags::from_policy_name(f.policy_name()), Some(f));
            assert_eq!(FlushFlags::from_wire("t", f.bits()), Ok(f));
        }
    }

    #[test]
    fn undefined_bits_rejected() {
        assert_eq!(
            FlushFlags::from_flt_flush_type(0x10),
            Err(DecodeError::UndefinedFlags {
                field: "FlushType",
                bits: 0x10
            })
        );
        assert_eq!(
            FlushFlags::from_flush_flags_ex(0x8),
            Err(DecodeError::UndefinedFlags {
                field: "Flags",
                bits: 0x8
            })
        );
        assert_eq!(
            FlushFlags::from_wire("x", 0x30),
            Err(DecodeError::UndefinedFlags {
                field: "x",
                bits: 0x30
            })
        );
        assert!(matches!(
            FlushFlags::from_flush_minor(5),
            Err(DecodeError::BadValue { value: 5, .. })
        ));
    }

    #[test]
    fn combinations_rejected() {
        let multi = Err(DecodeError::Contradictory(
            Contradiction::MultipleFlushTypes,
        ));
        assert_eq!(FlushFlags::from_flt_flush_type(0x6), multi);
        assert_eq!(FlushFlags::from_flush_flags_ex(0x3), multi);
        assert_eq!(FlushFlags::from_wire("x", 0x3), multi);
    }

    #[test]
    fn covers_order() {
        let full = FlushFlags::empty();
        assert!(full.covers(FlushFlags::NO_SYNC));
        assert!(full.covers(FlushFlags::DATA_SYNC_ONLY));
        assert!(!FlushFlags::NO_SYNC.covers(FlushFlags::DATA_SYNC_ONLY));
        assert!(FlushFlags::NO_SYNC.covers(FlushFlags::FILE_DATA_ONLY));
        assert!(FlushFlags::FLUSH_AND_PURGE.covers(full));
        assert!(!full.covers(FlushFlags::FLUSH_AND_PURGE));
        assert_eq!(FlushFlags::NO_SYNC.join(FlushFlags::DATA_SYNC_ONLY), full);
        assert_eq!(
            FlushFlags::FILE_DATA_ONLY.join(FlushFlags::NO_SYNC),
            FlushFlags::NO_SYNC
        );
    }

    proptest! {
        #[test]
        fn flt_round_trip_or_error(v in any::<u32>()) {
            match FlushFlags::from_flt_flush_type(v) {
                Ok(f) => prop_assert_eq!(f.to_flt_flush_type(), v),
                Err(_) => prop_assert!(v.count_ones() > 1 || v > 0xF),
            }
        }

        #[test]
        fn ex_round_trip_or_error(v in any::<u32>()) {
            match FlushFlags::from_flush_flags_ex(v) {
                Ok(f) => prop_assert_eq!(f.to_flush_flags_ex(), Ok(v)),
                Err(_) => prop_assert!(v.count_ones() > 1 || v > 0x7),
            }
        }

        #[test]
        fn join_covers_both(a in 0usize..5, b in 0usize..5) {
            let (a, b) = (FlushFlags::VALID[a], FlushFlags::VALID[b]);
            let j = a.join(b);
            prop_assert!(j.covers(a) && j.covers(b));
            prop_assert!(j.validate().is_ok());
        }
    }
}
