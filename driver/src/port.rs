//! The `\FlushGuardPort` filter communication port: creation, teardown, and the connect,
//! disconnect and message callbacks (DESIGN.md section 4; DDI pages
//! "FltCreateCommunicationPort", "PFLT_CONNECT_NOTIFY", "PFLT_DISCONNECT_NOTIFY",
//! "PFLT_MESSAGE_NOTIFY").
//!
//! - Security: `FltBuildDefaultSecurityDescriptor(FLT_PORT_ALL_ACCESS)` grants access to
//!   SYSTEM and Administrators only; the descriptor is freed right after the port exists
//!   (the port keeps its own copy).
//! - Connections: at most [`MAX_CONNECTIONS`]; the connect context must be a
//!   `flushguard_protocol::ConnectContext` with the right magic and protocol version.
//! - Messages: the message callback checks lengths, then alignment, then captures the
//!   request into pool memory (through the SEH shim), runs the handler on the kernel copy
//!   and copies the reply out once.

use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::{null, null_mut};
use core::sync::atomic::{AtomicIsize, Ordering};

use flushguard_protocol::{
    ConnectContext, NtStatus, MAX_MESSAGE_BYTES, PORT_NAME, REPLY_ALIGNMENT,
};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, FLT_PORT_CONNECT, PFLT_FILTER,
    PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_CONNECTION_COUNT_LIMIT,
    STATUS_SUCCESS,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;
use windows_sys::Win32::Storage::FileSystem::STANDARD_RIGHTS_ALL;

use crate::unicode::{ascii_to_utf16, unicode_string};
use crate::{trace, user_buffer};

/// `FLT_PORT_ALL_ACCESS` (fltKernel.h): `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`.
pub const FLT_PORT_ALL_ACCESS: u32 = FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL;

/// Maximum simultaneous client connections (flushctl instances) to the port.
pub const MAX_CONNECTIONS: usize = 4;

/// UTF-16 of [`PORT_NAME`] (`\FlushGuardPort`).
static PORT_NAME_UTF16: [u16; PORT_NAME.len()] = ascii_to_utf16(PORT_NAME);

/// The server port handle (`PFLT_PORT`), 0 when none.
static SERVER_PORT: AtomicIsize = AtomicIsize::new(0);

/// Connected client ports, 0 for a free slot. The connection cookie is slot index + 1.
static CLIENT_PORTS: [AtomicIsize; MAX_CONNECTIONS] =
    [const { AtomicIsize::new(0) }; MAX_CONNECTIONS];

/// Creates `\FlushGuardPort` for `filter`, admins and SYSTEM only.
///
/// IRQL: PASSIVE_LEVEL. Call after `FltRegisterFilter` and before `FltStartFiltering`.
///
/// # Errors
/// The NTSTATUS of `FltBuildDefaultSecurityDescriptor` (e.g.
/// `STATUS_INSUFFICIENT_RESOURCES`) or of `FltCreateCommunicationPort` (e.g.
/// `STATUS_OBJECT_NAME_COLLISION` if another driver owns the name). Nothing is left
/// allocated on failure.
pub fn create(filter: PFLT_FILTER) -> Result<(), NtStatus> {
    let mut security_descriptor: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: PASSIVE_LEVEL; the out pointer refers to a local. On success we own the
    // descriptor and free it below with FltFreeSecurityDescriptor.
    let status =
        unsafe { FltBuildDefaultSecurityDescriptor(&mut security_descriptor, FLT_PORT_ALL_ACCESS) };
    if let Err(error) = NtStatus(status).ok() {
        trace::error_status(c"FltBuildDefaultSecurityDescriptor failed", status);
        return Err(error);
    }

    let name = unicode_string(&PORT_NAME_UTF16);
    let attributes = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: null_mut(),
        ObjectName: &name,
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: security_descriptor.cast_const().cast(),
        SecurityQualityOfService: null(),
    };
    let mut port: PFLT_PORT = 0;
    // SAFETY: PASSIVE_LEVEL; `filter` is the registered filter (owned by entry.rs);
    // `attributes`, `name` and the descriptor outlive the call; the callbacks are
    // 'static functions with the PFLT_*_NOTIFY signatures.
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            &mut port,
            &attributes,
            null(),
            Some(connect_notify),
            Some(disconnect_notify),
            Some(message_notify),
            MAX_CONNECTIONS as i32,
        )
    };
    // SAFETY: the descriptor came from FltBuildDefaultSecurityDescriptor above and is not
    // used again; the port (if created) holds its own copy.
    unsafe { FltFreeSecurityDescriptor(security_descriptor) };
    if let Err(error) = NtStatus(status).ok() {
        trace::error_status(c"FltCreateCommunicationPort failed", status);
        return Err(error);
    }
    SERVER_PORT.store(port, Ordering::Release);
    Ok(())
}

