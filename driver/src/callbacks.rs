//! The `extern "system"` operation callbacks Filter Manager calls (DDI pages
//! "PFLT_PRE_OPERATION_CALLBACK", "PFLT_POST_OPERATION_CALLBACK",
//! "FltQueueDeferredIoWorkItem"); the engine's `Filter` they share lives in
//! [`crate::globals`].
//!
//! Each callback only turns Filter Manager's pointers into a [`KernelOp`], calls the
//! matching method of `flushguard_engine::callbacks::Filter`, and turns the result
//! back into a status and a completion context. The completion context is an
//! encoded value ([`CompletionContext::encode`]), never a pointer: nothing to free.
//!
//! IRQL: as Filter Manager calls them (pre-create/cleanup/flush at PASSIVE_LEVEL,
//! pre-write <= APC_LEVEL, post-operations <= DISPATCH_LEVEL); the engine checks
//! IRQL before every PASSIVE_LEVEL-only service.

use core::ffi::c_void;

use flushguard_engine::callbacks::{CompletionContext, Filter, PostOpFlags, PostOpStatus, PreOp};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_RELATED_OBJECTS,
};

use crate::fltmgr::{KernelFltMgr, KernelOp};
use crate::globals::engine as get;

fn pre(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
    call: fn(&Filter<KernelFltMgr>, &mut KernelOp) -> PreOp,
) -> FLT_PREOP_CALLBACK_STATUS {
    let Some(filter) = get() else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: `data` and `objects` are the pointers Filter Manager passed to this
    // pre-operation callback; `op` does not outlive it.
    let mut op = unsafe { KernelOp::new(data, objects) };
    let result = call(filter, &mut op);
    if let Some(ctx) = result.completion_context() {
        // SAFETY: Filter Manager passes a writable completion-context slot to every
        // pre-operation callback; the engine sets a context only with
        // FLT_PREOP_SUCCESS_WITH_CALLBACK or FLT_PREOP_SYNCHRONIZE.
        unsafe { completion_context.write(ctx.encode() as *mut c_void) };
    }
    result.status().raw()
}

fn post(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
    call: fn(
        &Filter<KernelFltMgr>,
        &mut KernelOp,
        Option<CompletionContext>,
        PostOpFlags,
    ) -> PostOpStatus,
) -> FLT_POSTOP_CALLBACK_STATUS {
    let Some(filter) = get() else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: `data` and `objects` are the pointers Filter Manager passed to this
    // post-operation callback; `op` does not outlive it.
    let mut op = unsafe { KernelOp::new(data, objects) };
    let ctx = CompletionContext::decode(completion_context as usize);
    call(filter, &mut op, ctx, PostOpFlags(flags)).raw()
}

/// IRP_MJ_CREATE pre-operation.
pub extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(data, objects, completion_context, Filter::pre_create)
}

/// IRP_MJ_CREATE post-operation.
pub extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    post(
        data,
        objects,
        completion_context,
        flags,
        Filter::post_create,
    )
}

/// IRP_MJ_WRITE pre-operation (IRP, fast I/O, paging I/O).
pub extern "system" fn pre_write(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(data, objects, completion_context, Filter::pre_write)
}

/// IRP_MJ_WRITE post-operation.
pub extern "system" fn post_write(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    post(data, objects, completion_context, flags, Filter::post_write)
}

/// IRP_MJ_FLUSH_BUFFERS pre-operation.
pub extern "system" fn pre_flush_buffers(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(data, objects, completion_context, Filter::pre_flush)
}

/// IRP_MJ_FLUSH_BUFFERS post-operation.
pub extern "system" fn post_flush_buffers(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    post(data, objects, completion_context, flags, Filter::post_flush)
}

/// IRP_MJ_CLEANUP pre-operation.
pub extern "system" fn pre_cleanup(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(data, objects, completion_context, Filter::pre_cleanup)
}

/// IRP_MJ_FILE_SYSTEM_CONTROL pre-operation (data-changing FSCTLs).
pub extern "system" fn pre_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(data, objects, completion_context, Filter::pre_fs_control)
}

/// IRP_MJ_SET_INFORMATION pre-operation (end-of-file / allocation changes).
pub extern "system" fn pre_set_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    pre(
        data,
        objects,
        completion_context,
        Filter::pre_set_information,
    )
}

/// Post-operation of IRP_MJ_FILE_SYSTEM_CONTROL and IRP_MJ_SET_INFORMATION.
pub extern "system" fn post_data_change(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    post(
        data,
        objects,
        completion_context,
        flags,
        Filter::post_data_change,
    )
}
