//! Policy blob: the SetPolicy/GetPolicy body and the `REG_BINARY` registry value
//! the driver loads at boot. This module defines and validates the layout
//! (structure, limits, enumerations, flags, UTF-16); the engine turns a valid blob
//! into its policy model and checks name semantics and contradictions.
//!
//! ```text
//! PolicyHeader (40 bytes)
//!   magic u32 @0 = POLICY_MAGIC      format_version u16 @4 = POLICY_FORMAT_VERSION
//!   reserved u16 @6 = 0              total_length u32 @8 (= blob length, bytes)
//!   rule_count u32 @12 (<= MAX_RULES) flags u32 @16 (PolicyFlags)
//!   reserved u32 @20 = 0             default_action ActionWire @24 (16 bytes)
//! rule_count x Rule, each:
//!   RuleHeader (36 bytes)
//!     rule_length u32 @0 (bytes, header + strings + padding; multiple of 4)
//!     provider u16 @4 (0 any, 1 smb, 2 webdav, 3 nfs, 4 rdpdr)   reserved u16 @6 = 0
//!     action ActionWire @8 (16 bytes)
//!     name_bytes u16 @24  share_bytes u16 @26  path_bytes u16 @28
//!     process_bytes u16 @30  extensions_bytes u16 @32  reserved u16 @34 = 0
//!   name, share, path, process, extensions: UTF-16LE, in that order, lengths in
//!     bytes as above; extensions joined by '|' (a character Windows forbids in names)
//!   zero padding to a multiple of 4 bytes
//! ActionWire (16 bytes)
//!   mode u16 @0 (0 pass, 1 audit, 2 write-through, 3 flush-after-write, 4 flush-on-close,
//!     5 group-commit)
//!   method u16 @2 (0 filter = FltFlushBuffers2, 1 native = ZwFlushBuffersFileEx)
//!   flush_flags u16 @4 (FlushFlags)   upgrade_flags u16 @6 (FlushFlags)
//!   action_flags u16 @8 (ActionFlags) audit_mode u16 @10 (a mode; 0 unless audit)
//!   max_batch u16 @12 (group-commit: 1..=MAX_GROUP_BATCH; 0 for every other mode)
//!   max_batch_wait_us u16 @14 (group-commit: 0..=MAX_GROUP_BATCH_WAIT_US; else 0)
//! ```
//! (`max_batch` and `max_batch_wait_us` were one reserved, zero `u32` before
//! group-commit; every blob written before stays valid.)

use crate::codec::{
    clamp_u32, expect_declared_length, expect_version, size_within, Reader, Utf16Str, Writer,
};
use crate::{Contradiction, DecodeError, FlushFlags};
use static_assertions::const_assert_eq;

/// `PolicyHeader.magic`: the bytes `FGPL`.
pub const POLICY_MAGIC: u32 = u32::from_le_bytes(*b"FGPL");
/// `PolicyHeader.format_version`.
pub const POLICY_FORMAT_VERSION: u16 = 1;
/// Maximum number of rules (default rule not counted).
pub const MAX_RULES: u32 = 16_384;
/// Maximum policy blob size in bytes (4 MiB).
pub const MAX_POLICY_BYTES: u32 = 4 * 1024 * 1024;
/// Maximum rule name length, UTF-16 code units.
pub const MAX_RULE_NAME_UNITS: u32 = 64;
/// Maximum share length (`\\server\share`), UTF-16 code units: a 255-character
/// DNS server name, an 80-character share name and separators.
pub const MAX_SHARE_UNITS: u32 = 340;
/// Maximum path-glob length, UTF-16 code units.
pub const MAX_PATH_GLOB_UNITS: u32 = 1024;
/// Maximum process image pattern length, UTF-16 code units.
pub const MAX_PROCESS_UNITS: u32 = 260;
/// Maximum number of extensions per rule.
pub const MAX_EXTENSIONS: u32 = 32;
/// Maximum length of one extension (without the dot), UTF-16 code units.
pub const MAX_EXTENSION_UNITS: u32 = 32;
/// Maximum length of the joined extensions field, UTF-16 code units.
pub const MAX_EXTENSIONS_UNITS: u32 = MAX_EXTENSIONS * (MAX_EXTENSION_UNITS + 1);

