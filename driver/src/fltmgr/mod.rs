//! The Filter Manager over FFI: [`KernelFltMgr`] implements the engine's
//! `FilterManager` trait and [`KernelOp`] its `CallbackData` view, with
//! windows-sys bindings (fltmgr.sys) and the ntoskrnl.exe import crate.
//!
//! No decision is made here: every method is one kernel call (or the few needed to
//! release what it took on failure) and a status conversion. The callback logic that
//! sequences these calls is `flushguard_engine::callbacks`.

use alloc::vec::Vec;
use core::ops::Deref;
use core::sync::atomic::{AtomicUsize, Ordering};

use flushguard_engine::callbacks::{
    CompletionContext, FilterManager, Irql, StreamContext, TopLevelIrp,
};
use flushguard_protocol::NtStatus;
use windows_sys::Wdk::Foundation::{NonPagedPoolNx, FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAllocateContext, FltClose, FltCreateFileEx2, FltFlushBuffers, FltGetFileNameInformation,
    FltGetRequestorProcess, FltGetRoutineAddress, FltGetStreamHandleContext,
    FltIsOperationSynchronous, FltParseFileNameInformation, FltReleaseContext,
    FltReleaseFileNameInformation, FltSetCallbackDataDirty, FltSetStreamHandleContext,
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED,
    FLT_FILE_NAME_QUERY_DEFAULT, FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_STREAMHANDLE_CONTEXT,
    PFLT_CONTEXT, PFLT_FILTER, PFLT_INSTANCE,
};
use windows_sys::Wdk::Storage::FileSystem::{
    FsRtlMupGetProviderIdFromName, FsRtlMupGetProviderInfoFromFileObject, SeLocateProcessImageName,
    FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_SYNCHRONOUS_IO_NONALERT,
    FSRTL_MUP_PROVIDER_INFO_LEVEL_1,
};
use windows_sys::Wdk::System::SystemServices::{
    ExFreePool, IoGetTopLevelIrp, KeAreAllApcsDisabled, KeAreApcsDisabled, KeGetCurrentIrql,
    KeQueryInterruptTimePrecise, KeQuerySystemTimePrecise, PsGetCurrentThreadId,
    IO_IGNORE_SHARE_ACCESS_CHECK,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, UNICODE_STRING,
};

use flushguard_ntoskrnl_imports as nt;
use windows_sys::Win32::Storage::FileSystem::{
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, SYNCHRONIZE,
};

/// `STATUS_NOT_FOUND` (0xC0000225): `FltGetStreamHandleContext` found no context.
const STATUS_NOT_FOUND: i32 = 0xC000_0225_u32 as i32;
/// `STATUS_BUFFER_OVERFLOW` (0x80000005).
const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
/// `STATUS_BUFFER_TOO_SMALL` (0xC0000023).
const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
/// `STATUS_OBJECT_TYPE_MISMATCH` (0xC0000024).
const STATUS_OBJECT_TYPE_MISMATCH: i32 = 0xC000_0024_u32 as i32;
/// `FILE_WRITE_DATA` (0x2): the access NtFlushBuffersFileEx requires on the handle
/// (else `STATUS_ACCESS_DENIED`).
const FILE_WRITE_DATA: u32 = 0x2;
/// `KEY_READ` access mask (winnt.h).
const KEY_READ: u32 = 0x2_0019;
/// `KEY_WRITE` access mask (winnt.h).
const KEY_WRITE: u32 = 0x2_0006;
/// `REG_BINARY` (winnt.h).
const REG_BINARY: u32 = 3;
/// `KeyValuePartialInformation` (`KEY_VALUE_INFORMATION_CLASS` 2).
const KEY_VALUE_PARTIAL_INFORMATION: i32 = 2;
/// Offset of `Data` in `KEY_VALUE_PARTIAL_INFORMATION` (TitleIndex, Type, DataLength).
const KVPI_HEADER: usize = 12;
/// Largest policy value read from the registry, in bytes.
const MAX_POLICY_VALUE: usize = flushguard_protocol::policy::MAX_POLICY_BYTES as usize;

/// `FltFlushBuffers2` (fltkernel.h, Windows 10 1903+), resolved at load.
type FltFlushBuffers2Fn = unsafe extern "system" fn(
    instance: PFLT_INSTANCE,
    file_object: *const FILE_OBJECT,
    flush_type: u32,
    callback_data: *const FLT_CALLBACK_DATA,
) -> NTSTATUS;

