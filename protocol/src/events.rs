//! GetEvents reply layout.
//!
//! ```text
//! EventsReplyHeader (24 bytes)
//!   next_seq u64 @0 (seq the next event will get)   dropped u64 @8 (overwritten unread)
//!   count u32 @16   reserved u32 @20 = 0
//! count x EventRecord (176 bytes each)
//!   seq u64 @0      time u64 @8 (100-ns units since 1601-01-01 UTC, KeQuerySystemTime)
//!   kind u16 @16 (EventKind code)   method u16 @18 (0 filter, 1 native; flush events)
//!   status u32 @20 (NTSTATUS bits)  generation u64 @24   rule u32 @32 (NO_RULE = default)
//!   name_units u16 @36   flags u16 @38 (bit 0: name truncated at the front)
//!   value u64 @40 (kind-specific)   name [u16; EVENT_NAME_UNITS] @48 (zero-padded)
//! ```

use crate::codec::{Reader, Writer};
use crate::{DecodeError, NtStatus};
use static_assertions::const_assert_eq;

/// Largest `EventsRequest.max_events`.
pub const MAX_EVENTS_PER_REPLY: u32 = 256;
/// File-name characters kept per event (the tail of the name), UTF-16 code units.
pub const EVENT_NAME_UNITS: usize = 64;
/// `EventRecord.rule` when the default rule (or no rule) applies.
pub const NO_RULE: u32 = u32::MAX;

/// Event kind (`EventRecord.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// 1: a flush FlushGuard issued failed. `status` = its NTSTATUS, `value` =
    /// latency in µs, `method`, `rule`, `name` set.
    FlushFailed,
    /// 2: a new policy became active. `generation`, `value` = rule count,
    /// `flags` bit 1 = persisted.
    PolicyChanged,
    /// 3: the registry policy value `Parameters\Policy` was rejected. `value` says
    /// when: [`REGISTRY_LOAD`] (0) at DriverEntry, the value could not be read or
    /// decoded and the driver runs pass-through (`status` = the read or decode
    /// error status); [`REGISTRY_STORE`] (1) a SetPolicy with
    /// `RequestFlags::PERSIST` could not write it, so the request failed with that
    /// `status` and the policy in force (`generation`) did not change.
    RegistryPolicyRejected,
    /// 4: counters were reset.
    StatsReset,
}

impl EventKind {
    /// Wire code.
    pub const fn code(self) -> u16 {
        match self {
            EventKind::FlushFailed => 1,
            EventKind::PolicyChanged => 2,
            EventKind::RegistryPolicyRejected => 3,
            EventKind::StatsReset => 4,
        }
    }

    /// Parses a wire code. Error: `BadValue`.
    pub const fn from_code(c: u16) -> Result<Self, DecodeError> {
        Ok(match c {
            1 => EventKind::FlushFailed,
            2 => EventKind::PolicyChanged,
            3 => EventKind::RegistryPolicyRejected,
            4 => EventKind::StatsReset,
            v => {
                return Err(DecodeError::BadValue {
                    field: "EventRecord.kind",
                    value: v as u32,
                })
            }
        })
    }
}

/// `EventRecord.value` of a [`EventKind::RegistryPolicyRejected`] event: reading
/// the value at DriverEntry failed.
pub const REGISTRY_LOAD: u64 = 0;
/// `EventRecord.value` of a [`EventKind::RegistryPolicyRejected`] event: writing the
/// value for a persisted SetPolicy failed (nothing changed).
pub const REGISTRY_STORE: u64 = 1;

/// `EventRecord.flags` bit: the name was cut to its last [`EVENT_NAME_UNITS`] units.
pub const EVENT_FLAG_NAME_TRUNCATED: u16 = 0x0001;
/// `EventRecord.flags` bit: the policy change was persisted to the registry.
pub const EVENT_FLAG_PERSISTED: u16 = 0x0002;

/// One event, fixed size, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// 100-ns units since 1601-01-01 UTC.
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
    /// Flush method code (flush events), else 0.
    pub method: u16,
    /// Status involved (`SUCCESS` when none).
    pub status: NtStatus,
    /// Policy generation at the time.
    pub generation: u64,
    /// Rule index or [`NO_RULE`].
    pub rule: u32,
    /// `EVENT_FLAG_*`.
    pub flags: u16,
    /// Kind-specific value (see [`EventKind`]).
    pub value: u64,
    /// Valid code units in `name`.
    pub name_units: u16,
    /// File name tail, UTF-16, zero-padded.
    pub name: [u16; EVENT_NAME_UNITS],
}

