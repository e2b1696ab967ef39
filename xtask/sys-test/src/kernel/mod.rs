//! The ABI-level ntoskrnl.exe and fltmgr.sys: every routine the driver imports, as an
//! `extern "win64"` function the loader binds into the image's IAT.
//!
//! Each routine records its call, checks its documented maximum IRQL (DDI page of the
//! routine) and the object rules Filter Verifier checks (references, pool tags,
//! handles, the port's security descriptor, registration and teardown order, dispatcher
//! events and semaphores, system threads), and
//! records violations in the [`World`](crate::world::World). None of them panics: the
//! body runs under `catch_unwind`, and a harness bug becomes a violation.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

mod event;
mod fltmgr;
mod flush;
mod ntoskrnl;
mod sync;
mod thread;

use event::*;
use fltmgr::*;
use flush::*;
use ntoskrnl::*;
use sync::*;
use thread::*;

pub use thread::{drain_pended, run_until_idle, MAIN_THREAD_ID, STATUS_INSUFFICIENT_RESOURCES};

use crate::dispatch;
use crate::layout::{
    FileObject, FltCallbackData, FltFileNameInformation, FltRegistration, FltRelatedObjects,
    FltVolumeProperties, IoStatusBlock, MupProviderInfoLevel1, ObjectAttributes, UnicodeString,
    KEY_VALUE_PARTIAL_INFORMATION_HEADER,
};
use crate::world::{
    world, Context, File, FilterState, Flush, Handle, NameInfo, Registration, ServerPort,
    APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL,
};

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 0;
const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
const STATUS_INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
const STATUS_NOT_FOUND: i32 = 0xC000_0225_u32 as i32;
const STATUS_FLT_CONTEXT_ALREADY_DEFINED: i32 = 0xC01C_0016_u32 as i32;
/// `FILE_DEVICE_NETWORK_FILE_SYSTEM`.
pub const FILE_DEVICE_NETWORK_FILE_SYSTEM: u32 = 0x14;
/// `FLT_REGISTRATION_VERSION` (0x0203).
const FLT_REGISTRATION_VERSION: u16 = 0x0203;
/// `IRP_MJ_OPERATION_END`.
const IRP_MJ_OPERATION_END: u8 = 0x80;
/// `FLT_CONTEXT_END`.
const FLT_CONTEXT_END: u16 = 0xFFFF;
/// `FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD`.
const FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD: u32 = 0x2;
/// `IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO | IRP_NOCACHE`.
const PAGING_WRITE_FLAGS: u32 = 0x2 | 0x40 | 0x1;
/// `IRP_MJ_WRITE`.
const IRP_MJ_WRITE: u8 = 0x04;
/// The harness's `MmUserProbeAddress` (the x64 value): Linux user addresses lie below.
static MM_USER_PROBE_ADDRESS: usize = 0x7FFF_FFFF_0000;
/// Redirector device names -> MUP provider ids (as the host fake registers them).
pub const PROVIDERS: &[(&str, u32)] = &[
    ("\\Device\\LanmanRedirector", 0x10),
    ("\\Device\\WebDavRedirector", 0x20),
    ("\\Device\\Nfs", 0x30),
];

/// Runs `body`, turning a panic into a violation and `fallback`.
fn guarded<T>(routine: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            world().violation(format!("harness bug: {routine} panicked"));
            fallback
        }
    }
}

/// Reads a `UNICODE_STRING` the driver passed.
///
/// # Safety
/// `s` is NULL or points to a `UNICODE_STRING` whose `Buffer` holds `Length` bytes.
unsafe fn read_unicode(s: *const UnicodeString) -> Option<String> {
    // SAFETY: the caller's contract: NULL or a readable UNICODE_STRING.
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() {
        return Some(String::new());
    }
    // SAFETY: the caller's contract: `Buffer` holds `Length` bytes of UTF-16.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

/// Writes `value` through an out pointer the driver passed, if non-NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        unsafe { p.write_unaligned(value) };
    }
}

