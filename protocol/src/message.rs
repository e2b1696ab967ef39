//! Port messages: connect context, request/reply headers and fixed bodies.
//!
//! All layouts are little-endian, fixed-width (`u16`/`u32`/`u64` only), with
//! explicit reserved fields that must be zero; no pointers, `usize`, `bool` or Rust
//! enums cross the wire, so 32- and 64-bit clients see the same bytes. Sizes and
//! field offsets are pinned by `static_assertions` below. Validation order (one
//! place, as in minispy/scanner): length, then header fields, then body.

use crate::codec::{
    clamp_u32, expect_declared_length, expect_version, size_within, Reader, Writer,
};
use crate::{DecodeError, CONNECT_MAGIC, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, REPLY_ALIGNMENT};
use static_assertions::const_assert_eq;

/// Port command (`RequestHeader.command`, a `u16` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0: protocol and driver version ([`VersionInfo`]). Always answered.
    GetVersion,
    /// 1: policy generation, rule count, event ring state ([`StatusInfo`]).
    GetStatus,
    /// 2: the active policy as a policy blob (see [`crate::policy`]).
    GetPolicy,
    /// 3: replace the policy with the blob in the body, all or nothing;
    /// [`RequestFlags::PERSIST`] also stores it in the registry ([`SetPolicyResult`]).
    SetPolicy,
    /// 4: counters ([`StatsRequest`] -> [`crate::stats::StatsReplyHeader`] + arrays);
    /// [`RequestFlags::CALLBACK_COUNTERS`] adds the callback-layer counters.
    GetStats,
    /// 5: zero all counters.
    ResetStats,
    /// 6: events after a sequence number ([`EventsRequest`] -> [`crate::events`]).
    GetEvents,
}

impl Command {
    /// All commands in code order.
    pub const ALL: [Command; 7] = [
        Command::GetVersion,
        Command::GetStatus,
        Command::GetPolicy,
        Command::SetPolicy,
        Command::GetStats,
        Command::ResetStats,
        Command::GetEvents,
    ];

    /// Wire code.
    pub const fn code(self) -> u16 {
        match self {
            Command::GetVersion => 0,
            Command::GetStatus => 1,
            Command::GetPolicy => 2,
            Command::SetPolicy => 3,
            Command::GetStats => 4,
            Command::ResetStats => 5,
            Command::GetEvents => 6,
        }
    }

    /// Parses a wire code. Error: `UnknownCommand`.
    pub const fn from_code(code: u16) -> Result<Self, DecodeError> {
        Ok(match code {
            0 => Command::GetVersion,
            1 => Command::GetStatus,
            2 => Command::GetPolicy,
            3 => Command::SetPolicy,
            4 => Command::GetStats,
            5 => Command::ResetStats,
            6 => Command::GetEvents,
            c => return Err(DecodeError::UnknownCommand(c)),
        })
    }

    /// Request flags this command accepts.
    pub const fn allowed_flags(self) -> RequestFlags {
        match self {
            Command::SetPolicy => RequestFlags::PERSIST,
            Command::GetStats => RequestFlags::CALLBACK_COUNTERS,
            _ => RequestFlags::empty(),
        }
    }

    /// Exact body length in bytes for fixed-body requests, `None` for
    /// variable (SetPolicy: a policy blob).
    pub const fn fixed_body_len(self) -> Option<usize> {
        match self {
            Command::GetVersion | Command::GetStatus | Command::GetPolicy | Command::ResetStats => {
                Some(0)
            }
            Command::SetPolicy => None,
            Command::GetStats => Some(StatsRequest::SIZE),
            Command::GetEvents => Some(EventsRequest::SIZE),
        }
    }
}

