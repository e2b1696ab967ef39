//! The boundary between FlushGuard's callback logic and the Filter Manager.
//!
//! [`FilterManager`] is every kernel service the callbacks use; [`CallbackData`] is
//! the view of one operation (`FLT_CALLBACK_DATA` + `FLT_RELATED_OBJECTS`). The
//! driver implements both with FFI (`driver/src/fltmgr.rs`); the host harness in
//! `tests/` implements them with a fake that checks what Filter Verifier checks;
//! `flushctl replay` implements them with a recorder (flushes recorded, not issued).
//!
//! # Reference discipline
//!
//! Every value of an associated type that the trait hands out
//! ([`FilterManager::NameInfo`], [`FilterManager::ImageName`],
//! [`FilterManager::Context`], [`FilterManager::KernelHandle`]) is one counted
//! reference that the callback logic gives back exactly once through the matching
//! `release_*` / `close_*` method, on every path. The types are not `Clone`; an
//! implementation must NOT release in `Drop` (the logic does it explicitly so that a
//! fake can count it). After any callback returns, the logic holds no reference.
//!
//! # IRQL
//!
//! Each method names the highest IRQL at which the logic calls it (from the method's
//! Microsoft DDI page). The logic checks [`FilterManager::current_irql`] before every
//! PASSIVE_LEVEL-only call.

use alloc::vec::Vec;
use core::ops::Deref;

use flushguard_protocol::NtStatus;

use super::context::StreamContext;
use super::CompletionContext;

/// An interrupt request level (`KIRQL`), as returned by `KeGetCurrentIrql`.
///
/// Source: "Managing Hardware Priorities" (learn.microsoft.com, kernel docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irql(pub u8);

impl Irql {
    /// `PASSIVE_LEVEL` (0): every kernel service may be called.
    pub const PASSIVE_LEVEL: Irql = Irql(0);
    /// `APC_LEVEL` (1): APCs masked; no `Zw*` file I/O, no flushes.
    pub const APC_LEVEL: Irql = Irql(1);
    /// `DISPATCH_LEVEL` (2): no paging, no waits; post-operation callbacks may run here.
    pub const DISPATCH_LEVEL: Irql = Irql(2);
}

/// `FLT_PREOP_CALLBACK_STATUS` values a FlushGuard pre-operation callback returns.
///
/// Source: "FLT_PREOP_CALLBACK_STATUS" / PFLT_PRE_OPERATION_CALLBACK (fltkernel.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PreOpStatus {
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK` (0): pass down, call the post-operation callback.
    SuccessWithCallback = 0,
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK` (1): pass down, no post-operation callback.
    SuccessNoCallback = 1,
    /// `FLT_PREOP_DISALLOW_FASTIO` (3): fail the fast I/O path so the I/O manager
    /// reissues the operation as an IRP. Only valid for fast I/O operations.
    DisallowFastIo = 3,
    /// `FLT_PREOP_SYNCHRONIZE` (5): pass down and call the post-operation callback
    /// in the originating thread at IRQL <= APC_LEVEL. Only for synchronous IRPs.
    Synchronize = 5,
}

impl PreOpStatus {
    /// The raw `FLT_PREOP_CALLBACK_STATUS` value.
    pub const fn raw(self) -> i32 {
        self as i32
    }
}

/// `FLT_POSTOP_CALLBACK_STATUS` values a FlushGuard post-operation callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PostOpStatus {
    /// `FLT_POSTOP_FINISHED_PROCESSING` (0).
    FinishedProcessing = 0,
    /// `FLT_POSTOP_MORE_PROCESSING_REQUIRED` (1): only after
    /// [`FilterManager::queue_deferred_flush`] pended the operation to the flush
    /// worker, which completes it (`FltCompletePendedPostOperation`).
    MoreProcessingRequired = 1,
}

impl PostOpStatus {
    /// The raw `FLT_POSTOP_CALLBACK_STATUS` value.
    pub const fn raw(self) -> i32 {
        self as i32
    }
}

pub use flushguard_protocol::nt::FLTFL_POST_OPERATION_DRAINING;

/// The `Flags` argument of a post-operation callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct PostOpFlags(pub u32);

impl PostOpFlags {
    /// True when `FLTFL_POST_OPERATION_DRAINING` is set.
    pub const fn draining(self) -> bool {
        self.0 & FLTFL_POST_OPERATION_DRAINING != 0
    }
}

