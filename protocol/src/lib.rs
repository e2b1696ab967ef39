//! Wire format shared by `flushguard.sys` and `flushctl`: names, port protocol,
//! policy blob layout, stats and event layouts, `NTSTATUS` values and the Windows
//! constants the decisions use.
//!
//! `no_std`, no `alloc`, no `unsafe`. Everything on the wire is little-endian,
//! fixed-width, with explicit zero reserved fields; every decoder returns a typed
//! [`DecodeError`] whose [`DecodeError::ntstatus`] is what the driver answers.
//! Decoders never panic on any input (proptest + cargo-fuzz check this).
#![no_std]
#![forbid(unsafe_code)]

pub mod codec;
mod error;
pub mod events;
mod flags;
pub mod message;
pub mod nt;
pub mod policy;
pub mod stats;
mod status;

pub use error::{Contradiction, DecodeError, NameProblem, Utf16Problem};
pub use flags::FlushFlags;
pub use message::{
    Capabilities, Command, ConnectContext, EventsRequest, ReplyHeader, RequestFlags, RequestHeader,
    SetPolicyResult, StatsRequest, StatusFlags, StatusInfo, VersionInfo,
};
pub use status::{NtStatus, StatusClass};

/// Service (and driver) name: the INF `AddService` name and the
/// `HKLM\SYSTEM\CurrentControlSet\Services\<SERVICE_NAME>` key.
pub const SERVICE_NAME: &str = "FlushGuard";

/// Filter communication port name (FltCreateCommunicationPort /
/// FilterConnectCommunicationPort).
pub const PORT_NAME: &str = "\\FlushGuardPort";

/// Minifilter altitude (INF `Instance1.Altitude`). Allocated by Microsoft per
/// load-order group ("Load order groups and altitudes for minifilter drivers");
/// this value lies in the FSFilter Activity Monitor range (360000-389999), above
/// every group that caches, transforms, replicates or backs up file data, and is
/// not in Microsoft's list of allocated altitudes (between simrep.sys 371100 and
/// CbSampleDrv.sys 380000). A production release needs a Microsoft-assigned value;
/// see docs/build.md, "Altitude". The single definition the INF check compares against;
/// owned by the build pipeline.
pub const ALTITUDE: &str = "375850";

/// Pool tag for every FlushGuard allocation (ExAllocatePool2). Bytes `FlGd` in
/// memory order, so poolmon/`!pool` show `FlGd`.
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"FlGd");

/// Port protocol version; the connect context and every header carry it.
pub const PROTOCOL_VERSION: u32 = 1;

/// `ConnectContext.magic`: the bytes `FGcn`.
pub const CONNECT_MAGIC: u32 = u32::from_le_bytes(*b"FGcn");

/// Largest request or reply in bytes: the largest policy blob plus a header.
pub const MAX_MESSAGE_BYTES: u32 = policy::MAX_POLICY_BYTES + RequestHeader::SIZE as u32;

/// Required alignment of the caller's reply buffer address, in bytes (all reply
/// fields are naturally aligned from there). Misalignment is
/// `STATUS_DATATYPE_MISALIGNMENT`.
pub const REPLY_ALIGNMENT: u32 = 8;

/// Registry key below the service key that holds driver parameters.
pub const REGISTRY_PARAMETERS_KEY: &str = "Parameters";

/// `REG_BINARY` value (under [`REGISTRY_PARAMETERS_KEY`]) holding a policy blob
/// (same bytes as a SetPolicy body) loaded at DriverEntry.
pub const REGISTRY_POLICY_VALUE: &str = "Policy";

#[cfg(test)]
mod tests;