/// The driver's version (major, minor, patch) from Cargo, reported by GetVersion.
pub const DRIVER_VERSION: (u16, u16, u16) = (
    parse_u16(env!("CARGO_PKG_VERSION_MAJOR")),
    parse_u16(env!("CARGO_PKG_VERSION_MINOR")),
    parse_u16(env!("CARGO_PKG_VERSION_PATCH")),
);

const fn parse_u16(s: &str) -> u16 {
    let b = s.as_bytes();
    let mut v: u16 = 0;
    let mut i = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u16;
        i += 1;
    }
    v
}

/// `KeQuerySystemTimePrecise`: 100-ns units since 1601-01-01 UTC (the engine's event
/// clock). Any IRQL.
pub fn system_time() -> u64 {
    let mut t = 0i64;
    // SAFETY: writes the current time into a local; any IRQL.
    unsafe { KeQuerySystemTimePrecise(&mut t) };
    t as u64
}

/// Copies DriverEntry's `RegistryPath` (the service key) into pool memory
/// (UTF-16 code units, no terminator; empty for NULL). PASSIVE_LEVEL.
///
/// # Errors
/// `STATUS_INSUFFICIENT_RESOURCES` when the pool cannot hold the copy.
///
/// # Safety
/// `path` is DriverEntry's `RegistryPath` argument (or NULL), read during DriverEntry.
pub unsafe fn registry_path(path: *const UNICODE_STRING) -> Result<Vec<u16>, NtStatus> {
    // SAFETY: the caller passes DriverEntry's argument, valid for the call (or NULL).
    let Some(s) = (unsafe { path.as_ref() }) else {
        return Ok(Vec::new());
    };
    let units = utf16(s);
    let mut copy = Vec::new();
    copy.try_reserve_exact(units.len())
        .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    copy.extend_from_slice(units);
    Ok(copy)
}

/// Longest name [`Wide`] holds, in UTF-16 code units (the MUP redirector device
/// names and the registry value name are far shorter).
const WIDE_MAX: usize = 64;

/// A short UTF-16 name on the stack (no pool allocation): a redirector device name
/// or a registry value name, encoded from a `&str`.
struct Wide {
    units: [u16; WIDE_MAX],
    len: usize,
}

impl Wide {
    /// Encodes `s`.
    ///
    /// # Errors
    /// `STATUS_NAME_TOO_LONG` when `s` needs more than [`WIDE_MAX`] code units.
    fn new(s: &str) -> Result<Self, NtStatus> {
        let mut w = Wide {
            units: [0; WIDE_MAX],
            len: 0,
        };
        for u in s.encode_utf16() {
            let slot = w.units.get_mut(w.len).ok_or(NtStatus::NAME_TOO_LONG)?;
            *slot = u;
            w.len += 1;
        }
        Ok(w)
    }

    fn as_slice(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }
}

fn status(raw: NTSTATUS) -> Result<(), NtStatus> {
    NtStatus(raw).ok()
}

mod op;
pub use op::KernelOp;

/// A referenced, parsed `FLT_FILE_NAME_INFORMATION`.
pub struct KernelName(*mut FLT_FILE_NAME_INFORMATION);
/// A `SeLocateProcessImageName` buffer (pool, freed with `ExFreePool`).
pub struct KernelImage(*mut UNICODE_STRING);
/// A referenced stream-handle context holding a [`StreamContext`].
pub struct KernelContext(PFLT_CONTEXT);
/// A kernel handle (`OBJ_KERNEL_HANDLE`) to a file object.
pub struct KernelHandle(HANDLE);

impl Deref for KernelContext {
    type Target = StreamContext;
    fn deref(&self) -> &StreamContext {
        let ctx = self.0.cast::<StreamContext>();
        // SAFETY: the context was allocated by `allocate_stream_handle_context` with
        // size_of::<StreamContext>() and initialised before first use; this value holds
        // a reference, so Filter Manager keeps it alive; non-paged, any IRQL <= DISPATCH.
        unsafe { &*ctx }
    }
}

fn utf16(s: &UNICODE_STRING) -> &[u16] {
    if s.Buffer.is_null() || s.Length == 0 {
        return &[];
    }
    // SAFETY: a UNICODE_STRING from Filter Manager / SeLocateProcessImageName
    // describes `Length` bytes at `Buffer`, alive while the owning reference is held.
    unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) }
}

