//! Why talking to the driver failed ([`PortError`]), its exit code, and how fltlib's
//! HRESULTs are classified into it ([`classify_hresult`]).

use flushguard_protocol::{DecodeError, NtStatus, PORT_NAME, PROTOCOL_VERSION, SERVICE_NAME};
use thiserror::Error;

use crate::exit;

/// Highest protocol version [`super::open`] tries when it probes for the driver's
/// version after a refused connect context.
pub(super) const PROBE_MAX_VERSION: u32 = PROTOCOL_VERSION + 16;

/// Commands that work without the driver, named in [`PortError::Unsupported`].
pub const WORKS_WITHOUT_DRIVER: &str = "`flushctl replay --trace FILE --policy FILE`, \
`flushctl policy check FILE`, `flushctl policy explain PATH --policy FILE`, \
`flushctl completions SHELL`, and every command with --offline (an in-process engine)";

/// Why talking to the driver failed. Every message says what to do.
#[derive(Debug, Error)]
pub enum PortError {
    /// The port does not exist: the driver is not loaded (or not installed).
    #[error(
        "the FlushGuard driver is not loaded ({detail}).\n  Load it from an elevated prompt \
         with `flushctl load` (same as `fltmc load {service}`); if `fltmc filters` does not \
         list it, install it first: right-click flushguard.inf > Install, or \
         `pnputil /add-driver flushguard.inf /install`.",
        service = SERVICE_NAME
    )]
    NotLoaded {
        /// What failed, e.g. `cannot open \FlushGuardPort: HRESULT 0x80070002`.
        detail: String,
    },
    /// The caller is not an administrator (the port and FilterLoad admit only
    /// Administrators and SYSTEM; FilterLoad also needs SeLoadDriverPrivilege).
    #[error(
        "access denied: {operation} needs administrator rights ({detail}).\n  Run flushctl \
         from an elevated prompt (right-click the terminal > Run as administrator)."
    )]
    AccessDenied {
        /// What was attempted.
        operation: &'static str,
        /// The failing call and code.
        detail: String,
    },
    /// flushctl and the driver speak different protocol versions.
    #[error(
        "protocol version mismatch: flushctl speaks protocol version {client}, {}.\n  Use the \
         flushctl.exe shipped in the same package as the loaded flushguard.sys (or update \
         the driver: `flushctl unload`, install the matching package, `flushctl load`).",
        match driver {
            Some(d) => format!("the driver speaks protocol version {d}"),
            None => format!(
                "the driver refused it (STATUS_REVISION_MISMATCH) and accepts no version \
                 from 1 to {PROBE_MAX_VERSION}"
            ),
        }
    )]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`] of this flushctl (or the one it was told to send).
        client: u32,
        /// The driver's, when it could be learned.
        driver: Option<u32>,
    },
    /// Not on Windows.
    #[error(
        "`{command}` talks to the FlushGuard driver, which exists only on Windows.\n  On this \
         system these work: {WORKS_WITHOUT_DRIVER}."
    )]
    Unsupported {
        /// The command that needed the driver.
        command: String,
    },
    /// The driver answered with a failure status.
    #[error("the driver rejected {command}: {status}{}", status.name().map(|n| format!(" ({n})")).unwrap_or_default())]
    Driver {
        /// The command.
        command: &'static str,
        /// The reply's NTSTATUS.
        status: NtStatus,
    },
    /// `FilterSendMessage` failed: the driver's message callback returned an error
    /// status (fltlib reports it as a Win32 HRESULT).
    #[error("the driver rejected {command}: {detail}")]
    Rejected {
        /// The command.
        command: &'static str,
        /// The HRESULT text.
        detail: String,
    },
    /// The reply could not be decoded (a driver/CLI mismatch the version check missed).
    #[error("malformed reply to {command}: {error}")]
    BadReply {
        /// The command.
        command: &'static str,
        /// The decoder's error.
        error: DecodeError,
    },
    /// Any other OS failure.
    #[error("{call} failed: {detail}")]
    Os {
        /// The Windows API called.
        call: &'static str,
        /// HRESULT / NTSTATUS text.
        detail: String,
    },
    /// The --offline state file could not be used.
    #[error("offline state file {path}: {detail}")]
    State {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

impl PortError {
    /// The process exit code (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            PortError::NotLoaded { .. } => exit::NOT_LOADED,
            PortError::AccessDenied { .. } => exit::ACCESS_DENIED,
            PortError::VersionMismatch { .. } => exit::VERSION_MISMATCH,
            PortError::Unsupported { .. } => exit::UNSUPPORTED,
            PortError::Driver { .. }
            | PortError::Rejected { .. }
            | PortError::BadReply { .. }
            | PortError::Os { .. }
            | PortError::State { .. } => exit::FAILED,
        }
    }
}

/// `HRESULT_FROM_WIN32` facility (7) marker.
const FACILITY_WIN32_HRESULT: u32 = 0x8007_0000;
/// `HRESULT_FROM_NT`: `NTSTATUS | FACILITY_NT_BIT` (0x1000_0000).
const FACILITY_NT_BIT: u32 = 0x1000_0000;

/// The fltlib calls whose failures [`classify_hresult`] interprets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FltlibCall {
    /// `FilterConnectCommunicationPort`.
    Connect,
    /// `FilterSendMessage`.
    SendMessage,
    /// `FilterLoad`.
    Load,
    /// `FilterUnload`.
    Unload,
}

impl FltlibCall {
    fn name(self) -> &'static str {
        match self {
            FltlibCall::Connect => "FilterConnectCommunicationPort",
            FltlibCall::SendMessage => "FilterSendMessage",
            FltlibCall::Load => "FilterLoad",
            FltlibCall::Unload => "FilterUnload",
        }
    }
}

/// Turns a failed fltlib HRESULT into a [`PortError`] that says what to do.
///
/// fltlib reports kernel failures as `HRESULT_FROM_WIN32(RtlNtStatusToDosError(status))`
/// (e.g. a missing port, `STATUS_OBJECT_NAME_NOT_FOUND`, becomes `ERROR_FILE_NOT_FOUND`,
/// 0x80070002); `HRESULT_FROM_NT` forms are accepted too. Recognised:
/// - not found (`ERROR_FILE_NOT_FOUND` 2, `ERROR_PATH_NOT_FOUND` 3,
///   `STATUS_OBJECT_NAME_NOT_FOUND` 0xC0000034): for Connect, the driver is not loaded;
///   for Unload, it is not loaded either; for Load, the service is not installed;
/// - `ERROR_SERVICE_ALREADY_RUNNING` (1056) / `ERROR_ALREADY_EXISTS` (183) on Load;
/// - access denied (`ERROR_ACCESS_DENIED` 5, `ERROR_PRIVILEGE_NOT_HELD` 1314,
///   `STATUS_ACCESS_DENIED` 0xC0000022, `STATUS_PRIVILEGE_NOT_HELD` 0xC0000061);
/// - version (`ERROR_REVISION_MISMATCH` 1306, `STATUS_REVISION_MISMATCH` 0xC0000059) on
///   Connect: the driver refused our [`ConnectContext`].
pub fn classify_hresult(call: FltlibCall, hr: u32, client_version: u32) -> PortError {
    let win32 = (hr & 0xFFFF_0000 == FACILITY_WIN32_HRESULT).then_some(hr & 0xFFFF);
    let nt = (hr & FACILITY_NT_BIT != 0 && hr & 0x8000_0000 != 0)
        .then_some((hr & !FACILITY_NT_BIT) | 0x4000_0000 | 0x8000_0000);
    let detail = format!("{} returned HRESULT 0x{hr:08X}", call.name());
    let is = |w: u32, n: u32| win32 == Some(w) || nt == Some(n);
    if is(2, 0xC000_0034) || is(3, 0xC000_003A) {
        return match call {
            FltlibCall::Load => PortError::NotLoaded {
                detail: format!("{detail}: the {SERVICE_NAME} service is not installed"),
            },
            _ => PortError::NotLoaded {
                detail: format!("cannot open {PORT_NAME}: {detail}"),
            },
        };
    }
    if is(5, 0xC000_0022) || is(1314, 0xC000_0061) {
        return PortError::AccessDenied {
            operation: match call {
                FltlibCall::Connect | FltlibCall::SendMessage => "opening the FlushGuard port",
                FltlibCall::Load => "loading a driver",
                FltlibCall::Unload => "unloading a driver",
            },
            detail,
        };
    }
    if call == FltlibCall::Connect && is(1306, 0xC000_0059) {
        return PortError::VersionMismatch {
            client: client_version,
            driver: None,
        };
    }
    if call == FltlibCall::SendMessage && (is(6, 0xC000_0008) || is(1236, 0xC000_0140)) {
        // ERROR_INVALID_HANDLE / ERROR_CONNECTION_ABORTED: the driver unloaded under us.
        return PortError::NotLoaded {
            detail: format!("the port closed while talking to it: {detail}"),
        };
    }
    PortError::Os {
        call: call.name(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hresults_are_classified() {
        let v = PROTOCOL_VERSION;
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0x8007_0002, v),
            PortError::NotLoaded { .. }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0xD000_0034, v),
            PortError::NotLoaded { .. }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0x8007_0005, v),
            PortError::AccessDenied { .. }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Load, 0x8007_0522, v),
            PortError::AccessDenied { .. }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0x8007_051A, v),
            PortError::VersionMismatch {
                client: 1,
                driver: None
            }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0xD000_0059, v),
            PortError::VersionMismatch { .. }
        ));
        assert!(matches!(
            classify_hresult(FltlibCall::Connect, 0x8007_0057, v),
            PortError::Os { .. }
        ));
        let msg = classify_hresult(FltlibCall::Connect, 0x8007_0002, v).to_string();
        assert!(
            msg.contains("flushctl load") && msg.contains("0x80070002"),
            "{msg}"
        );
    }
}
