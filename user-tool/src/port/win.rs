//! The driver's communication port and FilterLoad/FilterUnload through fltlib.dll.
//!
//! This is the only module of flushctl with `unsafe` code. Each `unsafe` block makes one
//! FFI call; the pointers it passes point into Rust values that outlive the call (the
//! calls are synchronous and keep no pointer after they return), and every handle that
//! is opened is owned by exactly one [`OwnedHandle`] that closes it once.
//!
//! Sources: "FilterConnectCommunicationPort function (fltuser.h)", "FilterSendMessage
//! function (fltuser.h)", "FilterLoad function (fltuser.h)", "FilterUnload function
//! (fltuser.h)", "AdjustTokenPrivileges function (securitybaseapi.h)" on
//! learn.microsoft.com.

use std::ffi::c_void;

use flushguard_protocol::{ConnectContext, PORT_NAME};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_NOT_ALL_ASSIGNED, HANDLE, INVALID_HANDLE_VALUE, LUID,
};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, LookupPrivilegeValueW, LUID_AND_ATTRIBUTES, SE_PRIVILEGE_ENABLED,
    TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FilterConnectCommunicationPort, FilterLoad, FilterSendMessage, FilterUnload,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::error::{classify_hresult, FltlibCall, PortError};
use super::transport::Port;

/// NUL-terminated UTF-16 for a `PCWSTR` argument.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A kernel object handle closed exactly once, on drop.
struct OwnedHandle(HANDLE);

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        if !self.0.is_null() && self.0 != INVALID_HANDLE_VALUE {
            // SAFETY: self.0 was returned open by FilterConnectCommunicationPort or
            // OpenProcessToken and is owned only by this OwnedHandle; it is closed once.
            unsafe {
                CloseHandle(self.0);
            }
        }
    }
}

/// A connection to `\FlushGuardPort`.
pub(super) struct DriverPort {
    handle: OwnedHandle,
}

impl Port for DriverPort {
    fn send(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, PortError> {
        let in_len = u32::try_from(request.len()).map_err(|_| PortError::Os {
            call: "FilterSendMessage",
            detail: "request larger than 4 GiB".into(),
        })?;
        let out_len = u32::try_from(reply.len()).unwrap_or(u32::MAX);
        let mut returned: u32 = 0;
        // SAFETY: `self.handle` is an open communication port handle owned by this
        // DriverPort; `request` is readable for `in_len` bytes and `reply` writable for
        // `out_len` bytes for the whole (synchronous) call; `returned` is a valid u32.
        let hr = unsafe {
            FilterSendMessage(
                self.handle.0,
                request.as_ptr().cast::<c_void>(),
                in_len,
                reply.as_mut_ptr().cast::<c_void>(),
                out_len,
                &mut returned,
            )
        };
        if hr < 0 {
            return Err(classify_hresult(
                FltlibCall::SendMessage,
                hr as u32,
                flushguard_protocol::PROTOCOL_VERSION,
            ));
        }
        Ok(returned as usize)
    }

    fn describe(&self) -> &'static str {
        "driver"
    }
}

/// `FilterConnectCommunicationPort(PORT_NAME, 0, ctx, 16, NULL, &h)`.
pub(super) fn connect(ctx: &ConnectContext, _command: &str) -> Result<Box<dyn Port>, PortError> {
    let name = wide(PORT_NAME);
    let context = ctx.encode();
    let mut handle: HANDLE = INVALID_HANDLE_VALUE;
    // SAFETY: `name` is a NUL-terminated UTF-16 string and `context` a 16-byte buffer,
    // both alive for the synchronous call; NULL security attributes are allowed; `handle`
    // is a valid out pointer. On success we own the returned handle.
    let hr = unsafe {
        FilterConnectCommunicationPort(
            name.as_ptr(),
            0,
            context.as_ptr().cast::<c_void>(),
            context.len() as u16,
            std::ptr::null(),
            &mut handle,
        )
    };
    if hr < 0 {
        return Err(classify_hresult(
            FltlibCall::Connect,
            hr as u32,
            ctx.version,
        ));
    }
    Ok(Box::new(DriverPort {
        handle: OwnedHandle(handle),
    }))
}

