//! A Filter Manager simulated in user mode, for `flushctl replay` and the `--offline`
//! port: it implements the engine's [`FilterManager`] / [`CallbackData`](flushguard_engine::callbacks::CallbackData) traits so that
//! the driver's very callback logic ([`flushguard_engine::callbacks::Filter`]) runs on
//! trace events and port messages.
//!
//! What it models, and how:
//! - **File objects** are numbered by the replay ([`FileObjectId`]); stream-handle
//!   contexts live in a map keyed by them (`FltSetStreamHandleContext` with
//!   `FLT_SET_CONTEXT_KEEP_IF_EXISTS` semantics). Context references are `Arc`s.
//! - **Flushes are counted, not issued**: `FltFlushBuffers2`, `FltFlushBuffers` and
//!   `ZwFlushBuffersFileEx` add one to [`SimFm::take_flush_count`] and succeed.
//! - **IRQL**: PASSIVE_LEVEL, except that the replay sets DISPATCH_LEVEL around the
//!   post-operation of an asynchronous write (as a completion routine may run);
//!   `queue_deferred_flush` then pends it to FlushGuard's flush worker, which
//!   the replay runs at PASSIVE_LEVEL right after ([`SimFm::pop_deferred`]).
//! - **Top-level IRP**: set for paging I/O (the lazy writer and mapped-page writer run
//!   with `FSRTL_CACHE_TOP_LEVEL_IRP` / `FSRTL_MOD_WRITE_TOP_LEVEL_IRP`).
//! - **MUP providers**: SMB = 1, WebDAV = 2, NFS = 3, RDPDR = 4, another = 5; local files
//!   have none.
//! - **Registry**: `Parameters\Policy` is a byte vector ([`SimFm::registry_policy`]);
//!   writes can be made to fail with a chosen NTSTATUS
//!   ([`SimFm::set_registry_write_failure`], the `--offline` port's
//!   `--simulate registry-store-fails`).

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flushguard_engine::callbacks::{
    CompletionContext, FilterManager, Irql, StreamContext, TopLevelIrp,
    STATUS_OBJECT_NAME_NOT_FOUND,
};
use flushguard_engine::protocol::NtStatus;

use flushguard_engine::plain_callback_data::PlainCallbackData;
use flushguard_engine::FileProvider;

/// Identifies one simulated file object.
pub type FileObjectId = u64;

/// `FO_SYNCHRONOUS_IO` (0x2) in `FILE_OBJECT.Flags`: opened with
/// `FILE_SYNCHRONOUS_IO_ALERT`/`_NONALERT`. Source: wdm.h.
pub const FO_SYNCHRONOUS_IO: u32 = 0x0000_0002;

/// `STATUS_FLT_CONTEXT_ALREADY_DEFINED` (0xC01C0016).
const STATUS_FLT_CONTEXT_ALREADY_DEFINED: NtStatus = NtStatus(0xC01C_0016_u32 as i32);

/// One operation as the callbacks see it: the engine's plain `FLT_CALLBACK_DATA` record
/// (shared with the host tests' fake Filter Manager) with this simulator's
/// [`SimFile`] as its extra part. `file` is the [`FileObjectId`].
pub type SimData = PlainCallbackData<SimFile>;

/// What the simulator keeps per operation besides the plain callback data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFile {
    /// Normalized name (UTF-16) as `FltGetFileNameInformation` returns it.
    pub name: Arc<[u16]>,
    /// Requestor image name (UTF-16).
    pub image: Arc<[u16]>,
    /// What the file is on ([`FileProvider::Local`] = a local volume).
    pub provider: FileProvider,
    /// Thread id the operation runs on (non-zero).
    pub thread: u64,
    /// The file object's stream-handle context, when the caller already knows it
    /// (`FltGetStreamHandleContext` then answers from here instead of the table).
    pub context: KnownContext,
}

/// What the builder of a [`SimData`] knows of its file object's stream-handle context.
#[derive(Debug, Clone, Default)]
pub enum KnownContext {
    /// Nothing: `FltGetStreamHandleContext` looks in the simulator's table (always
    /// right; needed while a create may attach one).
    #[default]
    Unknown,
    /// The context attached to the file object for the whole operation (`None`: none),
    /// as [`SimFm::context_of`] gave it.
    Known(Option<Arc<StreamContext>>),
}