fn unicode(s: &[u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(s.len() * 2).unwrap_or(0xFFFE);
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: s.as_ptr().cast_mut(),
    }
}

/// The driver routines [`KernelFltMgr`] hands work to, given by `entry.rs` (so this
/// module never calls up into the port, entry or callbacks modules).
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Closes the server communication port (`FltCloseCommunicationPort`).
    pub close_server_port: fn(),
    /// `FltUnregisterFilter` of the registered filter.
    pub unregister_filter: fn(),
}

/// The Filter Manager as the driver sees it.
pub struct KernelFltMgr {
    /// The registered filter (`FltRegisterFilter`), valid for this value's life: it
    /// is freed only after `FltUnregisterFilter` returned.
    filter: PFLT_FILTER,
    /// See [`Hooks`].
    hooks: Hooks,
    /// `FltFlushBuffers2` as resolved by `FltGetRoutineAddress`, or 0.
    flush2: AtomicUsize,
    /// `<RegistryPath>\Parameters`, UTF-16 without terminator.
    parameters_key: Vec<u16>,
}

// SAFETY: the fields are a filter handle, an atomic and an immutable Vec; all kernel services called
// through them are thread-safe.
unsafe impl Sync for KernelFltMgr {}
// SAFETY: as above; the value is created in DriverEntry and freed in FilterUnload.
unsafe impl Send for KernelFltMgr {}

impl KernelFltMgr {
    /// Resolves `FltFlushBuffers2` and records the filter handle and the service key.
    /// PASSIVE_LEVEL (DriverEntry). `registry_path` is DriverEntry's argument.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the pool cannot hold
    /// `<RegistryPath>\Parameters` (DriverEntry then fails cleanly).
    pub fn new(filter: PFLT_FILTER, registry_path: &[u16], hooks: Hooks) -> Result<Self, NtStatus> {
        const PARAMETERS: &str = "\\Parameters";
        let mut key = Vec::new();
        key.try_reserve_exact(registry_path.len() + PARAMETERS.len())
            .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
        key.extend_from_slice(registry_path);
        key.extend(PARAMETERS.encode_utf16());
        // SAFETY: PASSIVE_LEVEL in DriverEntry; the name is a NUL-terminated static.
        let routine = unsafe { FltGetRoutineAddress(c"FltFlushBuffers2".as_ptr().cast()) };
        Ok(KernelFltMgr {
            filter,
            hooks,
            flush2: AtomicUsize::new(routine as usize),
            parameters_key: key,
        })
    }

    fn flush2(&self) -> Option<FltFlushBuffers2Fn> {
        let p = self.flush2.load(Ordering::Acquire);
        if p == 0 {
            return None;
        }
        // SAFETY: `p` is the non-NULL address FltGetRoutineAddress returned for
        // "FltFlushBuffers2", whose prototype is FltFlushBuffers2Fn (fltkernel.h).
        Some(unsafe { core::mem::transmute::<usize, FltFlushBuffers2Fn>(p) })
    }

    fn open_parameters_key(&self, access: u32, create: bool) -> Result<HANDLE, NtStatus> {
        let name = unicode(&self.parameters_key);
        let attributes = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &name,
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let mut key: HANDLE = core::ptr::null_mut();
        let raw = if create {
            let mut disposition = 0u32;
            // SAFETY: PASSIVE_LEVEL; `attributes` and `name` are locals alive for the
            // call; kernel handle owned by this function until returned.
            unsafe {
                nt::ZwCreateKey(
                    &mut key,
                    access,
                    (&raw const attributes).cast(),
                    0,
                    core::ptr::null(),
                    0,
                    &mut disposition,
                )
            }
        } else {
            // SAFETY: PASSIVE_LEVEL; `attributes` and `name` are locals alive for the
            // call; the kernel handle is owned by this function until returned.
            unsafe { nt::ZwOpenKey(&mut key, access, (&raw const attributes).cast()) }
        };
        status(raw).map(|()| key)
    }
}