impl EventRecord {
    /// Encoded size in bytes.
    pub const SIZE: usize = 48 + 2 * EVENT_NAME_UNITS;

    /// An event with no name.
    pub const fn new(kind: EventKind, status: NtStatus, generation: u64, value: u64) -> Self {
        EventRecord {
            seq: 0,
            time: 0,
            kind,
            method: 0,
            status,
            generation,
            rule: NO_RULE,
            flags: 0,
            value,
            name_units: 0,
            name: [0; EVENT_NAME_UNITS],
        }
    }

    /// Stores the last [`EVENT_NAME_UNITS`] code units of `name`, setting
    /// [`EVENT_FLAG_NAME_TRUNCATED`] when cut. Does not allocate.
    pub fn set_name(&mut self, name: &str) {
        let total = crate::codec::utf16_len(name);
        let skip = total.saturating_sub(EVENT_NAME_UNITS);
        self.name = [0; EVENT_NAME_UNITS];
        let mut n = 0usize;
        for (slot, u) in self.name.iter_mut().zip(name.encode_utf16().skip(skip)) {
            *slot = u;
            n += 1;
        }
        self.name_units = n as u16;
        if skip > 0 {
            self.flags |= EVENT_FLAG_NAME_TRUNCATED;
        } else {
            self.flags &= !EVENT_FLAG_NAME_TRUNCATED;
        }
    }

    /// The stored name (lossy on a surrogate pair cut at the front).
    pub fn name_chars(&self) -> impl Iterator<Item = char> + '_ {
        let n = usize::from(self.name_units).min(EVENT_NAME_UNITS);
        char::decode_utf16(self.name.iter().take(n).copied())
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// Writes the record.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.seq)?;
        w.u64(self.time)?;
        w.u16(self.kind.code())?;
        w.u16(self.method)?;
        w.u32(self.status.to_bits())?;
        w.u64(self.generation)?;
        w.u32(self.rule)?;
        w.u16(self.name_units)?;
        w.u16(self.flags)?;
        w.u64(self.value)?;
        for u in self.name {
            w.u16(u)?;
        }
        Ok(())
    }

    /// Reads a record. Errors: `TooShort`, `BadValue` (kind, name_units > 64),
    /// `UndefinedFlags`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seq = r.u64()?;
        let time = r.u64()?;
        let kind = EventKind::from_code(r.u16()?)?;
        let method = r.u16()?;
        let status = NtStatus::from_bits(r.u32()?);
        let generation = r.u64()?;
        let rule = r.u32()?;
        let name_units = r.u16()?;
        if usize::from(name_units) > EVENT_NAME_UNITS {
            return Err(DecodeError::BadValue {
                field: "EventRecord.name_units",
                value: u32::from(name_units),
            });
        }
        let flags = r.u16()?;
        let known = EVENT_FLAG_NAME_TRUNCATED | EVENT_FLAG_PERSISTED;
        if flags & !known != 0 {
            return Err(DecodeError::UndefinedFlags {
                field: "EventRecord.flags",
                bits: u32::from(flags & !known),
            });
        }
        let value = r.u64()?;
        let mut name = [0u16; EVENT_NAME_UNITS];
        for u in &mut name {
            *u = r.u16()?;
        }
        Ok(EventRecord {
            seq,
            time,
            kind,
            method,
            status,
            generation,
            rule,
            flags,
            value,
            name_units,
            name,
        })
    }
}

/// Fixed head of a GetEvents reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsReplyHeader {
    /// Sequence number the next event will get.
    pub next_seq: u64,
    /// Events overwritten before being read, since load.
    pub dropped: u64,
    /// Records that follow.
    pub count: u32,
}

impl EventsReplyHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 24;

    /// Writes the header.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.next_seq)?;
        w.u64(self.dropped)?;
        w.u32(self.count)?;
        w.u32(0)
    }

    /// Reads the header. Errors: `TooShort`, `NonZeroReserved`, `LimitExceeded`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let next_seq = r.u64()?;
        let dropped = r.u64()?;
        let count = r.u32()?;
        r.reserved32("EventsReplyHeader.reserved")?;
        if count > MAX_EVENTS_PER_REPLY {
            return Err(DecodeError::LimitExceeded {
                what: "EventsReplyHeader.count",
                max: MAX_EVENTS_PER_REPLY,
                got: count,
            });
        }
        Ok(EventsReplyHeader {
            next_seq,
            dropped,
            count,
        })
    }
}

const_assert_eq!(EventRecord::SIZE, 176);
const_assert_eq!(EventsReplyHeader::SIZE, 24);
const_assert_eq!(EventRecord::SIZE % 8, 0);