impl PartialEq for KnownContext {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KnownContext::Unknown, KnownContext::Unknown) => true,
            (KnownContext::Known(a), KnownContext::Known(b)) => match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            },
            _ => false,
        }
    }
}

impl Eq for KnownContext {}

impl Default for SimFile {
    fn default() -> Self {
        SimFile {
            name: Arc::from(Vec::new()),
            image: Arc::from(Vec::new()),
            provider: FileProvider::Local,
            thread: 1,
            context: KnownContext::Unknown,
        }
    }
}

/// An asynchronous write pended to FlushGuard's flush worker
/// (the driver's worker threads).
#[derive(Debug, Clone)]
pub struct Deferred {
    /// The operation (a copy, as Filter Manager keeps the callback data alive).
    pub data: SimData,
    /// Its completion context.
    pub ctx: CompletionContext,
}

/// The simulated Filter Manager.
#[derive(Debug, Default)]
pub struct SimFm {
    irql: AtomicU8,
    top_level_irp: AtomicU8,
    clock_us: AtomicU64,
    thread: AtomicU64,
    contexts: Mutex<FxHashMap<FileObjectId, Arc<StreamContext>>>,
    /// Flushes issued since the last [`SimFm::take_flush_count`].
    flush_count: AtomicUsize,
    deferred: Mutex<Vec<Deferred>>,
    /// `deferred.len()`, stored under its lock (same purpose).
    deferred_count: AtomicUsize,
    registry: Mutex<Option<Vec<u8>>>,
    /// Status every `write_policy_value` fails with (a simulated registry fault).
    registry_write_failure: Mutex<Option<NtStatus>>,
    /// `write_policy_value` calls refused because of `registry_write_failure`.
    registry_writes_refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The simulated MUP provider id of `p` (`None` for a local volume).
fn provider_id(p: FileProvider) -> Option<u32> {
    match p {
        FileProvider::Smb => Some(1),
        FileProvider::WebDav => Some(2),
        FileProvider::Nfs => Some(3),
        FileProvider::Rdpdr => Some(4),
        FileProvider::Other => Some(5),
        FileProvider::Local => None,
    }
}

impl SimFm {
    /// A simulated Filter Manager whose `Parameters\Policy` value is `registry_policy`.
    pub fn new(registry_policy: Option<Vec<u8>>) -> Self {
        let fm = SimFm::default();
        *lock(&fm.registry) = registry_policy;
        fm.thread.store(1, Ordering::Relaxed);
        fm
    }

    /// Sets the IRQL the next callbacks see.
    pub fn set_irql(&self, irql: Irql) {
        self.irql.store(irql.0, Ordering::Relaxed);
    }

    /// Sets whether `IoGetTopLevelIrp() != NULL` for the next callbacks.
    pub fn set_top_level_irp(&self, set: bool) {
        self.top_level_irp.store(u8::from(set), Ordering::Relaxed);
    }

    /// Sets the current thread id (non-zero) and advances the clock by one µs (a
    /// plain load and store: the replay drives the simulation from one thread).
    pub fn set_thread(&self, thread: u64) {
        self.thread.store(thread.max(1), Ordering::Relaxed);
        let now = self.clock_us.load(Ordering::Relaxed);
        self.clock_us.store(now + 1, Ordering::Relaxed);
    }

    /// Number of flushes issued since the last call.
    pub fn take_flush_count(&self) -> usize {
        if self.flush_count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.flush_count.swap(0, Ordering::Relaxed)
    }

    /// True when flushes were issued and not yet taken.
    pub fn has_flushes(&self) -> bool {
        self.flush_count.load(Ordering::Relaxed) != 0
    }