bitflags::bitflags! {
    /// `PolicyHeader.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PolicyFlags: u32 {
        /// Attach to local (non-network) volumes too; for testing.
        const ATTACH_LOCAL_VOLUMES = 0x0000_0001;
    }
}

bitflags::bitflags! {
    /// `ActionWire.action_flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ActionFlags: u16 {
        /// Upgrade application flushes to `upgrade_flags` (else `upgrade_flags` is 0).
        const UPGRADE_APP_FLUSH = 0x0001;
        /// Count paging I/O writes in writes-seen / bytes-governed.
        const COUNT_PAGING_IO = 0x0002;
    }
}

/// Largest valid `mode` / `audit_mode` value.
pub const MAX_MODE: u16 = 5;
/// `mode` code of group-commit.
pub const GROUP_COMMIT_MODE: u16 = 5;
/// Largest `max_batch` (`max-batch` in a policy file): writers one group-commit flush
/// acknowledges at most.
pub const MAX_GROUP_BATCH: u16 = 4096;
/// Largest `max_batch_wait_us` (`max-batch-wait-us`), microseconds (50 ms): a
/// group-commit leader waits at most this long for more writers before flushing.
pub const MAX_GROUP_BATCH_WAIT_US: u16 = 50_000;
/// Largest valid `method` value.
pub const MAX_METHOD: u16 = 1;
/// Largest valid `provider` value.
pub const MAX_PROVIDER: u16 = 4;

/// Decoded (structurally valid) action. Values are raw codes; the engine maps them
/// to its enums. Contradictions the layout can see are rejected here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionWire {
    /// Mode code (0..=4).
    pub mode: u16,
    /// Method code (0..=1).
    pub method: u16,
    /// Flush type used by flushes this action issues.
    pub flush_flags: FlushFlags,
    /// Application flushes are upgraded to (at least) this type if
    /// `ActionFlags::UPGRADE_APP_FLUSH`.
    pub upgrade_flags: FlushFlags,
    /// Action flags.
    pub action_flags: ActionFlags,
    /// Audited mode (audit only; 0 otherwise).
    pub audit_mode: u16,
    /// Group-commit batch bound (1..=[`MAX_GROUP_BATCH`] when the effective mode is
    /// group-commit; 0 otherwise).
    pub max_batch: u16,
    /// Group-commit leader's wait for more writers, microseconds
    /// (0..=[`MAX_GROUP_BATCH_WAIT_US`]; 0 unless group-commit).
    pub max_batch_wait_us: u16,
}

