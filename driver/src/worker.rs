//! FlushGuard's flush worker: threads of its own (`PsCreateSystemThread`), not a
//! system work queue.
//!
//! An asynchronous governed write is pended in its post-write
//! (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) and queued here; a worker thread flushes it at
//! PASSIVE_LEVEL and then completes it (`FltCompletePendedPostOperation`). The DDI page
//! "FltQueueDeferredIoWorkItem" forbids posting an IRP_MJ_WRITE post-operation to a
//! *system* work queue ("to avoid deadlocks"), and the page "System Worker Threads" tells
//! a driver that waits for long (a flush over the network does) to create its own thread
//! with `PsCreateSystemThread`. So the queue is FlushGuard's: a ring of
//! [`QUEUE_CAPACITY`] entries under an `EX_SPIN_LOCK` (pushed at IRQL <= DISPATCH_LEVEL
//! by the post-write), counted by a `KSEMAPHORE` the [`WORKER_THREADS`] threads wait on.
//!
//! Lifetime: [`start`] in DriverEntry before filtering starts; [`stop`] after
//! `FltUnregisterFilter` returned (it returns only once every pended post-operation was
//! completed, by these threads), or on a failed DriverEntry: it marks the queue stopping,
//! wakes every thread, and waits for each to terminate (`ZwWaitForSingleObject` on its
//! handle) before the image can go.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use flushguard_engine::callbacks::{CompletionContext, MAX_PENDED_WRITES};
use flushguard_ntoskrnl_imports as nt;
use flushguard_protocol::NtStatus;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltCompletePendedPostOperation, FLT_CALLBACK_DATA,
};
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireSpinLockExclusive, ExReleaseSpinLockExclusive, Executive, KeInitializeSemaphore,
    KeReleaseSemaphore, KeWaitForSingleObject, KernelMode, PsTerminateSystemThread, KSEMAPHORE,
};

use windows_sys::Win32::Foundation::OBJ_KERNEL_HANDLE;

use crate::fltmgr::KernelOp;
use crate::globals::engine;

/// Threads serving the queue. Each holds one pended write while it flushes.
pub const WORKER_THREADS: usize = 2;
/// Entries of the queue: the engine never has more writes pended at once
/// (`MAX_PENDED_WRITES`), so a push fails only while stopping.
pub const QUEUE_CAPACITY: usize = MAX_PENDED_WRITES as usize;
/// `SYNCHRONIZE` (winnt.h): all the handle is used for (waiting for the thread).
const SYNCHRONIZE: u32 = 0x0010_0000;
/// `STATUS_SUCCESS`.
const STATUS_SUCCESS: i32 = 0;
/// `STATUS_ALERTED` / `STATUS_USER_APC`: a wait that returned early; waited again.
const STATUS_ALERTED: i32 = 0x0000_0101;
const STATUS_USER_APC: i32 = 0x0000_00C0;
/// `IO_NO_INCREMENT` (wdm.h).
const IO_NO_INCREMENT: i32 = 0;
/// `MAXLONG`: the semaphore's limit.
const SEMAPHORE_LIMIT: i32 = i32::MAX;

/// One pended write: its callback data and the engine's encoded completion context.
#[derive(Clone, Copy)]
struct Item {
    data: *mut FLT_CALLBACK_DATA,
    ctx: usize,
}

struct Queue {
    items: [Item; QUEUE_CAPACITY],
    head: usize,
    len: usize,
    stopping: bool,
}

/// The queue, touched only under [`QUEUE_LOCK`].
struct QueueCell(UnsafeCell<Queue>);
// SAFETY: every access goes through `with_queue`, which holds the EX_SPIN_LOCK
// exclusively (one holder at a time, at DISPATCH_LEVEL).
unsafe impl Sync for QueueCell {}

static QUEUE: QueueCell = QueueCell(UnsafeCell::new(Queue {
    items: [Item {
        data: null_mut(),
        ctx: 0,
    }; QUEUE_CAPACITY],
    head: 0,
    len: 0,
    stopping: false,
}));
/// The `EX_SPIN_LOCK` around [`QUEUE`] (zero = free).
static QUEUE_LOCK: AtomicI32 = AtomicI32::new(0);