    /// Counts one flush.
    fn count_flush(&self) {
        self.flush_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The oldest queued safe post-write, if any (keeps the buffer).
    pub fn pop_deferred(&self) -> Option<Deferred> {
        if self.deferred_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut deferred = lock(&self.deferred);
        if deferred.is_empty() {
            None
        } else {
            let d = deferred.remove(0);
            self.deferred_count.store(deferred.len(), Ordering::Relaxed);
            Some(d)
        }
    }

    /// Drops the stream-handle context of a file object (IRP_MJ_CLOSE).
    pub fn free_file_object(&self, fo: FileObjectId) {
        lock(&self.contexts).remove(&fo);
    }

    /// The stream-handle context of a file object, if it has one.
    pub fn context_of(&self, fo: FileObjectId) -> Option<Arc<StreamContext>> {
        lock(&self.contexts).get(&fo).cloned()
    }

    /// True when the file object has a stream-handle context (a governed handle).
    pub fn has_context(&self, fo: FileObjectId) -> bool {
        lock(&self.contexts).contains_key(&fo)
    }

    /// Number of live stream-handle contexts.
    pub fn context_count(&self) -> usize {
        lock(&self.contexts).len()
    }

    /// The `Parameters\Policy` value.
    pub fn registry_policy(&self) -> Option<Vec<u8>> {
        lock(&self.registry).clone()
    }

    /// Makes every following `write_policy_value` (`ZwSetValueKey` of
    /// `Parameters\Policy`) fail with `status` and leave the value unchanged;
    /// `None` lets writes succeed again.
    pub fn set_registry_write_failure(&self, status: Option<NtStatus>) {
        *lock(&self.registry_write_failure) = status;
    }

    /// Number of `write_policy_value` calls refused by
    /// [`SimFm::set_registry_write_failure`] so far.
    pub fn registry_writes_refused(&self) -> u64 {
        self.registry_writes_refused.load(Ordering::Relaxed)
    }
}

impl FilterManager for SimFm {
    type Data = SimData;
    type NameInfo = Arc<[u16]>;
    type ImageName = Arc<[u16]>;
    type Context = Arc<StreamContext>;
    type KernelHandle = FileObjectId;
    // One thread replays a trace, so every group-commit write leads its own batch
    // (the replay models batching from the trace's times instead).
    type CommitSync = flushguard_engine::group_commit::host::HostCommitSync;

    fn stream_key(&self, data: &SimData) -> usize {
        // Only compared by the coordinator table. One thread replays a trace, so no
        // two writers are ever in it at once and any key serves; the name buffer's
        // address is a cheap one.
        data.extra.name.as_ptr() as usize
    }
    fn new_commit_sync(&self) -> Option<flushguard_engine::group_commit::host::HostCommitSync> {
        Some(flushguard_engine::group_commit::host::HostCommitSync::without_batch_wait())
    }
    fn current_irql(&self) -> Irql {
        Irql(self.irql.load(Ordering::Relaxed))
    }
    fn top_level_irp(&self) -> TopLevelIrp {
        // A trace shows no top-level IRP: the replay sets one (a file system's) for
        // paging writes, as the redirector's flush dispatch or the cache has.
        if self.top_level_irp.load(Ordering::Relaxed) != 0 {
            TopLevelIrp::FileSystem
        } else {
            TopLevelIrp::None
        }
    }
    fn all_apcs_disabled(&self) -> bool {
        // A trace records no guarded regions: APCs are disabled only by the IRQL.
        self.current_irql() >= Irql::APC_LEVEL
    }
    fn apcs_disabled(&self) -> bool {
        // A trace records no critical or guarded regions: only the IRQL.
        self.current_irql() >= Irql::APC_LEVEL
    }
    fn policy_locks(&self) -> &'static dyn flushguard_engine::locks::PolicyLocks {
        // One thread replays a trace: the engine's inner locks suffice.
        &flushguard_engine::locks::HOST_LOCKS
    }
    fn current_thread_id(&self) -> u64 {
        self.thread.load(Ordering::Relaxed)
    }
    fn now_us(&self) -> u64 {
        self.clock_us.load(Ordering::Relaxed)
    }
    fn is_operation_synchronous(&self, data: &SimData) -> bool {
        data.synchronous
    }
    fn set_callback_data_dirty(&self, data: &mut SimData) {
        data.dirty = true;
    }