/// `ZwQueryValueKey(KeyValuePartialInformation)` of `Parameters\Policy` into `out`:
/// first the size (header only), then exactly that many bytes. PASSIVE_LEVEL.
///
/// # Errors
/// The query's NTSTATUS (`STATUS_OBJECT_NAME_NOT_FOUND` when there is no value),
/// `STATUS_BUFFER_OVERFLOW` for a value over `MAX_POLICY_BYTES` (or one that grew
/// between the two queries), `STATUS_OBJECT_TYPE_MISMATCH` unless REG_BINARY,
/// `STATUS_INSUFFICIENT_RESOURCES` when the pool cannot hold it.
fn query_policy_value(key: HANDLE, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let value = Wide::new(flushguard_protocol::REGISTRY_POLICY_VALUE)?;
    let name = unicode(value.as_slice());
    let mut header = [0u8; KVPI_HEADER];
    let mut needed = 0u32;
    // SAFETY: PASSIVE_LEVEL; `key` is the caller's open kernel handle; `header` is a
    // local buffer of the stated length; `name` describes the local `value`.
    let raw = unsafe {
        nt::ZwQueryValueKey(
            key,
            (&raw const name).cast(),
            KEY_VALUE_PARTIAL_INFORMATION,
            header.as_mut_ptr().cast(),
            header.len() as u32,
            &mut needed,
        )
    };
    match raw {
        STATUS_BUFFER_OVERFLOW | STATUS_BUFFER_TOO_SMALL => {}
        _ => status(raw)?,
    }
    let needed = needed as usize;
    if needed > KVPI_HEADER + MAX_POLICY_VALUE {
        return Err(NtStatus(STATUS_BUFFER_OVERFLOW));
    }
    let mut buffer: Vec<u8> = Vec::new();
    buffer
        .try_reserve_exact(needed.max(KVPI_HEADER))
        .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    buffer.resize(needed.max(KVPI_HEADER), 0);
    let mut length = 0u32;
    // SAFETY: PASSIVE_LEVEL; `key` is the caller's open kernel handle; `buffer` is a
    // pool allocation of the stated length owned here; `name` describes `value`.
    let raw = unsafe {
        nt::ZwQueryValueKey(
            key,
            (&raw const name).cast(),
            KEY_VALUE_PARTIAL_INFORMATION,
            buffer.as_mut_ptr().cast(),
            buffer.len() as u32,
            &mut length,
        )
    };
    match raw {
        STATUS_BUFFER_OVERFLOW | STATUS_BUFFER_TOO_SMALL => {
            return Err(NtStatus(STATUS_BUFFER_OVERFLOW))
        }
        _ => status(raw)?,
    }
    let kind = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
    let len = u32::from_le_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]) as usize;
    if kind != REG_BINARY {
        return Err(NtStatus(STATUS_OBJECT_TYPE_MISMATCH));
    }
    let data = KVPI_HEADER
        .checked_add(len)
        .and_then(|end| buffer.get(KVPI_HEADER..end))
        .ok_or(NtStatus(STATUS_BUFFER_OVERFLOW))?;
    out.try_reserve_exact(data.len())
        .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    out.extend_from_slice(data);
    Ok(())
}

fn close_key(key: HANDLE) {
    // SAFETY: PASSIVE_LEVEL; `key` is a kernel handle this module opened and closes
    // exactly once.
    let _ = unsafe { nt::ZwClose(key) };
}

impl FilterManager for KernelFltMgr {
    type Data = KernelOp;
    type NameInfo = KernelName;
    type ImageName = KernelImage;
    type Context = KernelContext;
    type KernelHandle = KernelHandle;
    type CommitSync = crate::group::KernelCommitSync;