/// The `KSEMAPHORE` counting queued items (plus one per thread when stopping), in
/// non-paged pool as its DDI page asks ("KeInitializeSemaphore": storage must be
/// resident, e.g. in non-paged pool allocated by the caller); null before [`start`] and
/// after [`stop`].
static SEMAPHORE: AtomicPtr<KSEMAPHORE> = AtomicPtr::new(null_mut());

/// Kernel handles of the worker threads (0 = none).
static THREADS: [AtomicUsize; WORKER_THREADS] = [const { AtomicUsize::new(0) }; WORKER_THREADS];

fn semaphore() -> *mut KSEMAPHORE {
    SEMAPHORE.load(Ordering::Acquire)
}

/// Runs `f` on the queue under its spin lock. IRQL <= DISPATCH_LEVEL.
fn with_queue<R>(f: impl FnOnce(&mut Queue) -> R) -> R {
    // SAFETY: a valid EX_SPIN_LOCK (static, zero-initialised); IRQL <= DISPATCH_LEVEL
    // (every caller); raises to DISPATCH_LEVEL.
    let old = unsafe { ExAcquireSpinLockExclusive(QUEUE_LOCK.as_ptr()) };
    // SAFETY: the exclusive hold makes this the only reference to the queue until the
    // release below.
    let result = f(unsafe { &mut *QUEUE.0.get() });
    // SAFETY: releases the hold taken above with the IRQL it returned.
    unsafe { ExReleaseSpinLockExclusive(QUEUE_LOCK.as_ptr(), old) };
    result
}

