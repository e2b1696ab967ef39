//! Operation callbacks for IRP_MJ_CREATE, IRP_MJ_WRITE, IRP_MJ_FLUSH_BUFFERS and
//! IRP_MJ_CLEANUP.
//!
//! Skeleton stage: every callback passes the operation through unchanged
//! (`FLT_PREOP_SUCCESS_NO_CALLBACK`: no post-operation callback, no completion context).
//! The decisions (write-through, flush-after-write, flush-on-close, flush upgrades) come
//! from `flushguard-engine` and are wired in here by the callback work (DESIGN.md
//! section 1). Source: DDI page "PFLT_PRE_OPERATION_CALLBACK".
//!
//! IRQL: IRP_MJ_CREATE / IRP_MJ_CLEANUP / IRP_MJ_FLUSH_BUFFERS pre-operations run at
//! PASSIVE_LEVEL; IRP_MJ_WRITE pre-operation at PASSIVE_LEVEL or APC_LEVEL (paging I/O).
//! None of these dereferences its arguments yet.

use core::ffi::c_void;

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_RELATED_OBJECTS,
};

/// Pre-operation callback for IRP_MJ_CREATE. Returns `FLT_PREOP_SUCCESS_NO_CALLBACK`.
pub extern "system" fn pre_create(
    _data: *mut FLT_CALLBACK_DATA,
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// Pre-operation callback for IRP_MJ_WRITE (IRP, fast I/O and paging I/O).
/// Returns `FLT_PREOP_SUCCESS_NO_CALLBACK`.
pub extern "system" fn pre_write(
    _data: *mut FLT_CALLBACK_DATA,
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// Pre-operation callback for IRP_MJ_FLUSH_BUFFERS. Returns
/// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
pub extern "system" fn pre_flush_buffers(
    _data: *mut FLT_CALLBACK_DATA,
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// Pre-operation callback for IRP_MJ_CLEANUP (last handle closed). Returns
/// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
pub extern "system" fn pre_cleanup(
    _data: *mut FLT_CALLBACK_DATA,
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}
