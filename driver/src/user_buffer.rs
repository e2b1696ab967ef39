//! Copies between kernel memory and raw user-mode buffers: the only code in the driver
//! that touches user memory (DESIGN.md sections 3 and 4).
//!
//! The port's message callback receives user addresses that Filter Manager probed but
//! did not capture or lock: another thread of the caller may unmap them at any time, so a
//! `&[u8]` over them would be unsound. The copy runs in the C shim
//! `driver/seh/seh_copy.c` (`fg_copy_from_user` / `fg_copy_to_user`), whose
//! `__try/__except` turns an access fault into an NTSTATUS.
//!
//! SEH does not make kernel addresses safe, so each wrapper first checks that the whole
//! user range lies below `MmUserProbeAddress` (the `MM_USER_PROBE_ADDRESS` macro of
//! wdm.h) without overflow, as `ProbeForRead`/`ProbeForWrite` do.
//!
//! IRQL: PASSIVE_LEVEL or APC_LEVEL (user memory may be paged out), in the context of the
//! process that owns the buffer.

use core::ffi::c_void;

use flushguard_protocol::NtStatus;
use windows_sys::Win32::Foundation::STATUS_ACCESS_VIOLATION;

unsafe extern "C" {
    /// `NTSTATUS fg_copy_from_user(void *kernel_dst, const void *user_src, SIZE_T len)`:
    /// STATUS_SUCCESS, or STATUS_ACCESS_VIOLATION / STATUS_IN_PAGE_ERROR on a fault.
    fn fg_copy_from_user(kernel_dst: *mut c_void, user_src: *const c_void, len: usize) -> i32;
    /// `NTSTATUS fg_copy_to_user(void *user_dst, const void *kernel_src, SIZE_T len)`:
    /// STATUS_SUCCESS, or STATUS_ACCESS_VIOLATION / STATUS_IN_PAGE_ERROR on a fault.
    fn fg_copy_to_user(user_dst: *mut c_void, kernel_src: *const c_void, len: usize) -> i32;
}

/// The first address above the user range (`MM_USER_PROBE_ADDRESS`).
fn user_probe_address() -> usize {
    // SAFETY: MmUserProbeAddress is a data export of ntoskrnl.exe that is written once
    // during boot and only read afterwards.
    unsafe { flushguard_ntoskrnl_imports::MmUserProbeAddress }
}

/// Checks that `[address, address + len)` lies entirely in user space.
///
/// # Errors
/// `STATUS_ACCESS_VIOLATION` if the range wraps around or reaches `MmUserProbeAddress`
/// (the status `ProbeForRead` raises for such a range).
pub fn check_user_range(address: usize, len: usize) -> Result<(), NtStatus> {
    match address.checked_add(len) {
        Some(end) if end <= user_probe_address() => Ok(()),
        _ => Err(NtStatus(STATUS_ACCESS_VIOLATION)),
    }
}

/// Copies `kernel_dst.len()` bytes from the user address `user_src` into `kernel_dst`.
///
/// `user_src` may be any value: it is range-checked here and read only inside the SEH
/// shim. A zero-length copy succeeds without touching memory.
///
/// # Errors
/// `STATUS_ACCESS_VIOLATION` if the range is not in user space or a read faulted;
/// `STATUS_IN_PAGE_ERROR` if paging the buffer in failed. `kernel_dst` then holds
/// unspecified bytes.
pub fn copy_from_user(kernel_dst: &mut [u8], user_src: *const u8) -> Result<(), NtStatus> {
    if kernel_dst.is_empty() {
        return Ok(());
    }
    check_user_range(user_src as usize, kernel_dst.len())?;
    // SAFETY: `kernel_dst` is a writable kernel buffer of exactly `len` bytes; `user_src`
    // covers a user-space range (checked above) that the shim reads under __try/__except,
    // so a fault becomes a status instead of a bug check.
    let status = unsafe {
        fg_copy_from_user(
            kernel_dst.as_mut_ptr().cast(),
            user_src.cast(),
            kernel_dst.len(),
        )
    };
    NtStatus(status).ok()
}

/// Copies `kernel_src` to the user address `user_dst`.
///
/// `user_dst` may be any value: it is range-checked here and written only inside the SEH
/// shim. A zero-length copy succeeds without touching memory.
///
/// # Errors
/// `STATUS_ACCESS_VIOLATION` if the range is not in user space or a write faulted;
/// `STATUS_IN_PAGE_ERROR` if paging the buffer in failed. A prefix of the user buffer may
/// have been written.
pub fn copy_to_user(user_dst: *mut u8, kernel_src: &[u8]) -> Result<(), NtStatus> {
    if kernel_src.is_empty() {
        return Ok(());
    }
    check_user_range(user_dst as usize, kernel_src.len())?;
    // SAFETY: `kernel_src` is a readable kernel buffer of exactly `len` bytes; `user_dst`
    // covers a user-space range (checked above) that the shim writes under __try/__except.
    let status = unsafe {
        fg_copy_to_user(
            user_dst.cast(),
            kernel_src.as_ptr().cast(),
            kernel_src.len(),
        )
    };
    NtStatus(status).ok()
}