    fn get_file_name_information(&self, data: &SimData) -> Result<Arc<[u16]>, NtStatus> {
        Ok(Arc::clone(&data.extra.name))
    }
    fn file_name<'a>(&self, name: &'a Arc<[u16]>) -> &'a [u16] {
        name
    }
    fn release_file_name_information(&self, _name: Arc<[u16]>) {}

    fn mup_provider_id_from_name(&self, device_name: &str) -> Result<u32, NtStatus> {
        let p = match device_name {
            "\\Device\\LanmanRedirector" => FileProvider::Smb,
            "\\Device\\WebDavRedirector" => FileProvider::WebDav,
            "\\Device\\Nfs" => FileProvider::Nfs,
            "\\Device\\RdpDr" => FileProvider::Rdpdr,
            _ => return Err(STATUS_OBJECT_NAME_NOT_FOUND),
        };
        provider_id(p).ok_or(STATUS_OBJECT_NAME_NOT_FOUND)
    }
    fn mup_provider_id_of_file(&self, data: &SimData) -> Result<Option<u32>, NtStatus> {
        Ok(provider_id(data.extra.provider))
    }
    fn process_image_name(&self, data: &SimData) -> Result<Arc<[u16]>, NtStatus> {
        Ok(Arc::clone(&data.extra.image))
    }
    fn image_name<'a>(&self, image: &'a Arc<[u16]>) -> &'a [u16] {
        image
    }
    fn release_process_image_name(&self, _image: Arc<[u16]>) {}

    fn allocate_stream_handle_context(
        &self,
        init: StreamContext,
    ) -> Result<Arc<StreamContext>, NtStatus> {
        Ok(Arc::new(init))
    }
    fn set_stream_handle_context(
        &self,
        data: &SimData,
        ctx: &Arc<StreamContext>,
    ) -> Result<(), NtStatus> {
        let mut map = lock(&self.contexts);
        if map.contains_key(&data.file) {
            return Err(STATUS_FLT_CONTEXT_ALREADY_DEFINED);
        }
        map.insert(data.file, Arc::clone(ctx));
        Ok(())
    }
    fn get_stream_handle_context(
        &self,
        data: &SimData,
    ) -> Result<Option<Arc<StreamContext>>, NtStatus> {
        match &data.extra.context {
            KnownContext::Known(c) => Ok(c.clone()),
            KnownContext::Unknown => Ok(self.context_of(data.file)),
        }
    }
    fn release_context(&self, _ctx: Arc<StreamContext>) {}

    fn queue_deferred_flush(&self, data: &mut SimData, ctx: CompletionContext) -> bool {
        if data.fast_io || data.irp_flags & flushguard_engine::protocol::nt::IRP_PAGING_IO != 0 {
            return false;
        }
        let mut deferred = lock(&self.deferred);
        deferred.push(Deferred {
            data: data.clone(),
            ctx,
        });
        self.deferred_count.store(deferred.len(), Ordering::Relaxed);
        true
    }

    fn has_flt_flush_buffers2(&self) -> bool {
        true
    }
    fn flt_flush_buffers2(&self, _data: &SimData, _flush_type: u32) -> Result<(), NtStatus> {
        self.count_flush();
        Ok(())
    }
    fn flt_flush_buffers(&self, data: &SimData) -> Result<(), NtStatus> {
        self.flt_flush_buffers2(data, 0)
    }
    fn open_flush_handle(&self, data: &SimData, _name: &[u16]) -> Result<FileObjectId, NtStatus> {
        // The handle names the application's file object (only counted).
        Ok(data.file)
    }
    fn zw_flush_buffers_file_ex(
        &self,
        _handle: &FileObjectId,
        _flags: u32,
    ) -> Result<(), NtStatus> {
        self.count_flush();
        Ok(())
    }
    fn close_kernel_handle(&self, _handle: FileObjectId) -> Result<(), NtStatus> {
        Ok(())
    }

    fn read_policy_value(&self, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        out.clear();
        match &*lock(&self.registry) {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(())
            }
            None => Err(STATUS_OBJECT_NAME_NOT_FOUND),
        }
    }
    fn write_policy_value(&self, value: &[u8]) -> Result<(), NtStatus> {
        if let Some(status) = *lock(&self.registry_write_failure) {
            self.registry_writes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(status);
        }
        *lock(&self.registry) = Some(value.to_vec());
        Ok(())
    }

    fn close_server_port(&self) {}
    fn unregister_filter(&self) {}
}