/// One file-system operation as a callback sees it: the fields of
/// `FLT_CALLBACK_DATA` / `FLT_IO_PARAMETER_BLOCK` FlushGuard reads or changes, plus
/// the instance and file object of `FLT_RELATED_OBJECTS` (used by the
/// [`FilterManager`] methods that take `&Self::Data`).
///
/// Setters change the operation only; the logic calls
/// [`FilterManager::set_callback_data_dirty`] after every change.
pub trait CallbackData {
    /// `Iopb->MajorFunction` (`IRP_MJ_*`).
    fn major_function(&self) -> u8;
    /// `Iopb->MinorFunction`; for IRP_MJ_FLUSH_BUFFERS the flush type
    /// (`IRP_MN_FLUSH_*`, 0 = full flush).
    fn minor_function(&self) -> u8;
    /// Sets `Iopb->MinorFunction`.
    fn set_minor_function(&mut self, minor: u8);
    /// `Iopb->IrpFlags` (`IRP_NOCACHE` 0x1, `IRP_PAGING_IO` 0x2,
    /// `IRP_SYNCHRONOUS_PAGING_IO` 0x40, ...).
    fn irp_flags(&self) -> u32;
    /// `Iopb->OperationFlags` (`SL_WRITE_THROUGH` 0x4 for writes, ...).
    fn operation_flags(&self) -> u8;
    /// Sets `Iopb->OperationFlags`.
    fn set_operation_flags(&mut self, flags: u8);
    /// `FltObjects->FileObject->Flags` (`FO_SYNCHRONOUS_IO` 0x2, `FO_WRITE_THROUGH`
    /// 0x10, ...). The default (0, "no flags known") suits implementations that do
    /// not model file objects, e.g. a trace replay; the driver reads the real flags.
    fn file_object_flags(&self) -> u32 {
        0
    }
    /// `FLT_IS_FASTIO_OPERATION(Data)`.
    fn is_fast_io(&self) -> bool;
    /// `Data->RequestorMode == KernelMode`.
    fn requestor_mode_kernel(&self) -> bool;
    /// IRP_MJ_CREATE: `Parameters.Create.Options` (low 24 bits `FILE_*` create
    /// options such as `FILE_WRITE_THROUGH` 0x2, high 8 bits the disposition).
    fn create_options(&self) -> u32;
    /// Sets `Parameters.Create.Options`.
    fn set_create_options(&mut self, options: u32);
    /// IRP_MJ_WRITE: `Parameters.Write.ByteOffset`, in bytes (-1/-2 = current /
    /// end-of-file markers as the I/O manager passes them).
    fn write_offset(&self) -> i64;
    /// IRP_MJ_WRITE: `Parameters.Write.Length`, in bytes.
    fn write_length(&self) -> u32;
    /// Post-operation only: `IoStatus.Status`.
    fn io_status(&self) -> NtStatus;
    /// IRP_MJ_FILE_SYSTEM_CONTROL: `Parameters.FileSystemControl.Common.FsControlCode`
    /// (`FSCTL_*`; meaningful for `IRP_MN_USER_FS_REQUEST`). The default, 0 (no
    /// FSCTL), suits implementations that see no file system controls (a replay).
    fn fs_control_code(&self) -> u32 {
        0
    }
    /// IRP_MJ_SET_INFORMATION: `Parameters.SetFileInformation.FileInformationClass`
    /// (`FILE_INFORMATION_CLASS`, e.g. `FileEndOfFileInformation` 20). Default 0.
    fn file_information_class(&self) -> u32 {
        0
    }
}

/// What `IoGetTopLevelIrp()` returns on the current thread (DDI page
/// "IoGetTopLevelIrp"; the `FSRTL_*_TOP_LEVEL_IRP` values of ntifs.h). Values up to
/// `FSRTL_MAX_TOP_LEVEL_IRP_FLAG` (0xFFFF) are flags, anything above is a pointer a
/// file system stored while it dispatches an IRP (its own recursion marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopLevelIrp {
    /// NULL: nothing above us on this thread.
    None,
    /// `FSRTL_FSP_TOP_LEVEL_IRP` (0x01): a file system's own worker thread.
    Fsp,
    /// `FSRTL_CACHE_TOP_LEVEL_IRP` (0x02): the cache manager's lazy writer (or
    /// read-ahead) thread.
    Cache,
    /// `FSRTL_MOD_WRITE_TOP_LEVEL_IRP` (0x03): the modified / mapped page writer.
    ModWrite,
    /// `FSRTL_FAST_IO_TOP_LEVEL_IRP` (0x04): inside a fast I/O routine.
    FastIo,
    /// Another flag value up to `FSRTL_MAX_TOP_LEVEL_IRP_FLAG` (0xFFFF).
    OtherFlag,
    /// A pointer: a file system set its IRP (or an IRP context) as top-level while
    /// it dispatches, e.g. a redirector's flush writing its cache back.
    FileSystem,
}