/// The address the harness binds for `dll!name`, or `None` if it lacks the import.
pub fn resolve(dll: &str, name: &str) -> Option<usize> {
    let dll = dll.to_ascii_lowercase();
    let address = match (dll.as_str(), name) {
        ("ntoskrnl.exe", "DbgPrintEx") => dbg_print_ex as *const () as usize,
        ("ntoskrnl.exe", "ExAllocatePoolWithTag") => {
            ex_allocate_pool_with_tag as *const () as usize
        }
        ("ntoskrnl.exe", "ExAllocatePool2") => ex_allocate_pool2 as *const () as usize,
        ("ntoskrnl.exe", "ExFreePool") => ex_free_pool as *const () as usize,
        ("ntoskrnl.exe", "ExFreePoolWithTag") => ex_free_pool_with_tag as *const () as usize,
        ("ntoskrnl.exe", "FsRtlMupGetProviderIdFromName") => {
            fs_rtl_mup_get_provider_id_from_name as *const () as usize
        }
        ("ntoskrnl.exe", "FsRtlMupGetProviderInfoFromFileObject") => {
            fs_rtl_mup_get_provider_info_from_file_object as *const () as usize
        }
        ("ntoskrnl.exe", "IoGetTopLevelIrp") => io_get_top_level_irp as *const () as usize,
        ("ntoskrnl.exe", "KeAreAllApcsDisabled") => ke_are_all_apcs_disabled as *const () as usize,
        ("ntoskrnl.exe", "KeAreApcsDisabled") => ke_are_apcs_disabled as *const () as usize,
        ("ntoskrnl.exe", "KeBugCheckEx") => ke_bug_check_ex as *const () as usize,
        ("ntoskrnl.exe", "KeGetCurrentIrql") => ke_get_current_irql as *const () as usize,
        ("ntoskrnl.exe", "KeQueryInterruptTimePrecise") => {
            ke_query_interrupt_time_precise as *const () as usize
        }
        ("ntoskrnl.exe", "KeQuerySystemTimePrecise") => {
            ke_query_system_time_precise as *const () as usize
        }
        ("ntoskrnl.exe", "MmGetSystemRoutineAddress") => {
            mm_get_system_routine_address as *const () as usize
        }
        ("ntoskrnl.exe", "MmUserProbeAddress") => {
            &MM_USER_PROBE_ADDRESS as *const usize as *const () as usize
        }
        ("ntoskrnl.exe", "ObOpenObjectByPointer") => {
            ob_open_object_by_pointer as *const () as usize
        }
        ("ntoskrnl.exe", "PsGetCurrentThreadId") => ps_get_current_thread_id as *const () as usize,
        ("ntoskrnl.exe", "SeLocateProcessImageName") => {
            se_locate_process_image_name as *const () as usize
        }
        ("ntoskrnl.exe", "ZwClose") => zw_close as *const () as usize,
        ("ntoskrnl.exe", "ZwCreateKey") => zw_create_key as *const () as usize,
        ("ntoskrnl.exe", "ZwFlushBuffersFileEx") => zw_flush_buffers_file_ex as *const () as usize,
        ("ntoskrnl.exe", "ZwOpenKey") => zw_open_key as *const () as usize,
        ("ntoskrnl.exe", "ZwQueryValueKey") => zw_query_value_key as *const () as usize,
        ("ntoskrnl.exe", "ZwSetValueKey") => zw_set_value_key as *const () as usize,
        ("ntoskrnl.exe", "__C_specific_handler") => c_specific_handler as *const () as usize,
        ("ntoskrnl.exe", "memcmp") => mem_cmp as *const () as usize,
        ("ntoskrnl.exe", "memcpy") => mem_cpy as *const () as usize,
        ("ntoskrnl.exe", "memset") => mem_set as *const () as usize,
        ("fltmgr.sys", "FltAllocateContext") => flt_allocate_context as *const () as usize,
        ("fltmgr.sys", "FltBuildDefaultSecurityDescriptor") => {
            flt_build_default_security_descriptor as *const () as usize
        }
        ("fltmgr.sys", "FltCloseClientPort") => flt_close_client_port as *const () as usize,
        ("fltmgr.sys", "FltCloseCommunicationPort") => {
            flt_close_communication_port as *const () as usize
        }
        ("fltmgr.sys", "FltCreateCommunicationPort") => {
            flt_create_communication_port as *const () as usize
        }
        ("fltmgr.sys", "FltDoCompletionProcessingWhenSafe") => {
            flt_do_completion_processing_when_safe as *const () as usize
        }
        ("fltmgr.sys", "FltFlushBuffers") => flt_flush_buffers as *const () as usize,
        ("fltmgr.sys", "FltFreeSecurityDescriptor") => {
            flt_free_security_descriptor as *const () as usize
        }
        ("fltmgr.sys", "FltGetFileNameInformation") => {
            flt_get_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltGetRequestorProcess") => flt_get_requestor_process as *const () as usize,
        ("fltmgr.sys", "FltGetRoutineAddress") => flt_get_routine_address as *const () as usize,
        ("fltmgr.sys", "FltGetStreamHandleContext") => {
            flt_get_stream_handle_context as *const () as usize
        }
        ("fltmgr.sys", "FltGetVolumeProperties") => flt_get_volume_properties as *const () as usize,
        ("fltmgr.sys", "FltIsOperationSynchronous") => {
            flt_is_operation_synchronous as *const () as usize
        }
        ("fltmgr.sys", "FltParseFileNameInformation") => {
            flt_parse_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltRegisterFilter") => flt_register_filter as *const () as usize,
        ("fltmgr.sys", "FltReleaseContext") => flt_release_context as *const () as usize,
        ("fltmgr.sys", "FltReleaseFileNameInformation") => {
            flt_release_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltSetCallbackDataDirty") => {
            flt_set_callback_data_dirty as *const () as usize
        }
        ("fltmgr.sys", "FltSetStreamHandleContext") => {
            flt_set_stream_handle_context as *const () as usize
        }
        ("fltmgr.sys", "FltStartFiltering") => flt_start_filtering as *const () as usize,
        ("fltmgr.sys", "FltUnregisterFilter") => flt_unregister_filter as *const () as usize,
        ("ntoskrnl.exe", "ExAcquireSpinLockExclusive") => {
            ex_acquire_spin_lock_exclusive as *const () as usize
        }
        ("ntoskrnl.exe", "ExReleaseSpinLockExclusive") => {
            ex_release_spin_lock_exclusive as *const () as usize
        }
        ("ntoskrnl.exe", "ExAcquireSpinLockShared") => {
            ex_acquire_spin_lock_shared as *const () as usize
        }
        ("ntoskrnl.exe", "ExReleaseSpinLockShared") => {
            ex_release_spin_lock_shared as *const () as usize
        }
        ("ntoskrnl.exe", "KeEnterCriticalRegion") => ke_enter_critical_region as *const () as usize,
        ("ntoskrnl.exe", "KeInitializeEvent") => ke_initialize_event as *const () as usize,
        ("ntoskrnl.exe", "KeSetEvent") => ke_set_event as *const () as usize,
        ("ntoskrnl.exe", "KeClearEvent") => ke_clear_event as *const () as usize,
        ("ntoskrnl.exe", "KeWaitForSingleObject") => {
            ke_wait_for_single_object as *const () as usize
        }
        ("ntoskrnl.exe", "KeDelayExecutionThread") => {
            ke_delay_execution_thread as *const () as usize
        }
        ("ntoskrnl.exe", "KeLeaveCriticalRegion") => ke_leave_critical_region as *const () as usize,
        ("ntoskrnl.exe", "KeInitializeSemaphore") => ke_initialize_semaphore as *const () as usize,
        ("ntoskrnl.exe", "KeReleaseSemaphore") => ke_release_semaphore as *const () as usize,
        ("ntoskrnl.exe", "PsCreateSystemThread") => ps_create_system_thread as *const () as usize,
        ("ntoskrnl.exe", "PsTerminateSystemThread") => {
            ps_terminate_system_thread as *const () as usize
        }
        ("ntoskrnl.exe", "ZwWaitForSingleObject") => {
            zw_wait_for_single_object as *const () as usize
        }
        ("fltmgr.sys", "FltInitializePushLock") => flt_initialize_push_lock as *const () as usize,
        ("fltmgr.sys", "FltDeletePushLock") => flt_delete_push_lock as *const () as usize,
        ("fltmgr.sys", "FltAcquirePushLockExclusive") => {
            flt_acquire_push_lock_exclusive as *const () as usize
        }
        ("fltmgr.sys", "FltReleasePushLock") => flt_release_push_lock as *const () as usize,
        ("fltmgr.sys", "FltCompletePendedPostOperation") => {
            flt_complete_pended_post_operation as *const () as usize
        }
        ("fltmgr.sys", "FltCreateFileEx2") => flt_create_file_ex2 as *const () as usize,
        ("fltmgr.sys", "FltClose") => flt_close as *const () as usize,
        _ => return None,
    };
    Some(address)
}

/// Filter Manager's side of closing a file object (IRP_MJ_CLOSE): its stream-handle
/// context references go.
pub fn close_file_object(instance: usize, file: usize) {
    let mut w = world();
    if let Some(context) = w.stream_handle_contexts.remove(&(instance, file)) {
        release_context_ref(&mut w, context, true);
    }
    w.files.remove(&file);
}

/// Registers a simulated file object.
pub fn add_file(address: usize, file: File) {
    world().files.insert(address, file);
}