impl ActionWire {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the action.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u16(self.mode)?;
        w.u16(self.method)?;
        w.u16(self.flush_flags.bits())?;
        w.u16(self.upgrade_flags.bits())?;
        w.u16(self.action_flags.bits())?;
        w.u16(self.audit_mode)?;
        w.u16(self.max_batch)?;
        w.u16(self.max_batch_wait_us)
    }

    /// Reads and validates an action.
    ///
    /// Errors: `BadValue` (mode/method/audit_mode out of range; a group-commit
    /// `max_batch` of 0 or above [`MAX_GROUP_BATCH`], `max_batch_wait_us` above
    /// [`MAX_GROUP_BATCH_WAIT_US`]), `UndefinedFlags`, `Contradictory` (several flush
    /// types; purge with the native method; upgrade flags without the upgrade bit;
    /// flush type or method on a `pass` action; audit_mode on a non-audit rule or an
    /// audit of pass/audit; group-commit options on another mode).
    /// A `pass` action may upgrade application flushes.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mode = r.u16()?;
        if mode > MAX_MODE {
            return Err(DecodeError::BadValue {
                field: "Action.mode",
                value: u32::from(mode),
            });
        }
        let method = r.u16()?;
        if method > MAX_METHOD {
            return Err(DecodeError::BadValue {
                field: "Action.method",
                value: u32::from(method),
            });
        }
        let flush_flags = FlushFlags::from_wire("Action.flush_flags", r.u16()?)?;
        let upgrade_flags = FlushFlags::from_wire("Action.upgrade_flags", r.u16()?)?;
        let af = r.u16()?;
        let action_flags = ActionFlags::from_bits(af).ok_or(DecodeError::UndefinedFlags {
            field: "Action.action_flags",
            bits: u32::from(af & !ActionFlags::all().bits()),
        })?;
        let audit_mode = r.u16()?;
        if audit_mode > MAX_MODE {
            return Err(DecodeError::BadValue {
                field: "Action.audit_mode",
                value: u32::from(audit_mode),
            });
        }
        let max_batch = r.u16()?;
        let max_batch_wait_us = r.u16()?;
        let a = ActionWire {
            mode,
            method,
            flush_flags,
            upgrade_flags,
            action_flags,
            audit_mode,
            max_batch,
            max_batch_wait_us,
        };
        a.check_contradictions()?;
        Ok(a)
    }

    /// The contradiction checks of [`read`](Self::read), for encoders too.
    pub fn check_contradictions(&self) -> Result<(), DecodeError> {
        let c = |k| Err(DecodeError::Contradictory(k));
        let upgrade = self.action_flags.contains(ActionFlags::UPGRADE_APP_FLUSH);
        if !upgrade && !self.upgrade_flags.is_empty() {
            return c(Contradiction::SettingsOnPassMode);
        }
        if self.method == 1 && self.flush_flags.contains(FlushFlags::FLUSH_AND_PURGE) {
            return c(Contradiction::PurgeWithNativeMethod);
        }
        let effective_mode = if self.mode == 1 {
            self.audit_mode
        } else {
            self.mode
        };
        if effective_mode == 0 && (!self.flush_flags.is_empty() || self.method != 0) {
            return c(Contradiction::SettingsOnPassMode);
        }
        if self.mode == 1 && self.audit_mode < 2 {
            return c(Contradiction::BadAuditTarget);
        }
        if self.mode != 1 && self.audit_mode != 0 {
            return c(Contradiction::BadAuditTarget);
        }
        if effective_mode != GROUP_COMMIT_MODE {
            if self.max_batch != 0 || self.max_batch_wait_us != 0 {
                return c(Contradiction::GroupOptionsOutsideGroupCommit);
            }
        } else if self.max_batch == 0 || self.max_batch > MAX_GROUP_BATCH {
            return Err(DecodeError::BadValue {
                field: "Action.max_batch",
                value: u32::from(self.max_batch),
            });
        } else if self.max_batch_wait_us > MAX_GROUP_BATCH_WAIT_US {
            return Err(DecodeError::BadValue {
                field: "Action.max_batch_wait_us",
                value: u32::from(self.max_batch_wait_us),
            });
        }
        Ok(())
    }
}

/// Decoded header of a policy blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyHeader {
    /// Blob length in bytes.
    pub total_length: u32,
    /// Number of rules that follow.
    pub rule_count: u32,
    /// Policy flags.
    pub flags: PolicyFlags,
    /// Action when no rule matches.
    pub default_action: ActionWire,
}

impl PolicyHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Writes the header.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(POLICY_MAGIC)?;
        w.u16(POLICY_FORMAT_VERSION)?;
        w.u16(0)?;
        w.u32(self.total_length)?;
        w.u32(self.rule_count)?;
        w.u32(self.flags.bits())?;
        w.u32(0)?;
        self.default_action.write(w)
    }
}

/// Decoded rule header + validated strings, borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleWire<'a> {
    /// Provider code (0..=4).
    pub provider: u16,
    /// The rule's action.
    pub action: ActionWire,
    /// Rule name (non-empty).
    pub name: Utf16Str<'a>,
    /// Share, empty = any share.
    pub share: Utf16Str<'a>,
    /// Path glob below the share, empty = any path.
    pub path: Utf16Str<'a>,
    /// Process image pattern, empty = any process.
    pub process: Utf16Str<'a>,
    /// Extensions joined by `|`, empty = any extension.
    pub extensions: Utf16Str<'a>,
}