impl TopLevelIrp {
    /// Classifies the raw `IoGetTopLevelIrp()` value.
    pub const fn from_raw(value: usize) -> Self {
        match value {
            0 => TopLevelIrp::None,
            1 => TopLevelIrp::Fsp,
            2 => TopLevelIrp::Cache,
            3 => TopLevelIrp::ModWrite,
            4 => TopLevelIrp::FastIo,
            0x5..=0xFFFF => TopLevelIrp::OtherFlag,
            _ => TopLevelIrp::FileSystem,
        }
    }
}

/// The Filter Manager and kernel services the callback logic uses.
///
/// Implementations: the driver (FFI over fltmgr.sys / ntoskrnl.exe), the host
/// harness (fake with a reference ledger and an IRQL model), `flushctl replay`.
/// All methods take `&self`: callbacks run concurrently on many threads.
pub trait FilterManager: Sync {
    /// One operation (`FLT_CALLBACK_DATA` + `FLT_RELATED_OBJECTS`).
    type Data: CallbackData;
    /// A referenced `FLT_FILE_NAME_INFORMATION` (normalized, parsed); give back with
    /// [`FilterManager::release_file_name_information`].
    type NameInfo;
    /// A requestor process image name (`SeLocateProcessImageName` buffer); give back
    /// with [`FilterManager::release_process_image_name`].
    type ImageName;
    /// A referenced stream-handle context (`PFLT_CONTEXT` to a [`StreamContext`]);
    /// give back with [`FilterManager::release_context`].
    type Context: Deref<Target = StreamContext>;
    /// A kernel handle (`OBJ_KERNEL_HANDLE`) to an operation's file object; give back
    /// with [`FilterManager::close_kernel_handle`].
    type KernelHandle;
    /// The lock and the two notification events of one group-commit coordinator
    /// ([`crate::group_commit::CommitSync`]; the driver: an `EX_SPIN_LOCK` and two
    /// `KEVENT`s in one non-paged block).
    type CommitSync: crate::group_commit::CommitSync;

    // ---- environment -------------------------------------------------------