/// Enables SeLoadDriverPrivilege in this process's token (present but disabled in an
/// elevated administrator's token; absent otherwise), as `fltmc load` does.
fn enable_load_driver_privilege(operation: &'static str) -> Result<(), PortError> {
    let denied = |detail: String| PortError::AccessDenied { operation, detail };
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle; no pointer is involved.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: `process` is the current-process pseudo-handle; `token` is a valid out
    // pointer; on success the token handle is owned by `_token` below.
    let ok =
        unsafe { OpenProcessToken(process, TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY, &mut token) };
    if ok == 0 {
        // SAFETY: reads this thread's last-error value; no pointer.
        let err = unsafe { GetLastError() };
        return Err(denied(format!("OpenProcessToken failed with error {err}")));
    }
    let _token = OwnedHandle(token);
    let name = wide("SeLoadDriverPrivilege");
    let mut luid = LUID {
        LowPart: 0,
        HighPart: 0,
    };
    // SAFETY: NULL system name = local system; `name` is NUL-terminated UTF-16 alive for
    // the call; `luid` is a valid out pointer.
    let ok = unsafe { LookupPrivilegeValueW(std::ptr::null(), name.as_ptr(), &mut luid) };
    if ok == 0 {
        // SAFETY: reads this thread's last-error value; no pointer.
        let err = unsafe { GetLastError() };
        return Err(denied(format!(
            "LookupPrivilegeValueW failed with error {err}"
        )));
    }
    let privileges = TOKEN_PRIVILEGES {
        PrivilegeCount: 1,
        Privileges: [LUID_AND_ATTRIBUTES {
            Luid: luid,
            Attributes: SE_PRIVILEGE_ENABLED,
        }],
    };
    // SAFETY: `token` is open with TOKEN_ADJUST_PRIVILEGES (owned by `_token`);
    // `privileges` is a valid TOKEN_PRIVILEGES for the call; no previous state requested.
    let ok = unsafe {
        AdjustTokenPrivileges(
            token,
            0,
            &privileges,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    // SAFETY: reads this thread's last-error value; no pointer.
    let err = unsafe { GetLastError() };
    if ok == 0 || err == ERROR_NOT_ALL_ASSIGNED {
        return Err(denied(format!(
            "SeLoadDriverPrivilege could not be enabled (error {err})"
        )));
    }
    Ok(())
}

/// `FilterLoad(service)` after enabling SeLoadDriverPrivilege.
pub(super) fn filter_load(service: &str, _command: &str) -> Result<(), PortError> {
    enable_load_driver_privilege("loading a driver")?;
    let name = wide(service);
    // SAFETY: `name` is a NUL-terminated UTF-16 string alive for the synchronous call.
    let hr = unsafe { FilterLoad(name.as_ptr()) };
    if hr < 0 {
        return Err(classify_hresult(
            FltlibCall::Load,
            hr as u32,
            flushguard_protocol::PROTOCOL_VERSION,
        ));
    }
    Ok(())
}

/// `FilterUnload(service)` after enabling SeLoadDriverPrivilege.
pub(super) fn filter_unload(service: &str, _command: &str) -> Result<(), PortError> {
    enable_load_driver_privilege("unloading a driver")?;
    let name = wide(service);
    // SAFETY: `name` is a NUL-terminated UTF-16 string alive for the synchronous call.
    let hr = unsafe { FilterUnload(name.as_ptr()) };
    if hr < 0 {
        return Err(classify_hresult(
            FltlibCall::Unload,
            hr as u32,
            flushguard_protocol::PROTOCOL_VERSION,
        ));
    }
    Ok(())
}
