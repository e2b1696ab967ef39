//! A fake Filter Manager: implements [`FilterManager`] over an in-memory world and
//! checks, on every call, what Filter Verifier would check.
//!
//! - **Reference ledger.** Every name, image name, context and kernel handle the
//!   logic receives gets an id; releasing an unknown id (double release) is a
//!   violation; [`Fake::outstanding`] lists what is still held. Per thread, the
//!   count held when a callback returns must equal the count at its entry
//!   ([`Fake::held_on_this_thread`]).
//! - **IRQL model.** The harness sets the IRQL of the simulated callback
//!   ([`set_irql`]); every fake routine checks its documented maximum.
//! - **Flush safety.** A flush is a violation at IRQL > PASSIVE_LEVEL, with a
//!   top-level IRP set, for paging I/O, or nested inside another flush on the same
//!   thread. `ZwFlushBuffersFileEx` is a violation with all APCs disabled
//!   ([`set_guarded_region`]: "PASSIVE_LEVEL with special kernel APCs enabled", DDI
//!   page "ZwFlushBuffersFileEx"). Every flush re-enters the filter the way Windows does: the cache
//!   manager's paging writes reach our pre-write (top-level IRP set), and
//!   `ZwFlushBuffersFileEx` reaches our pre-flush, which must pass it through
//!   untouched. `ZwClose` of the last handle of a file object already in cleanup
//!   sends a second IRP_MJ_CLEANUP (a violation).
//! - **Failure injection.** [`Fake::inject`] makes the n-th call of one
//!   [`CallSite`] fail.
//! - **Teardown.** `FltUnregisterFilter` before `FltCloseCommunicationPort` is a
//!   violation; unregister waits for callbacks in progress, drains in-flight
//!   post-operations with `FLTFL_POST_OPERATION_DRAINING`, runs deferred work and
//!   frees the Filter Manager's context references.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use flushguard_engine::callbacks::{
    CompletionContext, Filter, FilterManager, Irql, PostOpFlags, PreOpStatus, StreamContext,
    TopLevelIrp, FLTFL_POST_OPERATION_DRAINING, FO_CLEANUP_COMPLETE, FO_SYNCHRONOUS_IO,
    IRP_MJ_FLUSH_BUFFERS, IRP_PAGING_IO,
};
use flushguard_engine::plain_callback_data::PlainCallbackData;
use flushguard_protocol::NtStatus;

/// `STATUS_FLT_CONTEXT_ALREADY_DEFINED`.
pub const STATUS_FLT_CONTEXT_ALREADY_DEFINED: NtStatus = NtStatus(0xC01C_0016_u32 as i32);
/// `STATUS_NOT_FOUND`.
pub const STATUS_NOT_FOUND: NtStatus = NtStatus(0xC000_0225_u32 as i32);

/// `IRP_SYNCHRONOUS_PAGING_IO` (0x40).
pub const IRP_SYNCHRONOUS_PAGING_IO: u32 = 0x40;

#[derive(Default)]
struct World {
    /// Post-operations pended to the flush worker and not yet completed
    /// (`FltCompletePendedPostOperation`).
    pended: i64,
    /// `FltCompletePendedPostOperation` calls so far.
    completed_pended: u64,
    files: HashMap<u64, FileObject>,
    outstanding: HashMap<u64, RefKind>,
    counts: HashMap<CallSite, u64>,
    inject: Option<(CallSite, u64)>,
    registry: Option<Vec<u8>>,
    flushes: Vec<FlushRecord>,
    /// When each filter flush ran ([`Fake::flush_spans`]).
    flush_spans: Vec<FlushSpan>,
    pending: VecDeque<Pending>,
    port_closed: bool,
    events: Vec<&'static str>,
    write_back_on_worker: bool,
}

/// What runs inside the next flush the filter issues ([`Fake::during_next_flush`]).
type DuringFlush = Box<dyn FnOnce(&Filter<Fake>) + Send>;