    fn stream_key(&self, data: &KernelOp) -> usize {
        data.fs_context()
    }
    fn new_commit_sync(&self) -> Option<crate::group::KernelCommitSync> {
        crate::group::KernelCommitSync::new()
    }
    fn current_irql(&self) -> Irql {
        // SAFETY: KeGetCurrentIrql has no preconditions; any IRQL.
        Irql(unsafe { KeGetCurrentIrql() })
    }
    fn top_level_irp(&self) -> TopLevelIrp {
        // SAFETY: IoGetTopLevelIrp reads the current thread's field; any IRQL.
        let top = unsafe { IoGetTopLevelIrp() };
        TopLevelIrp::from_raw(top as usize)
    }
    fn policy_locks(&self) -> &'static dyn flushguard_engine::locks::PolicyLocks {
        &crate::locks::KERNEL_POLICY_LOCKS
    }
    fn current_thread_id(&self) -> u64 {
        // SAFETY: PsGetCurrentThreadId has no preconditions; any IRQL.
        let id = unsafe { PsGetCurrentThreadId() };
        id as u64
    }
    fn now_us(&self) -> u64 {
        let mut qpc = 0u64;
        // SAFETY: KeQueryInterruptTimePrecise writes the performance counter into a
        // local; any IRQL.
        let t100ns = unsafe { KeQueryInterruptTimePrecise(&mut qpc) };
        t100ns / 10
    }
    fn system_time(&self) -> u64 {
        system_time()
    }
    fn all_apcs_disabled(&self) -> bool {
        // SAFETY: KeAreAllApcsDisabled reads the current thread's APC state; no
        // preconditions; IRQL <= DISPATCH_LEVEL (every callback).
        unsafe { KeAreAllApcsDisabled() }
    }
    fn apcs_disabled(&self) -> bool {
        // SAFETY: KeAreApcsDisabled reads the current thread's APC state; no
        // preconditions; IRQL <= DISPATCH_LEVEL (every callback).
        unsafe { KeAreApcsDisabled() }
    }
    fn is_operation_synchronous(&self, data: &KernelOp) -> bool {
        // SAFETY: the callback's FLT_CALLBACK_DATA (owned by Filter Manager for the
        // callback); IRQL <= DISPATCH_LEVEL in every callback.
        unsafe { FltIsOperationSynchronous(data.raw()) }
    }
    fn set_callback_data_dirty(&self, data: &mut KernelOp) {
        // SAFETY: the FLT_CALLBACK_DATA of the running pre-operation (owned by Filter
        // Manager), which the logic changed; IRQL <= DISPATCH_LEVEL.
        unsafe { FltSetCallbackDataDirty(data.raw()) };
    }

    fn get_file_name_information(&self, data: &KernelOp) -> Result<KernelName, NtStatus> {
        let mut info: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: live callback data; IRQL <= APC_LEVEL (the logic calls at PASSIVE);
        // the reference returned in `info` is owned by the KernelName below.
        let raw = unsafe {
            FltGetFileNameInformation(
                data.raw(),
                FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT,
                &mut info,
            )
        };
        status(raw)?;
        let name = KernelName(info);
        // SAFETY: `info` is the name information just returned, whose reference `name`
        // owns; IRQL <= APC_LEVEL.
        let raw = unsafe { FltParseFileNameInformation(info) };
        if let Err(e) = status(raw) {
            self.release_file_name_information(name);
            return Err(e);
        }
        Ok(name)
    }
    fn file_name<'a>(&self, name: &'a KernelName) -> &'a [u16] {
        // SAFETY: the name information whose reference `name` owns (kept alive until
        // FltReleaseFileNameInformation), only read; any IRQL <= APC_LEVEL.
        let info = unsafe { &*name.0 };
        utf16(&info.Name)
    }
    fn release_file_name_information(&self, name: KernelName) {
        // SAFETY: releases the one reference `name` owned; IRQL <= APC_LEVEL.
        unsafe { FltReleaseFileNameInformation(name.0) };
    }

    fn mup_provider_id_from_name(&self, device_name: &str) -> Result<u32, NtStatus> {
        let wide = Wide::new(device_name)?;
        let name = unicode(wide.as_slice());
        let mut id = 0u32;
        // SAFETY: PASSIVE_LEVEL (DriverEntry); `name` describes the local `wide`.
        let raw = unsafe { FsRtlMupGetProviderIdFromName(&name, &mut id) };
        status(raw).map(|()| id)
    }
    fn mup_provider_id_of_file(&self, data: &KernelOp) -> Result<Option<u32>, NtStatus> {
        if !data.on_network_volume() {
            return Ok(None);
        }
        let mut info = FSRTL_MUP_PROVIDER_INFO_LEVEL_1::default();
        let mut size = core::mem::size_of::<FSRTL_MUP_PROVIDER_INFO_LEVEL_1>() as u32;
        // SAFETY: PASSIVE_LEVEL; the file object is the operation's (alive during the
        // callback); `info`/`size` are locals.
        let raw = unsafe {
            FsRtlMupGetProviderInfoFromFileObject(
                data.file_object(),
                1,
                (&raw mut info).cast(),
                &mut size,
            )
        };
        // STATUS_OBJECT_NAME_NOT_FOUND before the create completed: not open yet.
        status(raw).map(|()| Some(info.ProviderId))
    }
    fn process_image_name(&self, data: &KernelOp) -> Result<KernelImage, NtStatus> {
        // SAFETY: the callback's FLT_CALLBACK_DATA (owned by Filter Manager); returns a
        // borrowed PEPROCESS (no reference taken), alive for the operation; PASSIVE_LEVEL.
        let process = unsafe { FltGetRequestorProcess(data.raw()) };
        if process == 0 {
            return Err(NtStatus(STATUS_NOT_FOUND));
        }
        let mut image: *mut UNICODE_STRING = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; `process` is the requestor of the live operation; the
        // pool buffer returned in `image` is owned by the KernelImage below.
        let raw = unsafe { SeLocateProcessImageName(process, &mut image) };
        status(raw).map(|()| KernelImage(image))
    }
    fn image_name<'a>(&self, image: &'a KernelImage) -> &'a [u16] {
        // SAFETY: the pool buffer SeLocateProcessImageName returned, owned by `image`
        // until ExFreePool; only read; PASSIVE_LEVEL.
        let s = unsafe { &*image.0 };
        utf16(s)
    }
    fn release_process_image_name(&self, image: KernelImage) {
        // SAFETY: frees the one pool buffer `image` owned (SeLocateProcessImageName:
        // "the caller frees it with ExFreePool"); PASSIVE_LEVEL.
        unsafe { ExFreePool(image.0.cast()) };
    }

    fn allocate_stream_handle_context(
        &self,
        init: StreamContext,
    ) -> Result<KernelContext, NtStatus> {
        let mut ctx: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: IRQL <= APC_LEVEL (post-create); `self.filter` stays registered while
        // this KernelFltMgr exists; the reference returned in `ctx` is owned by
        // KernelContext.
        let raw = unsafe {
            FltAllocateContext(
                self.filter,
                FLT_STREAMHANDLE_CONTEXT as u16,
                core::mem::size_of::<StreamContext>(),
                NonPagedPoolNx,
                &mut ctx,
            )
        };
        status(raw)?;
        // SAFETY: `ctx` is fresh, uninitialised, non-paged memory of
        // size_of::<StreamContext>() bytes, pool-aligned (16 >= align_of StreamContext).
        unsafe { ctx.cast::<StreamContext>().write(init) };
        Ok(KernelContext(ctx))
    }
    fn set_stream_handle_context(
        &self,
        data: &KernelOp,
        ctx: &KernelContext,
    ) -> Result<(), NtStatus> {
        // SAFETY: IRQL <= APC_LEVEL; instance/file object of the live operation; `ctx`
        // is our referenced context; no old context requested (NULL out pointer).
        let raw = unsafe {
            FltSetStreamHandleContext(
                data.instance(),
                data.file_object(),
                FLT_SET_CONTEXT_KEEP_IF_EXISTS,
                ctx.0,
                core::ptr::null_mut(),
            )
        };
        status(raw)
    }
    fn get_stream_handle_context(
        &self,
        data: &KernelOp,
    ) -> Result<Option<KernelContext>, NtStatus> {
        let mut ctx: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: IRQL <= DISPATCH_LEVEL; instance/file object of the live operation;
        // the reference returned in `ctx` is owned by KernelContext.
        let raw =
            unsafe { FltGetStreamHandleContext(data.instance(), data.file_object(), &mut ctx) };
        match raw {
            STATUS_NOT_FOUND => Ok(None),
            _ => status(raw).map(|()| Some(KernelContext(ctx))),
        }
    }
    fn release_context(&self, ctx: KernelContext) {
        // SAFETY: releases the one reference `ctx` owned; IRQL <= DISPATCH_LEVEL.
        unsafe { FltReleaseContext(ctx.0) };
    }

    fn queue_deferred_flush(&self, data: &mut KernelOp, ctx: CompletionContext) -> bool {
        // As FltQueueDeferredIoWorkItem would (STATUS_FLT_NOT_SAFE_TO_POST_OPERATION):
        // not while a file system's IRP is top-level on this thread.
        if self.top_level_irp_set() {
            return false;
        }
        // Never paging I/O (the logic does not ask; checked again, as
        // FltQueueDeferredIoWorkItem would refuse it).
        if flushguard_engine::callbacks::CallbackData::irp_flags(data)
            & flushguard_protocol::nt::IRP_PAGING_IO
            != 0
        {
            return false;
        }
        crate::worker::push(data.raw(), ctx)
    }

    fn has_flt_flush_buffers2(&self) -> bool {
        self.flush2().is_some()
    }
    fn flt_flush_buffers2(&self, data: &KernelOp, flush_type: u32) -> Result<(), NtStatus> {
        let Some(flush2) = self.flush2() else {
            return Err(NtStatus::NOT_IMPLEMENTED);
        };
        // SAFETY: PASSIVE_LEVEL (checked by the logic); instance, file object and data
        // of the live operation.
        let raw = unsafe { flush2(data.instance(), data.file_object(), flush_type, data.raw()) };
        status(raw)
    }
    fn flt_flush_buffers(&self, data: &KernelOp) -> Result<(), NtStatus> {
        // SAFETY: PASSIVE_LEVEL (checked by the logic); instance and file object of the
        // live operation.
        let raw = unsafe { FltFlushBuffers(data.instance(), data.file_object()) };
        status(raw)
    }
    fn open_flush_handle(&self, data: &KernelOp, name: &[u16]) -> Result<KernelHandle, NtStatus> {
        let mut name = unicode(name);
        let attributes = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &mut name,
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut iosb = windows_sys::Win32::System::IO::IO_STATUS_BLOCK::default();
        // SAFETY: PASSIVE_LEVEL (the flush worker); `self.filter` is our registered
        // filter and the instance the pended operation's (referenced until it
        // completes); `attributes` names a local UNICODE_STRING over the caller's name
        // buffer, alive for the call; no file object is returned (NULL), so the kernel
        // handle alone is owned by KernelHandle and closed by close_kernel_handle.
        let raw = unsafe {
            FltCreateFileEx2(
                self.filter,
                data.instance(),
                &mut handle,
                core::ptr::null_mut(),
                FILE_WRITE_DATA | SYNCHRONIZE,
                &attributes,
                &mut iosb,
                core::ptr::null(),
                0,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                FILE_OPEN,
                FILE_NON_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT,
                core::ptr::null(),
                0,
                IO_IGNORE_SHARE_ACCESS_CHECK,
                core::ptr::null(),
            )
        };
        status(raw).map(|()| KernelHandle(handle))
    }
    fn zw_flush_buffers_file_ex(&self, handle: &KernelHandle, flags: u32) -> Result<(), NtStatus> {
        let mut iosb = nt::IoStatusBlock::default();
        // SAFETY: PASSIVE_LEVEL (checked by the logic); `handle` is our open kernel
        // handle; no parameters buffer; `iosb` is a local.
        let raw =
            unsafe { nt::ZwFlushBuffersFileEx(handle.0, flags, core::ptr::null(), 0, &mut iosb) };
        status(raw)
    }
    fn close_kernel_handle(&self, handle: KernelHandle) -> Result<(), NtStatus> {
        // SAFETY: PASSIVE_LEVEL; closes the one handle FltCreateFileEx2 gave
        // `handle`.
        let raw = unsafe { FltClose(handle.0) };
        status(raw)
    }

    fn read_policy_value(&self, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        out.clear();
        // STATUS_OBJECT_NAME_NOT_FOUND (no Parameters key) passes through: "absent".
        let key = self.open_parameters_key(KEY_READ, false)?;
        let result = query_policy_value(key, out);
        close_key(key);
        result
    }
    fn write_policy_value(&self, value: &[u8]) -> Result<(), NtStatus> {
        let name_w = Wide::new(flushguard_protocol::REGISTRY_POLICY_VALUE)?;
        let key = self.open_parameters_key(KEY_WRITE, true)?;
        let name = unicode(name_w.as_slice());
        let Ok(size) = u32::try_from(value.len()) else {
            close_key(key);
            return Err(NtStatus::INVALID_PARAMETER);
        };
        // SAFETY: PASSIVE_LEVEL; `key` is our open kernel handle; `value` is a kernel
        // buffer of `size` bytes.
        let raw = unsafe {
            nt::ZwSetValueKey(
                key,
                (&raw const name).cast(),
                0,
                REG_BINARY,
                value.as_ptr().cast(),
                size,
            )
        };
        close_key(key);
        status(raw)
    }

    fn close_server_port(&self) {
        (self.hooks.close_server_port)();
    }
    fn unregister_filter(&self) {
        (self.hooks.unregister_filter)();
    }
}