bitflags::bitflags! {
    /// `RequestHeader.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct RequestFlags: u16 {
        /// SetPolicy: after validation, also write the blob to the registry value
        /// [`crate::REGISTRY_POLICY_VALUE`] so it is loaded at boot.
        const PERSIST = 0x0001;
        /// GetStats: also return the callback-layer counters (every fail-open and
        /// skip cause, [`crate::stats::CallbackCounter`]) after the failure slots.
        /// Opt-in so that the reply of a request without it keeps the version-1
        /// layout byte for byte (no protocol version change); a driver that predates
        /// the flag refuses it with `STATUS_INVALID_PARAMETER` (undefined flag bits).
        const CALLBACK_COUNTERS = 0x0002;
    }
}

/// Context passed to `FilterConnectCommunicationPort` (lpContext), checked by the
/// driver's ConnectNotifyCallback; a mismatch refuses the connection.
///
/// Layout (16 bytes): `magic u32 @0`, `version u32 @4`, `flags u32 @8` (none
/// defined, must be 0), `reserved u32 @12` (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectContext {
    /// [`CONNECT_MAGIC`].
    pub magic: u32,
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
}

impl ConnectContext {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// The context this build sends.
    pub const fn current() -> Self {
        ConnectContext {
            magic: CONNECT_MAGIC,
            version: PROTOCOL_VERSION,
        }
    }

    /// Encodes into exactly [`Self::SIZE`] bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Writer::new(&mut b);
        // Cannot fail: 16 bytes into a 16-byte array.
        let _ = w.u32(self.magic).and_then(|_| w.u32(self.version));
        b
    }

    /// Decodes and checks magic and version.
    ///
    /// Errors: `TooShort`/`TooLong` (length != 16), `BadMagic`, `UnknownVersion`,
    /// `UndefinedFlags`, `NonZeroReserved`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let magic = r.u32()?;
        if magic != CONNECT_MAGIC {
            return Err(DecodeError::BadMagic {
                expected: CONNECT_MAGIC,
                got: magic,
            });
        }
        let version = r.u32()?;
        expect_version(version, PROTOCOL_VERSION)?;
        let flags = r.u32()?;
        if flags != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "ConnectContext.flags",
                bits: flags,
            });
        }
        r.reserved32("ConnectContext.reserved")?;
        Ok(ConnectContext { magic, version })
    }
}

/// Checks `buf.len() == n`. Errors: `TooShort`, `TooLong`.
pub fn exact_len(buf: &[u8], n: usize) -> Result<(), DecodeError> {
    size_within(buf, n, n)
}

/// Header of every request (user -> driver).
///
/// Layout (16 bytes): `version u32 @0` (= [`PROTOCOL_VERSION`]), `command u16 @4`,
/// `flags u16 @6` ([`RequestFlags`], per command), `length u32 @8` (total request
/// bytes including this header; must equal the buffer length), `reserved u32 @12` (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// The command.
    pub command: Command,
    /// Flags, a subset of `command.allowed_flags()`.
    pub flags: RequestFlags,
    /// Total request length in bytes, header included.
    pub length: u32,
}

impl RequestHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the header.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(PROTOCOL_VERSION)?;
        w.u16(self.command.code())?;
        w.u16(self.flags.bits())?;
        w.u32(self.length)?;
        w.u32(0)
    }

    /// Decodes and validates a whole request buffer's header and returns it with
    /// the body slice.
    ///
    /// Errors, checked in this order: `TooShort` (< 16 bytes), `TooLong`
    /// (> [`MAX_MESSAGE_BYTES`]), `UnknownVersion`, `UnknownCommand`,
    /// `LengthMismatch` (declared != buffer), `NonZeroReserved`, `UndefinedFlags`
    /// (flags outside the command's set), `TooShort`/`TooLong` for a fixed body of
    /// the wrong size.
    pub fn decode(buf: &[u8]) -> Result<(RequestHeader, &[u8]), DecodeError> {
        size_within(buf, Self::SIZE, MAX_MESSAGE_BYTES as usize)?;
        let mut r = Reader::new(buf);
        expect_version(r.u32()?, PROTOCOL_VERSION)?;
        let command = Command::from_code(r.u16()?)?;
        let flag_bits = r.u16()?;
        let length = r.u32()?;
        expect_declared_length(length, buf)?;
        r.reserved32("RequestHeader.reserved")?;
        let allowed = command.allowed_flags().bits();
        if flag_bits & !allowed != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "RequestHeader.flags",
                bits: u32::from(flag_bits & !allowed),
            });
        }
        let body = r.bytes(r.remaining())?;
        if let Some(n) = command.fixed_body_len() {
            exact_len(body, n)?;
        }
        Ok((
            RequestHeader {
                command,
                flags: RequestFlags::from_bits_retain(flag_bits),
                length,
            },
            body,
        ))
    }
}