struct Inner {
    world: Mutex<World>,
    violations: Mutex<Vec<String>>,
    filter: OnceLock<Weak<Filter<Fake>>>,
    next_id: AtomicU64,
    clock_us: AtomicU64,
    has_flush2: bool,
    /// Redirectors registered with MUP: device name, provider id.
    provider_ids: Mutex<Vec<(&'static str, u32)>>,
    active_callbacks: AtomicUsize,
    stop_new: AtomicBool,
    unregistered: AtomicBool,
    /// Every [`FilterManager`] call in order ([`Fake::call_log`]), while
    /// `logging_calls`.
    call_log: Mutex<Vec<FmCall>>,
    /// [`Fake::log_calls`] was called: off by default, so the fakes of the other
    /// tests take no extra lock (no synchronisation added between their threads).
    logging_calls: AtomicBool,
    /// [`Fake::during_next_flush`].
    during_flush: Mutex<Option<DuringFlush>>,
}

/// The fake Filter Manager (cheap to clone: one shared world).
#[derive(Clone)]
pub struct Fake {
    inner: Arc<Inner>,
}

mod filter_manager;
mod group;
mod locks;
mod types;

pub use group::{FakeCommitGuard, FakeCommitSync, FakeEvent};

use locks::count_lock;
pub use locks::{lock_calls, FakeLocks, LockCalls, FAKE_LOCKS};
pub use types::{CallSite, FileObject, FlushRecord, FmCall, Pending, RefKind};

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(0) };
    static TOP_LEVEL: Cell<TopLevelIrp> = const { Cell::new(TopLevelIrp::None) };
    static GUARDED_REGION: Cell<bool> = const { Cell::new(false) };
    static THREAD_ID: Cell<u64> = const { Cell::new(0) };
    static HELD: Cell<i64> = const { Cell::new(0) };
    static FLUSH_DEPTH: Cell<u32> = const { Cell::new(0) };
    static DEFERRED_BY_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
    /// Inside `FakeLocks::serialize` on this thread.
    static SERIALIZING: Cell<bool> = const { Cell::new(false) };
    /// In a critical region set by a test ([`set_critical_region`]).
    static CRITICAL_REGION: Cell<bool> = const { Cell::new(false) };
    /// Calls of `FakeLocks` on this thread: read_shared, write_exclusive, serialize,
    /// and registry writes made while serializing.
    static LOCK_CALLS: Cell<LockCalls> = const { Cell::new(LockCalls { read_shared: 0, write_exclusive: 0, serialize: 0, registry_writes_serialized: 0 }) };
    /// IRQL-rule violations of the policy locks on this thread (see [`FakeLocks`]).
    static LOCK_VIOLATIONS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(0x100);

/// The fake's event clock: one tick per [`tick`] call, shared by all threads.
static TICK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// [`tick`] when the last write of this thread reached the file system.
    static LAST_WRITE_DONE: Cell<u64> = const { Cell::new(0) };
}

/// The next tick of the fake's event clock (strictly increasing across threads).
pub fn tick() -> u64 {
    TICK.fetch_add(1, Ordering::SeqCst)
}

/// The tick at which the file system completed this thread's last write
/// ([`crate::harness::Harness::write`]), before its post-operation ran.
pub fn last_write_done() -> u64 {
    LAST_WRITE_DONE.with(|c| c.get())
}

pub(crate) fn set_last_write_done(t: u64) {
    LAST_WRITE_DONE.with(|c| c.set(t));
}

/// One `FltFlushBuffers(2)` call on the fake's event clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushSpan {
    /// The file object.
    pub file: u64,
    /// [`tick`] when the call began.
    pub start: u64,
    /// [`tick`] when it returned.
    pub end: u64,
    /// It succeeded.
    pub ok: bool,
}