    /// `KeGetCurrentIrql()`. Any IRQL.
    fn current_irql(&self) -> Irql;
    /// `IoGetTopLevelIrp()` on the current thread, classified ([`TopLevelIrp`]).
    /// Any IRQL.
    fn top_level_irp(&self) -> TopLevelIrp;
    /// `IoGetTopLevelIrp() != NULL`: a file system (or the cache manager) above us
    /// on this thread owns resources; a synchronous flush could deadlock. Any IRQL.
    fn top_level_irp_set(&self) -> bool {
        self.top_level_irp() != TopLevelIrp::None
    }
    /// `PsGetCurrentThreadId()` as a non-zero integer. Any IRQL.
    fn current_thread_id(&self) -> u64;
    /// The kernel primitives around the engine's policy locks (an `EX_SPIN_LOCK` for
    /// the policy `Arc`, a PASSIVE_LEVEL lock serializing SetPolicy): see
    /// [`crate::locks::PolicyLocks`]. Initialised before [`super::Filter::new`] and
    /// valid until the driver image unloads. Any IRQL.
    fn policy_locks(&self) -> &'static dyn crate::locks::PolicyLocks;
    /// A monotonic clock in microseconds (interrupt time / 10), for flush latency.
    /// Any IRQL.
    fn now_us(&self) -> u64;
    /// `KeQuerySystemTimePrecise`: 100-ns units since 1601-01-01 UTC, for events the
    /// callback layer records itself. Any IRQL. Default: 0 ("unknown").
    fn system_time(&self) -> u64 {
        0
    }
    /// `KeAreAllApcsDisabled()`: true when the current thread runs at IRQL >=
    /// APC_LEVEL or inside a guarded region (`KeEnterGuardedRegion`, e.g. while a
    /// guarded mutex is held), where even special kernel APCs are not delivered.
    /// `ZwFlushBuffersFileEx` requires "PASSIVE_LEVEL with special kernel APCs
    /// enabled": the I/O manager completes the synchronous request with a special kernel
    /// APC, so with all APCs disabled it would wait forever. IRQL <= DISPATCH_LEVEL.
    ///
    /// Source: DDI pages "KeAreAllApcsDisabled", "ZwFlushBuffersFileEx".
    fn all_apcs_disabled(&self) -> bool;
    /// `KeAreApcsDisabled()`: true when the current thread is in a critical region
    /// (`KeEnterCriticalRegion`: normal kernel APCs disabled, as while holding an
    /// `ERESOURCE` or a push lock) or a guarded region, or runs at IRQL >= APC_LEVEL.
    /// A group-commit writer in such a thread may hold what another writer's flush
    /// needs, so it does not wait for one. IRQL <= DISPATCH_LEVEL.
    ///
    /// Source: DDI page "KeAreApcsDisabled".
    fn apcs_disabled(&self) -> bool;
    /// `FltIsOperationSynchronous(Data)`. IRQL <= DISPATCH_LEVEL.
    fn is_operation_synchronous(&self, data: &Self::Data) -> bool;
    /// `FltSetCallbackDataDirty(Data)`: the logic changed `data`. IRQL <= DISPATCH_LEVEL.
    fn set_callback_data_dirty(&self, data: &mut Self::Data);
    /// The stream the operation's file object is open on: `FILE_OBJECT::FsContext`,
    /// which every file object of one stream shares (DDI page "FILE_OBJECT": the file
    /// system's per-stream control block). Only compared, never dereferenced.
    /// Any IRQL.
    fn stream_key(&self, data: &Self::Data) -> usize;
    /// One group-commit coordinator's lock and events, initialised (lock free, both
    /// events clear); `None` when the memory cannot be allocated. The driver:
    /// `ExAllocatePool2(POOL_FLAG_NON_PAGED)` (through its allocator) and
    /// `KeInitializeEvent(NotificationEvent, FALSE)` twice. PASSIVE_LEVEL, called only
    /// by [`super::Filter::new`].
    fn new_commit_sync(&self) -> Option<Self::CommitSync>;

    // ---- names, provider, requestor ---------------------------------------