/// Header of every reply (driver -> user).
///
/// Layout (16 bytes): `version u32 @0`, `status u32 @4` (NTSTATUS bits of the
/// command's outcome), `length u32 @8` (total reply bytes including this header),
/// `reserved u32 @12` (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    /// Outcome of the command.
    pub status: crate::NtStatus,
    /// Total reply length in bytes, header included.
    pub length: u32,
}

impl ReplyHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the header.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(PROTOCOL_VERSION)?;
        w.u32(self.status.to_bits())?;
        w.u32(self.length)?;
        w.u32(0)
    }

    /// Decodes a whole reply and returns the header and body.
    ///
    /// Errors: `TooShort`, `UnknownVersion`, `LengthMismatch`, `NonZeroReserved`.
    pub fn decode(buf: &[u8]) -> Result<(ReplyHeader, &[u8]), DecodeError> {
        size_within(buf, Self::SIZE, usize::MAX)?;
        let mut r = Reader::new(buf);
        expect_version(r.u32()?, PROTOCOL_VERSION)?;
        let status = crate::NtStatus::from_bits(r.u32()?);
        let length = r.u32()?;
        expect_declared_length(length, buf)?;
        r.reserved32("ReplyHeader.reserved")?;
        Ok((ReplyHeader { status, length }, r.bytes(r.remaining())?))
    }
}

/// Checks the caller's output buffer before anything is written: address
/// aligned to [`REPLY_ALIGNMENT`] and at least `needed` bytes.
///
/// `address` is the user-mode OutputBuffer address as an integer (the driver
/// passes it; pure code never dereferences it). Errors: `Misaligned`
/// (`STATUS_DATATYPE_MISALIGNMENT`), `OutputTooSmall` (`STATUS_BUFFER_TOO_SMALL`).
pub fn check_output_buffer(address: u64, len: u32, needed: u32) -> Result<(), DecodeError> {
    if address % u64::from(REPLY_ALIGNMENT) != 0 {
        return Err(DecodeError::Misaligned {
            alignment: REPLY_ALIGNMENT,
        });
    }
    if len < needed {
        return Err(DecodeError::OutputTooSmall { needed, got: len });
    }
    Ok(())
}

/// GetVersion reply body.
///
/// Layout (16 bytes): `protocol_version u32 @0`, `major u16 @4`, `minor u16 @6`,
/// `patch u16 @8`, `reserved u16 @10` (0), `capabilities u32 @12` ([`Capabilities`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// [`PROTOCOL_VERSION`] of the driver.
    pub protocol_version: u32,
    /// Driver semantic version.
    pub major: u16,
    /// Driver semantic version.
    pub minor: u16,
    /// Driver semantic version.
    pub patch: u16,
    /// What the running system offers.
    pub capabilities: Capabilities,
}

bitflags::bitflags! {
    /// `VersionInfo.capabilities`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Capabilities: u32 {
        /// `FltFlushBuffers2` resolved with `FltGetRoutineAddress` (Windows 10 1903+);
        /// otherwise the `filter` method falls back to `FltFlushBuffers` (full flush).
        const FLT_FLUSH_BUFFERS2 = 0x0000_0001;
    }
}