impl RuleWire<'_> {
    /// Fixed header size in bytes.
    pub const HEADER_SIZE: usize = 36;

    /// Total encoded size in bytes of a rule with these string byte lengths,
    /// padding included; `None` on overflow.
    pub fn encoded_len(string_bytes: [usize; 5]) -> Option<usize> {
        let mut n = Self::HEADER_SIZE;
        for s in string_bytes {
            n = n.checked_add(s)?;
        }
        n.checked_add(3).map(|v| v & !3)
    }

    /// Writes the rule (strings given as UTF-16LE byte slices).
    pub fn write_raw(
        w: &mut Writer<'_>,
        provider: u16,
        action: &ActionWire,
        strings: [&[u8]; 5],
    ) -> Result<(), DecodeError> {
        let lens = strings.map(<[u8]>::len);
        let total = Self::encoded_len(lens).ok_or(DecodeError::Overflow {
            field: "rule_length",
        })?;
        let start = w.position();
        w.u32(clamp_u32(total))?;
        w.u16(provider)?;
        w.u16(0)?;
        action.write(w)?;
        for l in lens {
            w.u16(u16::try_from(l).map_err(|_| DecodeError::Overflow {
                field: "string length",
            })?)?;
        }
        w.u16(0)?;
        for s in strings {
            w.bytes(s)?;
        }
        let written = w.position() - start;
        w.zeros(total.saturating_sub(written))
    }
}

/// A structurally valid policy blob.
#[derive(Clone, Copy, Debug)]
pub struct PolicyBlob<'a> {
    /// The header.
    pub header: PolicyHeader,
    rules: &'a [u8],
}

impl<'a> PolicyBlob<'a> {
    /// Validates a whole blob: header, then every rule.
    ///
    /// Errors: `TooShort`, `TooLong` (> [`MAX_POLICY_BYTES`]), `BadMagic`,
    /// `UnknownVersion`, `NonZeroReserved`, `LengthMismatch` (total_length, or rules
    /// not filling the blob exactly), `UndefinedFlags`, `LimitExceeded` (rule count),
    /// `Overflow` (rule_length arithmetic), `BadValue`, `Utf16`, `Contradictory`,
    /// and `Name { EmptyComponent }` for an empty rule name.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        size_within(buf, PolicyHeader::SIZE, MAX_POLICY_BYTES as usize)?;
        let mut r = Reader::new(buf);
        let magic = r.u32()?;
        if magic != POLICY_MAGIC {
            return Err(DecodeError::BadMagic {
                expected: POLICY_MAGIC,
                got: magic,
            });
        }
        expect_version(u32::from(r.u16()?), u32::from(POLICY_FORMAT_VERSION))?;
        r.reserved16("PolicyHeader.reserved0")?;
        let total_length = r.u32()?;
        expect_declared_length(total_length, buf)?;
        let rule_count = r.u32()?;
        if rule_count > MAX_RULES {
            return Err(DecodeError::LimitExceeded {
                what: "rule_count",
                max: MAX_RULES,
                got: rule_count,
            });
        }
        let fl = r.u32()?;
        let flags = PolicyFlags::from_bits(fl).ok_or(DecodeError::UndefinedFlags {
            field: "PolicyHeader.flags",
            bits: fl & !PolicyFlags::all().bits(),
        })?;
        r.reserved32("PolicyHeader.reserved1")?;
        let default_action = ActionWire::read(&mut r)?;
        let rules = r.bytes(r.remaining())?;
        let blob = PolicyBlob {
            header: PolicyHeader {
                total_length,
                rule_count,
                flags,
                default_action,
            },
            rules,
        };
        let mut seen = 0u32;
        let mut it = blob.rules();
        for rule in &mut it {
            rule?;
            seen = seen.checked_add(1).ok_or(DecodeError::Overflow {
                field: "rule_count",
            })?;
        }
        if it.rest_len() != 0 {
            // More bytes than the declared rules occupy.
            return Err(DecodeError::LengthMismatch {
                declared: clamp_u32(buf.len() - it.rest_len()),
                actual: clamp_u32(buf.len()),
            });
        }
        if seen != rule_count {
            return Err(DecodeError::TooShort {
                needed: rule_count,
                got: seen,
            });
        }
        Ok(blob)
    }

    /// Iterates the rules in order (each already validated by `parse`, but the
    /// iterator re-checks so it is safe on its own).
    pub fn rules(&self) -> RuleIter<'a> {
        RuleIter {
            rest: self.rules,
            left: self.header.rule_count,
        }
    }
}