/// Closes the server port, if open: no new connections after this. Existing client
/// connections stay until they disconnect or `FltUnregisterFilter` tears them down.
/// IRQL: PASSIVE_LEVEL.
pub fn close() {
    let port = SERVER_PORT.swap(0, Ordering::AcqRel);
    if port != 0 {
        // SAFETY: `port` came from FltCreateCommunicationPort and the swap above makes this
        // the only close of it.
        unsafe { FltCloseCommunicationPort(port) };
    }
}

/// `ConnectNotifyCallback`: accepts a flushctl connection.
///
/// Returns `STATUS_SUCCESS` and a cookie naming the connection slot;
/// `STATUS_INVALID_PARAMETER` for a missing or wrongly sized connect context; the
/// status of `ConnectContext::decode`'s error for a wrong magic, protocol version, flags
/// or reserved field; `STATUS_CONNECTION_COUNT_LIMIT` when all
/// [`MAX_CONNECTIONS`] slots are in use. IRQL: PASSIVE_LEVEL.
extern "system" fn connect_notify(
    client_port: PFLT_PORT,
    _server_port_cookie: *const c_void,
    connection_context: *const c_void,
    size_of_context: u32,
    connection_port_cookie: *mut *mut c_void,
) -> NTSTATUS {
    let slot = match accept(client_port, connection_context, size_of_context) {
        Ok(slot) => slot,
        Err(status) => return status.0,
    };
    if connection_port_cookie.is_null() {
        release_slot(slot);
        return NtStatus::INVALID_PARAMETER.0;
    }
    // SAFETY: Filter Manager passes a valid, writable pointer for the connection cookie
    // (checked non-null above); the value is an integer cookie, never dereferenced.
    unsafe { connection_port_cookie.write((slot + 1) as *mut c_void) };
    STATUS_SUCCESS
}

/// Validates the connect context and claims a connection slot for `client_port`.
fn accept(
    client_port: PFLT_PORT,
    context: *const c_void,
    size_of_context: u32,
) -> Result<usize, NtStatus> {
    let mut captured = [0u8; ConnectContext::SIZE];
    if context.is_null() || size_of_context as usize != captured.len() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    capture_connect_context(context.cast(), &mut captured)?;
    // Checks length, magic, protocol version, flags and reserved fields.
    ConnectContext::decode(&captured).map_err(|error| error.ntstatus())?;
    claim_slot(client_port).ok_or(NtStatus(STATUS_CONNECTION_COUNT_LIMIT))
}

/// Copies the connect context. Filter Manager hands over the EA buffer of the caller's
/// create request, which the I/O manager has captured into system memory; should a user
/// address ever arrive here, it is read through the SEH shim instead.
fn capture_connect_context(context: *const u8, captured: &mut [u8]) -> Result<(), NtStatus> {
    if user_buffer::check_user_range(context as usize, captured.len()).is_ok() {
        return user_buffer::copy_from_user(captured, context);
    }
    // SAFETY: `context` is a kernel address (above MmUserProbeAddress) of a captured
    // buffer of `captured.len()` bytes (size checked by the caller) that Filter Manager
    // keeps alive for the duration of this callback.
    let source = unsafe { core::slice::from_raw_parts(context, captured.len()) };
    captured.copy_from_slice(source);
    Ok(())
}