/// Sets the simulated IRQL of the current thread.
pub fn set_irql(irql: Irql) {
    IRQL.with(|c| c.set(irql.0));
}
/// The simulated IRQL of the current thread.
pub fn irql() -> Irql {
    Irql(IRQL.with(|c| c.get()))
}
/// Sets whether a top-level IRP is set on the current thread (a file system's IRP,
/// or none).
pub fn set_top_level(set: bool) {
    set_top_level_irp(if set {
        TopLevelIrp::FileSystem
    } else {
        TopLevelIrp::None
    });
}
/// Sets what `IoGetTopLevelIrp()` returns on the current thread.
pub fn set_top_level_irp(top: TopLevelIrp) {
    TOP_LEVEL.with(|c| c.set(top));
}
/// Sets whether the current thread is inside a guarded region
/// (`KeEnterGuardedRegion`: all APCs disabled, special kernel APCs included, at
/// PASSIVE_LEVEL).
pub fn set_guarded_region(inside: bool) {
    GUARDED_REGION.with(|c| c.set(inside));
}
/// `KeAreAllApcsDisabled()` of the current simulated thread: inside a guarded region
/// or at IRQL >= APC_LEVEL.
pub fn all_apcs_disabled() -> bool {
    GUARDED_REGION.with(|c| c.get()) || irql() >= Irql::APC_LEVEL
}
/// The current thread is in a critical region (normal kernel APCs disabled): inside
/// the SetPolicy push lock ([`FakeLocks`]), or set by a test ([`set_critical_region`]).
pub fn in_critical_region() -> bool {
    SERIALIZING.with(|c| c.get()) || CRITICAL_REGION.with(|c| c.get())
}
/// Puts the current thread in (or out of) a critical region, as a caller holding an
/// `ERESOURCE` would be (`KeEnterCriticalRegion`).
pub fn set_critical_region(on: bool) {
    CRITICAL_REGION.with(|c| c.set(on));
}
/// How many completions this thread has posted to the worker queue so far.
pub fn deferred_by_this_thread() -> u64 {
    DEFERRED_BY_THIS_THREAD.with(|c| c.get())
}

/// Gives the current thread a fresh simulated thread id (a worker thread).
pub fn new_thread_id() -> u64 {
    let id = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    THREAD_ID.with(|c| c.set(id));
    id
}
fn thread_id() -> u64 {
    THREAD_ID.with(|c| {
        if c.get() == 0 {
            c.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        c.get()
    })
}

/// Options of a fake Filter Manager.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// `FltGetRoutineAddress("FltFlushBuffers2")` resolves.
    pub has_flush2: bool,
    /// Initial `Parameters\Policy` value.
    pub registry: Option<Vec<u8>>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            has_flush2: true,
            registry: None,
        }
    }
}

/// MUP provider id of the SMB redirector in the fake.
pub const PROVIDER_SMB: u32 = 0x10;
/// MUP provider id of the WebDAV redirector in the fake.
pub const PROVIDER_WEBDAV: u32 = 0x20;
/// MUP provider id of the NFS redirector in the fake.
pub const PROVIDER_NFS: u32 = 0x30;

impl Fake {
    /// A new fake world.
    pub fn new(options: FakeOptions) -> Self {
        let world = World {
            registry: options.registry,
            ..World::default()
        };
        Fake {
            inner: Arc::new(Inner {
                world: Mutex::new(world),
                violations: Mutex::new(Vec::new()),
                filter: OnceLock::new(),
                next_id: AtomicU64::new(1),
                clock_us: AtomicU64::new(1_000),
                has_flush2: options.has_flush2,
                provider_ids: Mutex::new(vec![
                    ("\\Device\\LanmanRedirector", PROVIDER_SMB),
                    ("\\Device\\WebDavRedirector", PROVIDER_WEBDAV),
                    ("\\Device\\Nfs", PROVIDER_NFS),
                ]),
                active_callbacks: AtomicUsize::new(0),
                stop_new: AtomicBool::new(false),
                unregistered: AtomicBool::new(false),
                call_log: Mutex::new(Vec::new()),
                logging_calls: AtomicBool::new(false),
                during_flush: Mutex::new(None),
            }),
        }
    }