    /// `FltGetFileNameInformation(Data, FLT_FILE_NAME_NORMALIZED |
    /// FLT_FILE_NAME_QUERY_DEFAULT)` then `FltParseFileNameInformation`; on a parse
    /// failure the implementation releases the reference itself and returns the
    /// error. IRQL <= APC_LEVEL (the logic only calls it at PASSIVE_LEVEL).
    ///
    /// # Errors
    /// `STATUS_FLT_INVALID_NAME_REQUEST`, `STATUS_INSUFFICIENT_RESOURCES`,
    /// `STATUS_ACCESS_DENIED`, `STATUS_OBJECT_PATH_NOT_FOUND`, ... as the DDI returns.
    fn get_file_name_information(&self, data: &Self::Data) -> Result<Self::NameInfo, NtStatus>;
    /// The normalized name (`Name` field), UTF-16, e.g. `\Device\Mup\srv\share\a.txt`.
    fn file_name<'a>(&self, name: &'a Self::NameInfo) -> &'a [u16];
    /// `FltReleaseFileNameInformation`. IRQL <= APC_LEVEL.
    fn release_file_name_information(&self, name: Self::NameInfo);

    /// `FsRtlMupGetProviderIdFromName(\Device\<redirector>)`: the MUP provider id of
    /// a redirector device (`\Device\LanmanRedirector`, `\Device\WebDavRedirector`,
    /// `\Device\Nfs`, `\Device\RdpDr`). PASSIVE_LEVEL; called at load and again,
    /// rate-limited, when a MUP file has an unknown provider id
    /// ([`super::ProviderTable`]).
    ///
    /// # Errors
    /// `STATUS_OBJECT_NAME_NOT_FOUND` when that redirector is not registered with MUP.
    fn mup_provider_id_from_name(&self, device_name: &str) -> Result<u32, NtStatus>;
    /// `FsRtlMupGetProviderInfoFromFileObject(FileObject, 1, ...)` ->
    /// `FSRTL_MUP_PROVIDER_INFO_LEVEL_1::ProviderId`; `Ok(None)` when the file is not
    /// on the MUP volume. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER`, `STATUS_INSUFFICIENT_RESOURCES`, ... as the DDI returns.
    fn mup_provider_id_of_file(&self, data: &Self::Data) -> Result<Option<u32>, NtStatus>;
    /// `SeLocateProcessImageName(FltGetRequestorProcess(Data))`. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES`, `STATUS_NOT_FOUND` (no requestor process), ...
    fn process_image_name(&self, data: &Self::Data) -> Result<Self::ImageName, NtStatus>;
    /// The image path, UTF-16, e.g. `\Device\HarddiskVolume2\Windows\notepad.exe`.
    fn image_name<'a>(&self, image: &'a Self::ImageName) -> &'a [u16];
    /// Frees the `SeLocateProcessImageName` buffer (`ExFreePool`). PASSIVE_LEVEL.
    fn release_process_image_name(&self, image: Self::ImageName);

    // ---- stream-handle contexts -------------------------------------------

    /// `FltAllocateContext(FLT_STREAMHANDLE_CONTEXT, NonPagedPoolNx)` initialised with
    /// `init`. IRQL <= APC_LEVEL (the logic calls it in post-create, PASSIVE_LEVEL).
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES`, `STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND`.
    fn allocate_stream_handle_context(
        &self,
        init: StreamContext,
    ) -> Result<Self::Context, NtStatus>;
    /// `FltSetStreamHandleContext(FLT_SET_CONTEXT_KEEP_IF_EXISTS)` on the
    /// operation's file object. The caller keeps (and must still release) its own
    /// reference. IRQL <= APC_LEVEL.
    ///
    /// # Errors
    /// `STATUS_FLT_CONTEXT_ALREADY_DEFINED`, `STATUS_FLT_DELETING_OBJECT`, ...
    fn set_stream_handle_context(
        &self,
        data: &Self::Data,
        ctx: &Self::Context,
    ) -> Result<(), NtStatus>;
    /// `FltGetStreamHandleContext`; `Ok(None)` for `STATUS_NOT_FOUND` (file not
    /// governed). IRQL <= DISPATCH_LEVEL.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` (volume without stream contexts), ...
    fn get_stream_handle_context(
        &self,
        data: &Self::Data,
    ) -> Result<Option<Self::Context>, NtStatus>;
    /// `FltReleaseContext`. IRQL <= DISPATCH_LEVEL.
    fn release_context(&self, ctx: Self::Context);

    // ---- post-operation deferral ------------------------------------------

    /// Pends the post-operation of an asynchronous write to FlushGuard's flush
    /// worker: the driver queues `(Data, ctx)` to threads of its own
    /// (`PsCreateSystemThread`, driver/src/worker.rs; not a system work queue: the DDI
    /// page "FltQueueDeferredIoWorkItem" forbids posting IRP_MJ_WRITE post-operations
    /// there) and wakes one (`KeReleaseSemaphore`); the post-operation callback then
    /// returns `FLT_POSTOP_MORE_PROCESSING_REQUIRED` (DDI page "Pending an I/O
    /// Operation in a Postoperation Callback Routine"). The worker, at PASSIVE_LEVEL,
    /// calls [`super::Filter::flush_pended_write`] with `ctx`, then
    /// `FltCompletePendedPostOperation(Data)` — exactly once. Filter Manager keeps the
    /// instance (and so the filter) from being torn down until then. Returns false,
    /// having pended nothing, when a file system's IRP is top-level on this thread (as
    /// `FltQueueDeferredIoWorkItem` refuses: `STATUS_FLT_NOT_SAFE_TO_POST_OPERATION`)
    /// or the worker is stopping. The logic never calls it for fast I/O, paging I/O or
    /// while draining. IRQL <= DISPATCH_LEVEL.
    fn queue_deferred_flush(&self, data: &mut Self::Data, ctx: CompletionContext) -> bool;

    /// True when `FltGetRoutineAddress("FltFlushBuffers2")` resolved at load
    /// (Windows 10 1903+).
    fn has_flt_flush_buffers2(&self) -> bool;
    /// `FltFlushBuffers2(Instance, FileObject, flush_type /*FLT_FLUSH_TYPE_* */, Data)`:
    /// synchronous, sent to the instances below ours. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// Any NTSTATUS from the file system / redirector, e.g.
    /// `STATUS_MEDIA_WRITE_PROTECTED`, `STATUS_VOLUME_DISMOUNTED`, `STATUS_FILE_CLOSED`,
    /// `STATUS_ACCESS_DENIED`, `STATUS_INVALID_DEVICE_REQUEST`, `STATUS_NOT_SUPPORTED`.
    fn flt_flush_buffers2(&self, data: &Self::Data, flush_type: u32) -> Result<(), NtStatus>;
    /// `FltFlushBuffers(Instance, FileObject)` (full flush). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// As [`FilterManager::flt_flush_buffers2`].
    fn flt_flush_buffers(&self, data: &Self::Data) -> Result<(), NtStatus>;
    /// Opens FlushGuard's own handle to the operation's file, for one
    /// `ZwFlushBuffersFileEx`: `FltCreateFileEx2(Filter, Instance, &handle, NULL,
    /// FILE_WRITE_DATA | SYNCHRONIZE, {name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE},
    /// .., FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, FILE_OPEN,
    /// FILE_NON_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT, NULL, 0,
    /// IO_IGNORE_SHARE_ACCESS_CHECK, NULL)`, where `name` is the file's normalized
    /// name (UTF-16, `FltGetFileNameInformation`). The create goes to the instances
    /// below ours; the handle and its file object belong to FlushGuard for their whole
    /// life, so closing them never touches the application's file object. Cost: one
    /// more open and close on the server per flush; the server still applies its
    /// share modes (an application that denied write sharing makes it fail with
    /// `STATUS_SHARING_VIOLATION`: counted, not flushed). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES`, `STATUS_ACCESS_DENIED`,
    /// `STATUS_SHARING_VIOLATION`, `STATUS_OBJECT_NAME_NOT_FOUND` (renamed or deleted
    /// meanwhile), ...
    fn open_flush_handle(
        &self,
        data: &Self::Data,
        name: &[u16],
    ) -> Result<Self::KernelHandle, NtStatus>;
    /// `ZwFlushBuffersFileEx(handle, flags /*FLUSH_FLAGS_* */, NULL, 0, &iosb)`.
    /// Enters the stack at the top: our own pre-flush sees it (recursion guard).
    /// PASSIVE_LEVEL with special kernel APCs enabled (the logic checks
    /// [`FilterManager::all_apcs_disabled`] before opening the handle).
    ///
    /// # Errors
    /// As [`FilterManager::flt_flush_buffers2`].
    fn zw_flush_buffers_file_ex(
        &self,
        handle: &Self::KernelHandle,
        flags: u32,
    ) -> Result<(), NtStatus>;
    /// `FltClose(handle)` of a handle from [`FilterManager::open_flush_handle`]: the
    /// cleanup and close of FlushGuard's own file object go to the instances below
    /// ours. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INVALID_HANDLE` (a bug; counted).
    fn close_kernel_handle(&self, handle: Self::KernelHandle) -> Result<(), NtStatus>;

    // ---- registry -----------------------------------------------------------

    /// Reads `<service key>\Parameters\Policy` (REG_BINARY) into `out` (cleared
    /// first). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_OBJECT_NAME_NOT_FOUND` (no value), `STATUS_OBJECT_TYPE_MISMATCH` (not
    /// REG_BINARY), `STATUS_BUFFER_OVERFLOW` (larger than the protocol maximum),
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    fn read_policy_value(&self, out: &mut Vec<u8>) -> Result<(), NtStatus>;
    /// Writes `<service key>\Parameters\Policy` (REG_BINARY). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_ACCESS_DENIED`, `STATUS_INSUFFICIENT_RESOURCES`, ...
    fn write_policy_value(&self, value: &[u8]) -> Result<(), NtStatus>;

    // ---- teardown -------------------------------------------------------------

    /// `FltCloseCommunicationPort(ServerPort)`: no new connections; connected clients
    /// are disconnected when their handles close. PASSIVE_LEVEL.
    fn close_server_port(&self);
    /// `FltUnregisterFilter(Filter)`: waits for outstanding operations, calls
    /// pending post-operation callbacks with `FLTFL_POST_OPERATION_DRAINING`, tears
    /// down instances and contexts. No callback runs after it returns. PASSIVE_LEVEL.
    fn unregister_filter(&self);
}