impl VersionInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the body.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(self.protocol_version)?;
        w.u16(self.major)?;
        w.u16(self.minor)?;
        w.u16(self.patch)?;
        w.u16(0)?;
        w.u32(self.capabilities.bits())
    }

    /// Decodes the body. Errors: length, `NonZeroReserved`, `UndefinedFlags`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let protocol_version = r.u32()?;
        let (major, minor, patch) = (r.u16()?, r.u16()?, r.u16()?);
        r.reserved16("VersionInfo.reserved")?;
        let caps = r.u32()?;
        let capabilities = Capabilities::from_bits(caps).ok_or(DecodeError::UndefinedFlags {
            field: "VersionInfo.capabilities",
            bits: caps & !Capabilities::all().bits(),
        })?;
        Ok(VersionInfo {
            protocol_version,
            major,
            minor,
            patch,
            capabilities,
        })
    }
}

bitflags::bitflags! {
    /// `StatusInfo.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct StatusFlags: u32 {
        /// A policy has been loaded (registry or SetPolicy); else pass-through.
        const POLICY_LOADED = 0x0000_0001;
        /// The active policy came from the registry at load time.
        const FROM_REGISTRY = 0x0000_0002;
        /// The active policy opts local volumes in.
        const ATTACH_LOCAL_VOLUMES = 0x0000_0004;
    }
}

/// GetStatus reply body.
///
/// Layout (40 bytes): `generation u64 @0`, `rule_count u32 @8`, `flags u32 @12`
/// ([`StatusFlags`]), `instances u32 @16` (attached volumes), `reserved u32 @20`,
/// `next_event_seq u64 @24`, `events_dropped u64 @32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusInfo {
    /// Policy generation (starts at 1, +1 per accepted SetPolicy).
    pub generation: u64,
    /// Rules in the active policy (default rule not counted).
    pub rule_count: u32,
    /// State flags.
    pub flags: StatusFlags,
    /// Volumes (instances) the filter is attached to.
    pub instances: u32,
    /// Sequence number the next event will get.
    pub next_event_seq: u64,
    /// Events overwritten before they were read, since load.
    pub events_dropped: u64,
}

impl StatusInfo {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Writes the body.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.generation)?;
        w.u32(self.rule_count)?;
        w.u32(self.flags.bits())?;
        w.u32(self.instances)?;
        w.u32(0)?;
        w.u64(self.next_event_seq)?;
        w.u64(self.events_dropped)
    }

    /// Decodes the body. Errors: length, `UndefinedFlags`, `NonZeroReserved`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let generation = r.u64()?;
        let rule_count = r.u32()?;
        let fl = r.u32()?;
        let flags = StatusFlags::from_bits(fl).ok_or(DecodeError::UndefinedFlags {
            field: "StatusInfo.flags",
            bits: fl & !StatusFlags::all().bits(),
        })?;
        let instances = r.u32()?;
        r.reserved32("StatusInfo.reserved")?;
        Ok(StatusInfo {
            generation,
            rule_count,
            flags,
            instances,
            next_event_seq: r.u64()?,
            events_dropped: r.u64()?,
        })
    }
}

/// SetPolicy reply body.
///
/// Layout (16 bytes): `generation u64 @0` (of the new policy), `rule_count u32 @8`,
/// `flags u32 @12` (bit 0: persist was requested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetPolicyResult {
    /// Generation of the policy now active.
    pub generation: u64,
    /// Its rule count.
    pub rule_count: u32,
    /// Whether [`RequestFlags::PERSIST`] was set (the driver writes the registry).
    pub persist: bool,
}

impl SetPolicyResult {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the body.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.generation)?;
        w.u32(self.rule_count)?;
        w.u32(u32::from(self.persist))
    }

    /// Decodes the body. Errors: length, `UndefinedFlags`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let generation = r.u64()?;
        let rule_count = r.u32()?;
        let fl = r.u32()?;
        if fl & !1 != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "SetPolicyResult.flags",
                bits: fl & !1,
            });
        }
        Ok(SetPolicyResult {
            generation,
            rule_count,
            persist: fl & 1 != 0,
        })
    }
}

