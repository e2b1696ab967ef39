//! Debugger output through `DbgPrintEx` (imported from ntoskrnl.exe).
//!
//! Messages go to component `DPFLTR_IHVDRIVER_ID` (77); errors at `DPFLTR_ERROR_LEVEL`
//! (0, always shown), information at `DPFLTR_INFO_LEVEL` (3, shown when the debug filter
//! mask for IHVDRIVER enables it). Source: DDI page "DbgPrintEx". The format strings are
//! fixed here; callers only pass a C string literal and an integer, so no user data
//! reaches a format string. Callable at IRQL <= DIRQL.

use core::ffi::CStr;

/// `DPFLTR_IHVDRIVER_ID` (dpfilter.h): the component id for third-party drivers.
const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_ERROR_LEVEL` (dpfilter.h).
const DPFLTR_ERROR_LEVEL: u32 = 0;
/// `DPFLTR_INFO_LEVEL` (dpfilter.h).
const DPFLTR_INFO_LEVEL: u32 = 3;

/// Prints `FlushGuard: <what>: 0x<status>` at error level (e.g. a failed setup step and
/// its NTSTATUS).
pub fn error_status(what: &CStr, status: i32) {
    // SAFETY: the format and `what` are NUL-terminated strings that outlive the call; the
    // format consumes exactly one `%s` (a C string) and one `%08X` (a 32-bit integer).
    unsafe {
        flushguard_ntoskrnl_imports::DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            DPFLTR_ERROR_LEVEL,
            c"FlushGuard: %s: 0x%08X\n".as_ptr(),
            what.as_ptr(),
            status as u32,
        )
    };
}

/// Prints `FlushGuard: <what> <value>` at error level.
pub fn error_with_value(what: &CStr, value: usize) {
    // SAFETY: as in `error_status`; `%Iu` consumes one pointer-sized integer.
    unsafe {
        flushguard_ntoskrnl_imports::DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            DPFLTR_ERROR_LEVEL,
            c"FlushGuard: %s %Iu\n".as_ptr(),
            what.as_ptr(),
            value,
        )
    };
}

/// Prints `FlushGuard: <what>` at info level.
pub fn info(what: &CStr) {
    // SAFETY: as in `error_status`; the format consumes one `%s`.
    unsafe {
        flushguard_ntoskrnl_imports::DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            DPFLTR_INFO_LEVEL,
            c"FlushGuard: %s\n".as_ptr(),
            what.as_ptr(),
        )
    };
}