/// Stores `client_port` in a free slot; `None` if all are taken.
fn claim_slot(client_port: PFLT_PORT) -> Option<usize> {
    CLIENT_PORTS.iter().position(|slot| {
        slot.compare_exchange(0, client_port, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// Frees a slot claimed by [`claim_slot`] without closing its port (connect failed).
fn release_slot(slot: usize) {
    if let Some(entry) = CLIENT_PORTS.get(slot) {
        entry.store(0, Ordering::Release);
    }
}

/// `DisconnectNotifyCallback`: closes the client port of the connection named by the
/// cookie. IRQL: PASSIVE_LEVEL.
extern "system" fn disconnect_notify(connection_cookie: *const c_void) {
    let Some(slot) = (connection_cookie as usize).checked_sub(1) else {
        return;
    };
    let Some(entry) = CLIENT_PORTS.get(slot) else {
        return;
    };
    let mut port = entry.swap(0, Ordering::AcqRel);
    if port == 0 {
        return;
    }
    // SAFETY: `port` is the client port Filter Manager gave connect_notify for this slot;
    // the swap makes this its only close; the filter stays registered while callbacks run.
    unsafe { FltCloseClientPort(crate::globals::filter_handle(), &mut port) };
}

/// `MessageNotifyCallback`: one request from flushctl (`FilterSendMessage`).
///
/// `input_buffer`/`output_buffer` are raw user addresses (probed by Filter Manager, not
/// captured, possibly unaligned). Returns `STATUS_SUCCESS` with the reply length in
/// `*return_output_buffer_length` (bytes), or the NTSTATUS of [`handle_message`].
/// IRQL: PASSIVE_LEVEL, in the caller's process context.
extern "system" fn message_notify(
    _port_cookie: *const c_void,
    input_buffer: *const c_void,
    input_buffer_length: u32,
    output_buffer: *mut c_void,
    output_buffer_length: u32,
    return_output_buffer_length: *mut u32,
) -> NTSTATUS {
    if return_output_buffer_length.is_null() {
        return NtStatus::INVALID_PARAMETER.0;
    }
    let (status, written) = match handle_message(
        input_buffer.cast(),
        input_buffer_length,
        output_buffer.cast(),
        output_buffer_length,
    ) {
        Ok(written) => (STATUS_SUCCESS, written),
        Err(status) => (status.0, 0),
    };
    // SAFETY: Filter Manager passes a valid kernel pointer for the returned length
    // (checked non-null above), alive for this callback.
    unsafe { return_output_buffer_length.write(written) };
    status
}

/// Checks lengths, then alignment, then captures the request, dispatches it and copies
/// the reply out. Returns the reply length in bytes.
///
/// # Errors
/// - `STATUS_INVALID_PARAMETER`: no input, input longer than `MAX_MESSAGE_BYTES`, or a
///   null output buffer with a non-zero length.
/// - `STATUS_DATATYPE_MISALIGNMENT`: output buffer not aligned to `REPLY_ALIGNMENT`.
/// - `STATUS_INSUFFICIENT_RESOURCES`: no pool for the kernel copies.
/// - `STATUS_ACCESS_VIOLATION` / `STATUS_IN_PAGE_ERROR`: a user buffer faulted.
/// - whatever the request handler reports (see [`dispatch`]).
fn handle_message(
    input: *const u8,
    input_length: u32,
    output: *mut u8,
    output_length: u32,
) -> Result<u32, NtStatus> {
    if input.is_null() || input_length == 0 || input_length > MAX_MESSAGE_BYTES {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if output.is_null() && output_length != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if (output as usize) % (REPLY_ALIGNMENT as usize) != 0 {
        return Err(NtStatus::DATATYPE_MISALIGNMENT);
    }

    let mut request = zeroed_buffer(input_length as usize)?;
    user_buffer::copy_from_user(&mut request, input)?;
    let mut reply = zeroed_buffer(output_length.min(MAX_MESSAGE_BYTES) as usize)?;
    let written = dispatch(&request, &mut reply)?;
    let reply = reply.get(..written).ok_or(NtStatus::BUFFER_TOO_SMALL)?;
    user_buffer::copy_to_user(output, reply)?;
    u32::try_from(written).map_err(|_| NtStatus::BUFFER_TOO_SMALL)
}

/// Runs one captured request through the engine (`Filter::handle_message`: the
/// engine handler; a persisted SetPolicy is validated, written to
/// `Parameters\Policy`, and put in force only if the write succeeded) and writes
/// the reply into `reply`; returns its length in bytes.
///
/// # Errors
/// `STATUS_INVALID_DEVICE_STATE` before the engine is installed; otherwise every
/// status of `flushguard_engine::handler::handle_persisting`, including the
/// registry write's (the policy in force is then unchanged).
fn dispatch(request: &[u8], reply: &mut [u8]) -> Result<usize, NtStatus> {
    let engine = crate::globals::engine().ok_or(NtStatus::INVALID_DEVICE_STATE)?;
    engine.handle_message(request, reply)
}

/// A zero-filled pool buffer of `length` bytes.
///
/// # Errors
/// `STATUS_INSUFFICIENT_RESOURCES` if the pool cannot supply it (never panics).
fn zeroed_buffer(length: usize) -> Result<Vec<u8>, NtStatus> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(length)
        .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    buffer.resize(length, 0);
    Ok(buffer)
}