/// Initialises the queue and starts the worker threads. PASSIVE_LEVEL (DriverEntry,
/// before `FltStartFiltering`).
///
/// # Errors
/// The NTSTATUS of a failed `PsCreateSystemThread` (the threads already started are
/// stopped first).
pub fn start() -> Result<(), NtStatus> {
    // SAFETY: the layout has a non-zero size; the global allocator is the non-paged
    // pool allocator (pool.rs); PASSIVE_LEVEL.
    let block = unsafe { alloc::alloc::alloc(Layout::new::<KSEMAPHORE>()) }.cast::<KSEMAPHORE>();
    if block.is_null() {
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: `block` is fresh non-paged memory for one KSEMAPHORE, not shared yet (no
    // thread, no push before the store below); PASSIVE_LEVEL.
    unsafe { KeInitializeSemaphore(block, 0, SEMAPHORE_LIMIT) };
    SEMAPHORE.store(block, Ordering::Release);
    with_queue(|q| {
        q.head = 0;
        q.len = 0;
        q.stopping = false;
    });
    // A kernel handle whatever process DriverEntry runs in (PsCreateSystemThread page:
    // OBJ_KERNEL_HANDLE outside the system process).
    let attributes = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: null_mut(),
        ObjectName: core::ptr::null(),
        Attributes: OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null(),
        SecurityQualityOfService: core::ptr::null(),
    };
    for slot in &THREADS {
        let mut handle: *mut c_void = null_mut();
        // SAFETY: PASSIVE_LEVEL; `handle` is a local out parameter; `attributes` lives
        // for the call; NULL process (the system process) and client id;
        // `worker_main` has the KSTART_ROUTINE signature and only uses statics.
        let status = unsafe {
            nt::PsCreateSystemThread(
                &mut handle,
                SYNCHRONIZE,
                (&raw const attributes).cast(),
                null_mut(),
                null_mut(),
                worker_main,
                null_mut(),
            )
        };
        if let Err(error) = NtStatus(status).ok() {
            stop();
            return Err(error);
        }
        slot.store(handle as usize, Ordering::Release);
    }
    Ok(())
}

/// Queues a pended write for a worker thread. IRQL <= DISPATCH_LEVEL (the
/// post-write). Returns false, queuing nothing, while stopping (or if the queue were
/// full, which the engine's bound on pended writes rules out).
pub fn push(data: *mut FLT_CALLBACK_DATA, ctx: CompletionContext) -> bool {
    with_queue(|q| {
        if q.stopping || q.len >= QUEUE_CAPACITY {
            return false;
        }
        let tail = (q.head + q.len) % QUEUE_CAPACITY;
        let Some(slot) = q.items.get_mut(tail) else {
            return false;
        };
        *slot = Item {
            data,
            ctx: ctx.encode(),
        };
        q.len += 1;
        // Under the lock, so ordered before `stop` marks the queue stopping and frees
        // the semaphore.
        // SAFETY: initialised in `start` (not stopping, so not freed yet); DISPATCH_LEVEL
        // (the spin lock) with Wait = FALSE; one count per queued item (never beyond
        // MAXLONG: at most QUEUE_CAPACITY + WORKER_THREADS outstanding).
        let _ = unsafe { KeReleaseSemaphore(semaphore(), IO_NO_INCREMENT, 1, false) };
        true
    })
}

/// What a worker does next.
enum Next {
    Item(Item),
    Exit,
    Idle,
}

/// A worker thread (`KSTART_ROUTINE`): PASSIVE_LEVEL, a system thread of FlushGuard's;
/// `_context` is NULL.
unsafe extern "system" fn worker_main(_context: *mut c_void) {
    loop {
        // SAFETY: initialised in `start` before this thread existed; PASSIVE_LEVEL,
        // KernelMode, non-alertable, no timeout.
        let _ = unsafe {
            KeWaitForSingleObject(
                semaphore().cast_const().cast(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
        let next = with_queue(|q| {
            if q.len > 0 {
                let item = q.items.get(q.head).copied();
                q.head = (q.head + 1) % QUEUE_CAPACITY;
                q.len -= 1;
                item.map_or(Next::Idle, Next::Item)
            } else if q.stopping {
                Next::Exit
            } else {
                Next::Idle
            }
        });
        match next {
            Next::Item(item) => flush_and_complete(item),
            Next::Exit => break,
            Next::Idle => {}
        }
    }
    // SAFETY: called by a thread PsCreateSystemThread created, at PASSIVE_LEVEL; does
    // not return.
    let _ = unsafe { PsTerminateSystemThread(NtStatus::SUCCESS.0) };
}

/// Flushes one pended write (`Filter::flush_pended_write`) and then completes it,
/// exactly once. PASSIVE_LEVEL.
fn flush_and_complete(item: Item) {
    let ctx = CompletionContext::decode(item.ctx);
    if let Some(filter) = engine() {
        // SAFETY: `item.data` is the pended operation's callback data, live until the
        // FltCompletePendedPostOperation below; `op` is dropped before it.
        let mut op = unsafe { KernelOp::pended(item.data) };
        filter.flush_pended_write(&mut op, ctx);
    }
    // SAFETY: completes the post-operation `post_write` pended, exactly once (each
    // queued item is popped once).
    unsafe { FltCompletePendedPostOperation(item.data) };
}

/// Stops the worker threads and waits until each has terminated. PASSIVE_LEVEL; after
/// `FltUnregisterFilter` returned (nothing pended is left) or on a failed DriverEntry.
pub fn stop() {
    with_queue(|q| q.stopping = true);
    let started = THREADS
        .iter()
        .filter(|t| t.load(Ordering::Acquire) != 0)
        .count();
    if started > 0 && !semaphore().is_null() {
        // SAFETY: initialised in `start` (threads exist only after it); PASSIVE_LEVEL,
        // Wait = FALSE; one count per thread so each sees `stopping`.
        let _ = unsafe {
            KeReleaseSemaphore(
                semaphore(),
                IO_NO_INCREMENT,
                i32::try_from(started).unwrap_or(1),
                false,
            )
        };
    }
    let mut all_ended = true;
    for slot in &THREADS {
        let handle = slot.swap(0, Ordering::AcqRel) as *mut c_void;
        if handle.is_null() {
            continue;
        }
        let ended = loop {
            // SAFETY: a kernel handle to a thread this module created; PASSIVE_LEVEL;
            // non-alertable, no timeout: returns once the thread terminated.
            let status = unsafe { nt::ZwWaitForSingleObject(handle, 0, core::ptr::null()) };
            match status {
                STATUS_SUCCESS => break true,
                STATUS_ALERTED | STATUS_USER_APC => {}
                _ => break false,
            }
        };
        all_ended &= ended;
        // SAFETY: the same handle, closed exactly once (swapped out above).
        let _ = unsafe { nt::ZwClose(handle) };
    }
    // Every thread has terminated and nothing can push any more (stopping): the
    // semaphore is unused. Should a wait ever have failed, a thread might still use
    // it: it is left allocated (a leak, never a use after free).
    let block = SEMAPHORE.swap(null_mut(), Ordering::AcqRel);
    if !block.is_null() && all_ended {
        // SAFETY: allocated in `start` with this layout, no longer used by anyone.
        unsafe { alloc::alloc::dealloc(block.cast(), Layout::new::<KSEMAPHORE>()) };
    }
}