/// Iterator over the rules of a [`PolicyBlob`].
#[derive(Clone, Debug)]
pub struct RuleIter<'a> {
    rest: &'a [u8],
    left: u32,
}

impl RuleIter<'_> {
    /// Bytes after the rules consumed so far.
    pub fn rest_len(&self) -> usize {
        self.rest.len()
    }
}

impl<'a> Iterator for RuleIter<'a> {
    type Item = Result<RuleWire<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let res = parse_rule(self.rest);
        match res {
            Ok((rule, len)) => {
                self.rest = self.rest.get(len..).unwrap_or(&[]);
                Some(Ok(rule))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

fn parse_rule(buf: &[u8]) -> Result<(RuleWire<'_>, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let rule_length = r.u32()? as usize;
    if rule_length < RuleWire::HEADER_SIZE || rule_length % 4 != 0 {
        return Err(DecodeError::BadValue {
            field: "Rule.rule_length",
            value: clamp_u32(rule_length),
        });
    }
    if rule_length > buf.len() {
        return Err(DecodeError::TooShort {
            needed: clamp_u32(rule_length),
            got: clamp_u32(buf.len()),
        });
    }
    let provider = r.u16()?;
    if provider > MAX_PROVIDER {
        return Err(DecodeError::BadValue {
            field: "Rule.provider",
            value: u32::from(provider),
        });
    }
    r.reserved16("Rule.reserved0")?;
    let action = ActionWire::read(&mut r)?;
    let mut lens = [0usize; 5];
    for l in &mut lens {
        *l = usize::from(r.u16()?);
    }
    r.reserved16("Rule.reserved1")?;
    let needed = RuleWire::encoded_len(lens).ok_or(DecodeError::Overflow {
        field: "Rule strings",
    })?;
    if needed != rule_length {
        return Err(DecodeError::LengthMismatch {
            declared: clamp_u32(rule_length),
            actual: clamp_u32(needed),
        });
    }
    let [name, share, path, process, extensions] = read_rule_strings(&mut r, lens)?;
    let pad = r.bytes(rule_length - r.position())?;
    if pad.iter().any(|&b| b != 0) {
        return Err(DecodeError::NonZeroReserved {
            field: "Rule.padding",
        });
    }
    Ok((
        RuleWire {
            provider,
            action,
            name,
            share,
            path,
            process,
            extensions,
        },
        rule_length,
    ))
}

/// The five strings of a rule (name, share, path, process, extensions), `lens` bytes
/// each. Errors: `TooShort`, `Utf16 { .. }`, `Name { EmptyComponent }` (empty name).
/// (Its own function to keep `parse_rule`'s frame small in the unoptimised kernel
/// build.)
fn read_rule_strings<'a>(
    r: &mut Reader<'a>,
    lens: [usize; 5],
) -> Result<[Utf16Str<'a>; 5], DecodeError> {
    let [ln, ls, lp, lpr, le] = lens;
    let name = Utf16Str::new("rule.name", r.bytes(ln)?, MAX_RULE_NAME_UNITS)?;
    if name.is_empty() {
        return Err(DecodeError::Name {
            field: "rule.name",
            problem: crate::NameProblem::EmptyComponent,
        });
    }
    Ok([
        name,
        Utf16Str::new("rule.share", r.bytes(ls)?, MAX_SHARE_UNITS)?,
        Utf16Str::new("rule.path", r.bytes(lp)?, MAX_PATH_GLOB_UNITS)?,
        Utf16Str::new("rule.process", r.bytes(lpr)?, MAX_PROCESS_UNITS)?,
        Utf16Str::new("rule.extensions", r.bytes(le)?, MAX_EXTENSIONS_UNITS)?,
    ])
}

const_assert_eq!(ActionWire::SIZE, 2 * 6 + 4);
const_assert_eq!(
    PolicyHeader::SIZE,
    4 + 2 + 2 + 4 + 4 + 4 + 4 + ActionWire::SIZE
);
const_assert_eq!(RuleWire::HEADER_SIZE, 4 + 2 + 2 + ActionWire::SIZE + 2 * 6);
const_assert_eq!(RuleWire::HEADER_SIZE % 4, 0);
const_assert_eq!(PolicyHeader::SIZE % 8, 0);
