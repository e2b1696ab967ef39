//! The fake's vocabulary: call sites for failure injection, ledger kinds, the flush
//! log, simulated file objects and held operations.

use super::*;

/// Every fallible fake routine, for failure injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallSite {
    /// `FltGetFileNameInformation` + parse.
    GetFileNameInformation,
    /// `FsRtlMupGetProviderInfoFromFileObject`.
    MupProviderOfFile,
    /// `SeLocateProcessImageName`.
    ProcessImageName,
    /// `FltAllocateContext`.
    AllocateContext,
    /// `FltSetStreamHandleContext`.
    SetStreamHandleContext,
    /// `FltGetStreamHandleContext`.
    GetStreamHandleContext,
    /// Queuing a pended write to FlushGuard's flush worker threads (the driver's ring
    /// and `KeReleaseSemaphore`, driver/src/worker.rs; a refusal here models a full or
    /// stopping queue; fails =
    /// `STATUS_FLT_NOT_SAFE_TO_POST_OPERATION`).
    QueueDeferredIoWorkItem,
    /// `FltFlushBuffers2`.
    FltFlushBuffers2,
    /// `FltFlushBuffers`.
    FltFlushBuffers,
    /// `FltCreateFileEx2` of FlushGuard's own handle for `ZwFlushBuffersFileEx`.
    OpenKernelHandle,
    /// `ZwFlushBuffersFileEx`.
    ZwFlushBuffersFileEx,
    /// `FltClose` of that handle.
    CloseKernelHandle,
    /// Registry read of `Parameters\Policy`.
    ReadPolicy,
    /// Registry write of `Parameters\Policy`.
    WritePolicy,
    /// The pool block of one group-commit coordinator (lock and two `KEVENT`s) at
    /// load: [`FilterManager::new_commit_sync`].
    AllocateCommitSync,
}

impl CallSite {
    /// Every call site.
    pub const ALL: &'static [CallSite] = &[
        CallSite::GetFileNameInformation,
        CallSite::MupProviderOfFile,
        CallSite::ProcessImageName,
        CallSite::AllocateContext,
        CallSite::SetStreamHandleContext,
        CallSite::GetStreamHandleContext,
        CallSite::QueueDeferredIoWorkItem,
        CallSite::FltFlushBuffers2,
        CallSite::FltFlushBuffers,
        CallSite::OpenKernelHandle,
        CallSite::ZwFlushBuffersFileEx,
        CallSite::CloseKernelHandle,
        CallSite::ReadPolicy,
        CallSite::WritePolicy,
        CallSite::AllocateCommitSync,
    ];

    /// The status an injected failure returns.
    pub fn failure(self) -> NtStatus {
        match self {
            CallSite::FltFlushBuffers2 | CallSite::FltFlushBuffers => NtStatus::FILE_CLOSED,
            CallSite::ZwFlushBuffersFileEx => NtStatus::NETWORK_NAME_DELETED,
            CallSite::OpenKernelHandle => NtStatus::ACCESS_DENIED,
            CallSite::CloseKernelHandle => NtStatus::INVALID_HANDLE,
            CallSite::SetStreamHandleContext => STATUS_FLT_CONTEXT_ALREADY_DEFINED,
            _ => NtStatus::INSUFFICIENT_RESOURCES,
        }
    }
}

/// Kind of a ledger entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `FLT_FILE_NAME_INFORMATION`.
    NameInfo,
    /// `SeLocateProcessImageName` buffer.
    ImageName,
    /// Stream-handle context reference held by the logic.
    Context,
    /// Kernel handle from `ObOpenObjectByPointer`.
    KernelHandle,
}

/// One flush that reached the fake file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushRecord {
    /// The file object.
    pub file: u64,
    /// `"FltFlushBuffers2"`, `"FltFlushBuffers"` or `"ZwFlushBuffersFileEx"`.
    pub routine: &'static str,
    /// `FLT_FLUSH_TYPE_*` or `FLUSH_FLAGS_*` as passed.
    pub flags: u32,
}

/// A simulated file object.
#[derive(Debug, Default)]
pub struct FileObject {
    /// Normalized name, e.g. `\Device\Mup\srv\share\a.txt`.
    pub name: String,
    /// MUP provider id, `None` for a local volume.
    pub provider: Option<u32>,
    /// Requestor image path.
    pub process: String,
    /// The Filter Manager's reference to the stream-handle context.
    pub context: Option<Arc<StreamContext>>,
    /// The user handle is open (false from IRP_MJ_CLEANUP on).
    pub user_handle_open: bool,
    /// Open kernel handles.
    pub kernel_handles: u32,
    /// IRP_MJ_CLEANUP requests sent to the file system.
    pub cleanups: u32,
    /// Writes that reached the file system with `SL_WRITE_THROUGH`.
    pub write_through_writes: u32,
    /// Writes that reached the file system.
    pub writes: u32,
    /// Opened with `FILE_SYNCHRONOUS_IO_(NON)ALERT`: the file object has
    /// `FO_SYNCHRONOUS_IO` and the I/O manager holds its file object lock for the
    /// whole of each system service on it.
    pub synchronous_io: bool,
    /// Opened with `FILE_WRITE_THROUGH` (as the file system saw the create): the
    /// I/O manager sets `FO_WRITE_THROUGH` on the file object.
    pub write_through: bool,
    /// The file system opened the file object (IRP_MJ_CREATE went down); before
    /// that MUP cannot name its redirector.
    pub opened: bool,
}

/// An operation the fake holds for later: an in-flight post-operation or a write
/// pended to FlushGuard's flush worker (its own threads, driver/src/worker.rs).
#[derive(Debug)]
pub struct Pending {
    /// The operation.
    pub data: FakeData,
    /// Its completion context.
    pub ctx: Option<CompletionContext>,
    /// True for a write pended to the flush worker (FlushGuard's worker threads),
    /// false for a post-operation not yet run.
    pub safe_callback: bool,
}

/// One Filter Manager / kernel call the logic made on the fake, in the order made
/// ([`Fake::call_log`]). `routine` is the kernel routine the driver imports for the
/// [`FilterManager`] method (e.g. `FltFlushBuffers2` for `flt_flush_buffers2`), so the
/// log can be compared with the shipped binary's import calls (`cargo xtask sys-test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FmCall {
    /// The kernel routine.
    pub routine: &'static str,
    /// The key argument: the flush type (`FltFlushBuffers2`) or the flush flags
    /// (`ZwFlushBuffersFileEx`); `None` for the other routines.
    pub arg: Option<u32>,
    /// The file the call is about: the flushes, the stream-handle context calls and
    /// `FsRtlMupGetProviderInfoFromFileObject` (`None` for the others).
    pub file: Option<u64>,
    /// The simulated IRQL at the call.
    pub irql: u8,
}
