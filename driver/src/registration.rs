//! The `FLT_REGISTRATION` handed to `FltRegisterFilter` (DDI pages "FLT_REGISTRATION",
//! "FLT_OPERATION_REGISTRATION").
//!
//! Both tables are immutable statics: Filter Manager reads them during
//! `FltRegisterFilter`, and they live as long as the driver image.

use flushguard_engine::callbacks::StreamContext;
use flushguard_protocol::nt::{
    IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FILE_SYSTEM_CONTROL, IRP_MJ_FLUSH_BUFFERS,
    IRP_MJ_OPERATION_END, IRP_MJ_SET_INFORMATION, IRP_MJ_WRITE,
};
use flushguard_protocol::POOL_TAG;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION,
    FLT_REGISTRATION_VERSION, FLT_STREAMHANDLE_CONTEXT, PFLT_POST_OPERATION_CALLBACK,
    PFLT_PRE_OPERATION_CALLBACK,
};

use crate::{callbacks, entry, instance};

/// A table of Filter Manager registration data in a `static`.
///
/// The windows-sys structures hold raw pointers and so are not `Sync`; this wrapper is,
/// because the tables are never written after compilation.
#[repr(transparent)]
pub struct Static<T>(pub T);

// SAFETY: `Static` only wraps the immutable registration tables below; nothing writes
// them, so sharing them between threads cannot race.
unsafe impl<T> Sync for Static<T> {}

/// One `FLT_OPERATION_REGISTRATION` entry with `Flags` 0.
const fn operation(
    major_function: u8,
    pre_operation: PFLT_PRE_OPERATION_CALLBACK,
    post_operation: PFLT_POST_OPERATION_CALLBACK,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: major_function,
        Flags: 0,
        PreOperation: pre_operation,
        PostOperation: post_operation,
        Reserved1: core::ptr::null_mut(),
    }
}

/// Number of entries in [`OPERATIONS`], the `IRP_MJ_OPERATION_END` terminator included.
const OPERATION_COUNT: usize = 7;

/// The operations FlushGuard filters, terminated by `IRP_MJ_OPERATION_END`.
///
/// Paging I/O is not skipped (`FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO` is not set):
/// policy may count it, though FlushGuard never blocks or flushes on it.
pub static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; OPERATION_COUNT]> = Static([
    operation(
        IRP_MJ_CREATE,
        Some(callbacks::pre_create),
        Some(callbacks::post_create),
    ),
    operation(
        IRP_MJ_WRITE,
        Some(callbacks::pre_write),
        Some(callbacks::post_write),
    ),
    operation(
        IRP_MJ_FLUSH_BUFFERS,
        Some(callbacks::pre_flush_buffers),
        Some(callbacks::post_flush_buffers),
    ),
    operation(IRP_MJ_CLEANUP, Some(callbacks::pre_cleanup), None),
    // Data changes without an IRP_MJ_WRITE (server-side copy, offload write, block
    // cloning; end-of-file and allocation changes): recorded as writes.
    operation(
        IRP_MJ_FILE_SYSTEM_CONTROL,
        Some(callbacks::pre_fs_control),
        Some(callbacks::post_data_change),
    ),
    operation(
        IRP_MJ_SET_INFORMATION,
        Some(callbacks::pre_set_information),
        Some(callbacks::post_data_change),
    ),
    operation(IRP_MJ_OPERATION_END, None, None),
]);

/// The contexts FlushGuard uses: one stream-handle context holding a
/// `flushguard_engine::callbacks::StreamContext` (atomics only: nothing to clean up),
/// terminated by `FLT_CONTEXT_END`.
pub static CONTEXTS: Static<[FLT_CONTEXT_REGISTRATION; 2]> = Static([
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_STREAMHANDLE_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: core::mem::size_of::<StreamContext>(),
        PoolTag: POOL_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
]);

/// The filter registration: contexts, operations, unload, and instance setup/teardown
/// queries.
pub static REGISTRATION: Static<FLT_REGISTRATION> = Static(FLT_REGISTRATION {
    Size: core::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: &CONTEXTS.0 as *const [FLT_CONTEXT_REGISTRATION; 2]
        as *const FLT_CONTEXT_REGISTRATION,
    OperationRegistration: &OPERATIONS.0 as *const [FLT_OPERATION_REGISTRATION; OPERATION_COUNT]
        as *const FLT_OPERATION_REGISTRATION,
    FilterUnloadCallback: Some(entry::filter_unload),
    InstanceSetupCallback: Some(instance::instance_setup),
    InstanceQueryTeardownCallback: Some(instance::instance_query_teardown),
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: Some(instance::instance_teardown_complete),
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});
