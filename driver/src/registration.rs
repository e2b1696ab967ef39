//! The `FLT_REGISTRATION` handed to `FltRegisterFilter` (DDI pages "FLT_REGISTRATION",
//! "FLT_OPERATION_REGISTRATION").
//!
//! Both tables are immutable statics: Filter Manager reads them during
//! `FltRegisterFilter`, and they live as long as the driver image.

use core::ptr::null;

use flushguard_protocol::nt::{
    IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FLUSH_BUFFERS, IRP_MJ_OPERATION_END, IRP_MJ_WRITE,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_REGISTRATION_VERSION,
    PFLT_POST_OPERATION_CALLBACK, PFLT_PRE_OPERATION_CALLBACK,
};

use crate::{entry, instance, operations};

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
const OPERATION_COUNT: usize = 5;

/// The operations FlushGuard filters, terminated by `IRP_MJ_OPERATION_END`.
///
/// Paging I/O is not skipped (`FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO` is not set):
/// policy may count it, though FlushGuard never blocks or flushes on it.
pub static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; OPERATION_COUNT]> = Static([
    operation(IRP_MJ_CREATE, Some(operations::pre_create), None),
    operation(IRP_MJ_WRITE, Some(operations::pre_write), None),
    operation(
        IRP_MJ_FLUSH_BUFFERS,
        Some(operations::pre_flush_buffers),
        None,
    ),
    operation(IRP_MJ_CLEANUP, Some(operations::pre_cleanup), None),
    operation(IRP_MJ_OPERATION_END, None, None),
]);

/// The filter registration: operations, unload, and instance setup/teardown queries.
/// No contexts are registered yet.
pub static REGISTRATION: Static<FLT_REGISTRATION> = Static(FLT_REGISTRATION {
    Size: core::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: null(),
    OperationRegistration: &OPERATIONS.0 as *const [FLT_OPERATION_REGISTRATION; OPERATION_COUNT]
        as *const FLT_OPERATION_REGISTRATION,
    FilterUnloadCallback: Some(entry::filter_unload),
    InstanceSetupCallback: Some(instance::instance_setup),
    InstanceQueryTeardownCallback: Some(instance::instance_query_teardown),
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});