    /// A redirector registers with MUP after load (WebClient starting, NFS
    /// installed): `FsRtlMupGetProviderIdFromName(device)` answers `id` from now on.
    pub fn register_provider(&self, device: &'static str, id: u32) {
        self.inner
            .provider_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((device, id));
    }

    /// Moves the fake's monotonic clock (`now_us`) forward by `us` microseconds.
    pub fn advance_clock(&self, us: u64) {
        self.inner.clock_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Runs FlushGuard's flush worker for a pended write as the system work queue
    /// does: a worker thread (a fresh thread id, no top-level IRP) at PASSIVE_LEVEL
    /// calls `Filter::flush_pended_write`, then completes the pended post-operation
    /// (`FltCompletePendedPostOperation`). The caller's thread state is restored.
    pub fn run_flush_worker(&self, filter: &Filter<Fake>, p: &mut Pending) {
        let saved = (
            THREAD_ID.with(|c| c.get()),
            TOP_LEVEL.with(|c| c.get()),
            irql(),
        );
        new_thread_id();
        set_top_level_irp(TopLevelIrp::None);
        set_irql(Irql::PASSIVE_LEVEL);
        let g = self.enter_callback("flush worker (pended write)");
        crate::alloc_gate::engine(|| filter.flush_pended_write(&mut p.data, p.ctx));
        drop(g);
        self.complete_pended_post_operation();
        THREAD_ID.with(|c| c.set(saved.0));
        set_top_level_irp(saved.1);
        set_irql(saved.2);
    }

    /// `FltCompletePendedPostOperation`: exactly once per pended post-operation.
    fn complete_pended_post_operation(&self) {
        self.log("FltCompletePendedPostOperation", None, None);
        let mut w = self.world();
        w.completed_pended += 1;
        if w.pended <= 0 {
            drop(w);
            self.violation(
                "FltCompletePendedPostOperation for an operation not pended (completed twice?)",
            );
            return;
        }
        w.pended -= 1;
    }

    /// Post-operations pended to the flush worker and not completed yet.
    pub fn pended(&self) -> i64 {
        self.world().pended
    }

    /// `FltCompletePendedPostOperation` calls so far.
    pub fn completed_pended(&self) -> u64 {
        self.world().completed_pended
    }

    /// Connects the fake to the filter it serves (for re-entry).
    pub fn attach(&self, filter: &Arc<Filter<Fake>>) {
        let _ = self.inner.filter.set(Arc::downgrade(filter));
    }

    fn filter(&self) -> Option<Arc<Filter<Fake>>> {
        self.inner.filter.get().and_then(Weak::upgrade)
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.inner.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a violation of a Filter Manager rule.
    pub fn violation(&self, msg: impl Into<String>) {
        let msg = msg.into();
        self.inner
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    /// Every violation recorded so far.
    pub fn violations(&self) -> Vec<String> {
        let mut v = self
            .inner
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.extend(LOCK_VIOLATIONS.with(|l| l.borrow().clone()));
        v
    }

    /// Makes the `nth` (0-based, counted from now) call of `site` fail.
    pub fn inject(&self, site: CallSite, nth: u64) {
        let mut w = self.world();
        let done = w.counts.get(&site).copied().unwrap_or(0);
        w.inject = Some((site, done + nth));
    }

    /// How often `site` was called.
    pub fn calls(&self, site: CallSite) -> u64 {
        self.world().counts.get(&site).copied().unwrap_or(0)
    }

    /// References the logic still holds.
    pub fn outstanding(&self) -> Vec<(u64, RefKind)> {
        let mut v: Vec<_> = self
            .world()
            .outstanding
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// References acquired minus released by the logic on this thread.
    pub fn held_on_this_thread() -> i64 {
        HELD.with(|c| c.get())
    }

    /// Every flush that reached the file system.
    pub fn flushes(&self) -> Vec<FlushRecord> {
        self.world().flushes.clone()
    }

    /// Every `FltFlushBuffers(2)` call with its start and end on the event clock.
    pub fn flush_spans(&self) -> Vec<FlushSpan> {
        self.world().flush_spans.clone()
    }

    fn record_span(&self, file: u64, start: u64, ok: bool) {
        let end = tick();
        self.world().flush_spans.push(FlushSpan {
            file,
            start,
            end,
            ok,
        });
    }

    /// From now on, logs every [`FilterManager`] call ([`Fake::call_log`]).
    pub fn log_calls(&self) {
        self.inner.logging_calls.store(true, Ordering::Relaxed);
    }

    /// Every [`FilterManager`] call the logic made since [`Fake::log_calls`], in
    /// order, named by the kernel routine the driver imports for it, with its key
    /// argument, file and IRQL.
    pub fn call_log(&self) -> Vec<FmCall> {
        self.inner
            .call_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends a call to [`Fake::call_log`] (at the current simulated IRQL) if
    /// [`Fake::log_calls`] was called.
    fn log(&self, routine: &'static str, arg: Option<u32>, file: Option<u64>) {
        if !self.inner.logging_calls.load(Ordering::Relaxed) {
            return;
        }
        self.inner
            .call_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(FmCall {
                routine,
                arg,
                file,
                irql: irql().0,
            });
    }

    /// Teardown steps in order (`"close_server_port"`, `"unregister_filter"`).
    pub fn events(&self) -> Vec<&'static str> {
        self.world().events.clone()
    }

    /// The current `Parameters\Policy` value.
    pub fn registry(&self) -> Option<Vec<u8>> {
        self.world().registry.clone()
    }

    /// Creates a file object (before its IRP_MJ_CREATE) and returns its id.
    pub fn new_file(
        &self,
        name: &str,
        provider: Option<u32>,
        process: &str,
        synchronous_io: bool,
    ) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.world().files.insert(
            id,
            FileObject {
                name: name.to_string(),
                provider,
                process: process.to_string(),
                user_handle_open: true,
                synchronous_io,
                ..FileObject::default()
            },
        );
        id
    }

    /// Runs `f` on a file object.
    pub fn with_file<R>(&self, file: u64, f: impl FnOnce(&mut FileObject) -> R) -> Option<R> {
        self.world().files.get_mut(&file).map(f)
    }

    /// The Filter Manager's context for `file` (not a ledger reference).
    pub fn file_context(&self, file: u64) -> Option<Arc<StreamContext>> {
        self.world()
            .files
            .get(&file)
            .and_then(|f| f.context.clone())
    }

    /// `FileObject->Flags` of `file` now (`FO_SYNCHRONOUS_IO` / `FO_WRITE_THROUGH` when
    /// opened so, `FO_CLEANUP_COMPLETE` once its user handle closed).
    pub fn fo_flags(&self, file: u64) -> u32 {
        match self.world().files.get(&file) {
            Some(f) => {
                let mut flags = 0;
                if f.synchronous_io {
                    flags |= FO_SYNCHRONOUS_IO;
                }
                if f.write_through {
                    flags |= flushguard_protocol::nt::FO_WRITE_THROUGH;
                }
                if !f.user_handle_open {
                    flags |= FO_CLEANUP_COMPLETE;
                }
                flags
            }
            None => FO_CLEANUP_COMPLETE,
        }
    }

    /// Forgets a closed file object: the Filter Manager frees its context reference.
    pub fn close_file(&self, file: u64) {
        self.world().files.remove(&file);
    }

    /// Queues an in-flight post-operation.
    pub fn push_pending(&self, p: Pending) {
        self.world().pending.push_back(p);
    }

    /// Takes the oldest pending item.
    pub fn pop_pending(&self) -> Option<Pending> {
        self.world().pending.pop_front()
    }

    /// Number of pending items.
    pub fn pending_len(&self) -> usize {
        self.world().pending.len()
    }

    /// True once `FltUnregisterFilter` started: the Filter Manager sends no new
    /// operation to the filter.
    pub fn stopping(&self) -> bool {
        self.inner.stop_new.load(Ordering::Acquire)
    }

    /// Starts an operation the way Filter Manager does (rundown protection): `None`
    /// once `FltUnregisterFilter` started, else a guard that unregister waits for.
    pub fn begin_operation(&self) -> Option<OperationGuard> {
        self.inner.active_callbacks.fetch_add(1, Ordering::AcqRel);
        if self.inner.stop_new.load(Ordering::Acquire) {
            self.inner.active_callbacks.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OperationGuard {
            inner: self.inner.clone(),
        })
    }

    /// True while the server port is open (a client may send messages).
    pub fn port_open(&self) -> bool {
        !self.world().port_closed
    }

    /// Enters a callback: a violation after unregister; counts it in progress.
    pub fn enter_callback(&self, what: &str) -> CallbackGuard {
        if self.inner.unregistered.load(Ordering::Acquire) {
            self.violation(format!("{what} called after FltUnregisterFilter returned"));
        }
        self.inner.active_callbacks.fetch_add(1, Ordering::AcqRel);
        CallbackGuard {
            inner: self.inner.clone(),
            held_at_entry: Self::held_on_this_thread(),
            what: what.to_string(),
        }
    }

    fn check_irql(&self, max: Irql, routine: &str) {
        let now = irql();
        if now > max {
            self.violation(format!(
                "{routine} called at IRQL {} (max {})",
                now.0, max.0
            ));
        }
    }

    fn count_and_fail(&self, site: CallSite) -> Result<(), NtStatus> {
        let mut w = self.world();
        let n = w.counts.entry(site).or_insert(0);
        let this = *n;
        *n += 1;
        if w.inject == Some((site, this)) {
            w.inject = None;
            return Err(site.failure());
        }
        Ok(())
    }

    fn acquire(&self, kind: RefKind) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.world().outstanding.insert(id, kind);
        HELD.with(|c| c.set(c.get() + 1));
        id
    }

    fn release(&self, id: u64, kind: RefKind, routine: &str) {
        let removed = self.world().outstanding.remove(&id);
        match removed {
            Some(k) if k == kind => {}
            Some(k) => self.violation(format!("{routine} released a {k:?} as a {kind:?}")),
            None => self.violation(format!(
                "{routine}: reference {id} released twice or never taken"
            )),
        }
        HELD.with(|c| c.set(c.get() - 1));
    }

    /// Makes the cache write-back of FlushGuard's own flushes run on a worker thread
    /// (as a file system that posts its flush would) instead of the flushing thread:
    /// the recursion guard then does not see it, and the paging writes reach the
    /// write callbacks as anyone else's would. The flushing thread waits for them.
    pub fn set_write_back_on_worker(&self, on: bool) {
        self.world().write_back_on_worker = on;
    }

    /// Simulates what a flush of `file` does above us: the cache manager's paging
    /// writes come through our pre-write with a top-level IRP set, on this thread or
    /// (see [`Fake::set_write_back_on_worker`]) on a worker thread it waits for.
    /// Runs `f` inside the next flush the filter issues (FltFlushBuffers(2) or
    /// ZwFlushBuffersFileEx), before it returns: what another thread does while a
    /// network flush is under way (a SetPolicy, for one).
    pub fn during_next_flush(&self, f: impl FnOnce(&Filter<Fake>) + Send + 'static) {
        *self
            .inner
            .during_flush
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Runs the [`Fake::during_next_flush`] closure, if any (once).
    fn run_during_flush(&self) {
        let f = self
            .inner
            .during_flush
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (Some(f), Some(filter)) = (f, self.filter()) {
            f(&filter);
        }
    }

    fn simulate_paging_writes(&self, file: u64) {
        if self.world().write_back_on_worker {
            std::thread::scope(|s| {
                s.spawn(|| {
                    new_thread_id();
                    set_irql(Irql::APC_LEVEL);
                    self.simulate_paging_writes_here(file);
                    set_irql(Irql::PASSIVE_LEVEL);
                })
                .join()
                .expect("write-back worker");
            });
        } else {
            self.simulate_paging_writes_here(file);
        }
    }

    fn simulate_paging_writes_here(&self, file: u64) {
        let Some(filter) = self.filter() else { return };
        let was_top = TOP_LEVEL.with(|c| c.replace(TopLevelIrp::FileSystem));
        let mut data = FakeData::write(file, IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO, 0, 4096);
        let guard = self.enter_callback("pre-write (paging, from our flush)");
        let pre = crate::alloc_gate::engine(|| filter.pre_write(&mut data));
        drop(guard);
        if pre.status() == PreOpStatus::SuccessWithCallback
            || pre.status() == PreOpStatus::Synchronize
        {
            data.status = NtStatus::SUCCESS;
            let g = self.enter_callback("post-write (paging, from our flush)");
            filter.post_write(&mut data, pre.completion_context(), PostOpFlags(0));
            drop(g);
        }
        TOP_LEVEL.with(|c| c.set(was_top));
    }

    fn flush_checks(&self, routine: &'static str, file: u64, data: Option<&FakeData>, flags: u32) {
        self.check_irql(Irql::PASSIVE_LEVEL, routine);
        if TOP_LEVEL.with(|c| c.get()) != TopLevelIrp::None {
            self.violation(format!("{routine} issued with a top-level IRP set"));
        }
        if let Some(d) = data {
            if d.irp_flags & IRP_PAGING_IO != 0 {
                self.violation(format!("{routine} issued from paging I/O"));
            }
        }
        self.world().flushes.push(FlushRecord {
            file,
            routine,
            flags,
        });
    }

    /// `routine` needs special kernel APCs enabled (`Zw*` file I/O).
    fn check_apcs_enabled(&self, routine: &str) {
        if GUARDED_REGION.with(|c| c.get()) {
            self.violation(format!(
                "{routine} called with special kernel APCs disabled (guarded region): its I/O completion APC cannot run"
            ));
        }
    }

    fn enter_flush(&self, routine: &str) -> FlushDepthGuard {
        let depth = FLUSH_DEPTH.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if depth > 1 {
            self.violation(format!("{routine} issued recursively (depth {depth})"));
        }
        FlushDepthGuard
    }
}

struct FlushDepthGuard;

impl Drop for FlushDepthGuard {
    fn drop(&mut self) {
        FLUSH_DEPTH.with(|c| c.set(c.get() - 1));
    }
}

/// An operation in progress (see [`Fake::begin_operation`]).
pub struct OperationGuard {
    inner: Arc<Inner>,
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.inner.active_callbacks.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a callback in progress; on drop checks the thread's ledger balance.
pub struct CallbackGuard {
    inner: Arc<Inner>,
    held_at_entry: i64,
    what: String,
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        let now = Fake::held_on_this_thread();
        if now != self.held_at_entry {
            self.inner
                .violations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "{} returned holding {} reference(s)",
                    self.what,
                    now - self.held_at_entry
                ));
            HELD.with(|c| c.set(self.held_at_entry));
        }
        self.inner.active_callbacks.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One simulated operation (`FLT_CALLBACK_DATA` + related objects): the engine's plain
/// record, shared with flushctl's simulated Filter Manager.
pub type FakeData = PlainCallbackData;

/// A name-information reference.
#[derive(Debug)]
pub struct FakeName {
    id: u64,
    name: Vec<u16>,
}

/// An image-name buffer.
#[derive(Debug)]
pub struct FakeImage {
    id: u64,
    name: Vec<u16>,
}

/// A context reference.
#[derive(Debug)]
pub struct FakeContext {
    id: u64,
    ctx: Arc<StreamContext>,
}

impl Deref for FakeContext {
    type Target = StreamContext;
    fn deref(&self) -> &StreamContext {
        &self.ctx
    }
}

/// A kernel handle.
#[derive(Debug)]
pub struct FakeHandle {
    id: u64,
    file: u64,
}