/// GetStats request body: a window of per-rule counters.
///
/// Layout (8 bytes): `first_rule u32 @0`, `max_rules u32 @4`.
/// `first_rule + max_rules` must not overflow `u32` (`Overflow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsRequest {
    /// Index of the first rule whose counters are returned.
    pub first_rule: u32,
    /// At most this many per-rule entries.
    pub max_rules: u32,
}

impl StatsRequest {
    /// Encoded size in bytes.
    pub const SIZE: usize = 8;

    /// Writes the body.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u32(self.first_rule)?;
        w.u32(self.max_rules)
    }

    /// Decodes the body. Errors: length, `Overflow`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let first_rule = r.u32()?;
        let max_rules = r.u32()?;
        if first_rule.checked_add(max_rules).is_none() {
            return Err(DecodeError::Overflow {
                field: "StatsRequest.first_rule+max_rules",
            });
        }
        Ok(StatsRequest {
            first_rule,
            max_rules,
        })
    }
}

/// GetEvents request body.
///
/// Layout (16 bytes): `after_seq u64 @0` (return events with seq > after_seq;
/// 0 = from the oldest kept), `max_events u32 @8` (1..=[`crate::events::MAX_EVENTS_PER_REPLY`]),
/// `reserved u32 @12` (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsRequest {
    /// Return events whose sequence number is greater.
    pub after_seq: u64,
    /// Upper bound on returned events.
    pub max_events: u32,
}

impl EventsRequest {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Writes the body.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.after_seq)?;
        w.u32(self.max_events)?;
        w.u32(0)
    }

    /// Decodes the body. Errors: length, `NonZeroReserved`, `LimitExceeded`
    /// (max_events 0 or above the limit).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        exact_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let after_seq = r.u64()?;
        let max_events = r.u32()?;
        r.reserved32("EventsRequest.reserved")?;
        if max_events == 0 || max_events > crate::events::MAX_EVENTS_PER_REPLY {
            return Err(DecodeError::LimitExceeded {
                what: "EventsRequest.max_events",
                max: crate::events::MAX_EVENTS_PER_REPLY,
                got: max_events,
            });
        }
        Ok(EventsRequest {
            after_seq,
            max_events,
        })
    }
}

/// Encodes a complete request (header + body) into `out`; returns its length.
/// Errors: `OutputTooSmall`, `TooLong` (over [`MAX_MESSAGE_BYTES`]).
pub fn encode_request(
    command: Command,
    flags: RequestFlags,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, DecodeError> {
    let total = RequestHeader::SIZE
        .checked_add(body.len())
        .ok_or(DecodeError::Overflow {
            field: "request length",
        })?;
    if total > MAX_MESSAGE_BYTES as usize {
        return Err(DecodeError::TooLong {
            max: MAX_MESSAGE_BYTES,
            got: clamp_u32(total),
        });
    }
    let mut w = Writer::new(out);
    RequestHeader {
        command,
        flags,
        length: total as u32,
    }
    .write(&mut w)?;
    w.bytes(body)?;
    Ok(w.position())
}

// Layout pins.
const_assert_eq!(ConnectContext::SIZE, 16);
const_assert_eq!(RequestHeader::SIZE, 16);
const_assert_eq!(ReplyHeader::SIZE, 16);
const_assert_eq!(VersionInfo::SIZE, 16);
const_assert_eq!(StatusInfo::SIZE, 40);
const_assert_eq!(SetPolicyResult::SIZE, 16);
const_assert_eq!(StatsRequest::SIZE, 8);
const_assert_eq!(EventsRequest::SIZE, 16);
const_assert_eq!(RequestHeader::SIZE % REPLY_ALIGNMENT as usize, 0);
const_assert_eq!(ReplyHeader::SIZE % REPLY_ALIGNMENT as usize, 0);
