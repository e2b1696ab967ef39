//! Calling into the image: the I/O manager's and Filter Manager's side of every driver
//! entry point (DriverEntry, FilterUnload, instance callbacks, operation callbacks, port
//! callbacks), each declared `extern "win64"` explicitly (on Linux `extern "system"` is
//! the SysV ABI).
//!
//! Every call checks the address lies inside the mapped image, runs with the world
//! unlocked, and checks after return what Filter Manager / Filter Verifier check: the
//! references the driver holds are balanced across the callback, a completion context
//! only with `FLT_PREOP_SUCCESS_WITH_CALLBACK` / `FLT_PREOP_SYNCHRONIZE`, and
//! `FltSetCallbackDataDirty` called iff the parameters changed.

use std::ffi::c_void;
use std::ptr::null_mut;

use crate::layout::{
    DriverObject, FileObject, FltCallbackData, FltIoParameterBlock, FltParameters,
    FltRelatedObjects, UnicodeString,
};
use crate::world::{world, PASSIVE_LEVEL};

/// `PDRIVER_INITIALIZE`.
pub type DriverEntryFn = unsafe extern "win64" fn(*mut DriverObject, *const UnicodeString) -> i32;
/// `PFLT_FILTER_UNLOAD_CALLBACK`.
pub type UnloadFn = unsafe extern "win64" fn(u32) -> i32;
/// `PFLT_INSTANCE_SETUP_CALLBACK`.
pub type InstanceSetupFn = unsafe extern "win64" fn(*const FltRelatedObjects, u32, u32, u32) -> i32;
/// `PFLT_INSTANCE_TEARDOWN_CALLBACK`.
pub type TeardownFn = unsafe extern "win64" fn(*const FltRelatedObjects, u32);
/// `PFLT_PRE_OPERATION_CALLBACK`.
pub type PreOpFn = unsafe extern "win64" fn(
    *mut FltCallbackData,
    *const FltRelatedObjects,
    *mut *mut c_void,
) -> i32;
/// `PFLT_POST_OPERATION_CALLBACK`.
pub type PostOpFn = unsafe extern "win64" fn(
    *mut FltCallbackData,
    *const FltRelatedObjects,
    *mut c_void,
    u32,
) -> i32;
/// `PFLT_CONNECT_NOTIFY`.
pub type ConnectFn =
    unsafe extern "win64" fn(usize, *mut c_void, *mut c_void, u32, *mut *mut c_void) -> i32;
/// `PFLT_DISCONNECT_NOTIFY`.
pub type DisconnectFn = unsafe extern "win64" fn(*mut c_void);
/// `PFLT_MESSAGE_NOTIFY`.
pub type MessageFn =
    unsafe extern "win64" fn(*mut c_void, *mut c_void, u32, *mut c_void, u32, *mut u32) -> i32;

/// `FLT_PREOP_SUCCESS_WITH_CALLBACK`.
pub const FLT_PREOP_SUCCESS_WITH_CALLBACK: i32 = 0;
/// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
pub const FLT_PREOP_SUCCESS_NO_CALLBACK: i32 = 1;
/// `FLT_PREOP_PENDING`.
pub const FLT_PREOP_PENDING: i32 = 2;
/// `FLT_PREOP_DISALLOW_FASTIO`.
pub const FLT_PREOP_DISALLOW_FASTIO: i32 = 3;
/// `FLT_PREOP_COMPLETE`.
pub const FLT_PREOP_COMPLETE: i32 = 4;
/// `FLT_PREOP_SYNCHRONIZE`.
pub const FLT_PREOP_SYNCHRONIZE: i32 = 5;
/// `FLT_POSTOP_FINISHED_PROCESSING`.
pub const FLT_POSTOP_FINISHED_PROCESSING: i32 = 0;
/// `FLT_POSTOP_MORE_PROCESSING_REQUIRED` (an enumerator of
/// `FLT_POSTOP_CALLBACK_STATUS`, fltKernel.h: 1).
pub const FLT_POSTOP_MORE_PROCESSING_REQUIRED: i32 = 1;

/// Checks `address` is a routine inside the image; records a violation if not.
pub fn code(address: usize, what: &str) -> Option<usize> {
    let mut w = world();
    let (start, end) = w.image;
    if address == 0 || address < start || address >= end {
        w.violation(format!(
            "{what} at 0x{address:X} is not inside the image [0x{start:X}, 0x{end:X})"
        ));
        return None;
    }
    Some(address)
}

/// Runs `call` (a call into the driver), recording the stack pointer at the call so
/// that the imports can measure how deep the driver's own frames reach (see
/// `World::deepest_import_call`).
#[inline(never)]
pub fn into_driver<T>(call: impl FnOnce() -> T) -> T {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    {
        let mut w = world();
        let below = w.driver_segments.last().map_or(0, |&(entry, below, last)| {
            below + entry.saturating_sub(last)
        });
        w.driver_segments.push((sp, below, sp));
    }
    let result = call();
    world().driver_segments.pop();
    result
}

/// Sets the simulated IRQL.
pub fn set_irql(irql: u8) {
    world().irql = irql;
}

/// One operation's Filter Manager structures, at stable addresses for the callbacks.
pub struct Operation {
    /// `FLT_CALLBACK_DATA`.
    pub data: Box<FltCallbackData>,
    /// `FLT_IO_PARAMETER_BLOCK` (`data.Iopb` points here).
    pub iopb: Box<FltIoParameterBlock>,
    /// `FLT_RELATED_OBJECTS`.
    pub objects: Box<FltRelatedObjects>,
    /// Name for messages, e.g. `write` (reported as `pre-write` / `post-write`).
    pub what: &'static str,
}

impl Operation {
    /// A new operation `major` on `file` through `instance`/`volume` of `filter`.
    pub fn new(
        what: &'static str,
        major: u8,
        file: *mut FileObject,
        filter: usize,
        volume: usize,
        instance: usize,
    ) -> Self {
        let mut iopb = Box::new(FltIoParameterBlock {
            IrpFlags: 0,
            MajorFunction: major,
            MinorFunction: 0,
            OperationFlags: 0,
            Reserved: 0,
            TargetFileObject: file,
            TargetInstance: instance as *mut c_void,
            Parameters: FltParameters { Others: [0; 6] },
        });
        let data = Box::new(FltCallbackData {
            Flags: 0x1, // FLTFL_CALLBACK_DATA_IRP_OPERATION
            Thread: null_mut(),
            Iopb: &mut *iopb,
            IoStatus: crate::layout::IoStatusBlock {
                Status: 0,
                _pointer_high: 0,
                Information: 0,
            },
            TagData: null_mut(),
            FilterContext: [null_mut(); 4],
            RequestorMode: 1, // UserMode
        });
        let objects = Box::new(FltRelatedObjects {
            Size: std::mem::size_of::<FltRelatedObjects>() as u16,
            TransactionContext: 0,
            Filter: filter as *mut c_void,
            Volume: volume as *mut c_void,
            Instance: instance as *mut c_void,
            FileObject: file,
            Transaction: null_mut(),
        });
        Operation {
            data,
            iopb,
            objects,
            what,
        }
    }

    /// The callback data's address (the operation's identity for the imports).
    pub fn id(&self) -> usize {
        &*self.data as *const FltCallbackData as usize
    }

    fn snapshot(&self) -> (u32, u8, u8, [u64; 6]) {
        // SAFETY: `Others` spans the whole 48-byte union and every bit pattern is a
        // valid [u64; 6]; the harness owns the block and the driver is not running.
        let parameters = unsafe { self.iopb.Parameters.Others };
        (
            self.iopb.IrpFlags,
            self.iopb.MinorFunction,
            self.iopb.OperationFlags,
            parameters,
        )
    }
}

/// Calls the pre-operation callback at `pre` with `op` at the current IRQL.
/// Returns (status, completion context).
pub fn pre(pre: usize, op: &mut Operation) -> Option<(i32, usize)> {
    let address = code(pre, &format!("pre-{}", op.what))?;
    // SAFETY: `address` is inside the mapped image and was registered as a
    // PFLT_PRE_OPERATION_CALLBACK in the driver's FLT_OPERATION_REGISTRATION table.
    let callback = unsafe { std::mem::transmute::<usize, PreOpFn>(address) };
    let before = op.snapshot();
    let held = world().driver_references();
    world().dirty.retain(|&d| d != op.id());
    let mut context: *mut c_void = null_mut();
    let data: *mut FltCallbackData = &mut *op.data;
    let objects: *const FltRelatedObjects = &*op.objects;
    // SAFETY: the callback data, parameter block, related objects and file object are
    // live harness allocations for the whole call; the world is unlocked.
    let status = into_driver(|| unsafe { callback(data, objects, &mut context) });
    let after = op.snapshot();
    let mut w = world();
    let held_after = w.driver_references();
    if held_after != held {
        w.violation(format!(
            "pre-{} returned holding {} more reference(s)",
            op.what,
            held_after - held
        ));
    }
    let dirty = w.dirty.contains(&op.id());
    let changed = before != after;
    if changed && !dirty {
        w.violation(format!(
            "pre-{} changed the parameters without FltSetCallbackDataDirty",
            op.what
        ));
    }
    if dirty && !changed {
        w.violation(format!(
            "pre-{} called FltSetCallbackDataDirty without changing the parameters",
            op.what
        ));
    }
    let with_callback =
        status == FLT_PREOP_SUCCESS_WITH_CALLBACK || status == FLT_PREOP_SYNCHRONIZE;
    if !context.is_null() && !with_callback {
        w.violation(format!(
            "pre-{} set a completion context with status {status}",
            op.what
        ));
    }
    if !matches!(
        status,
        FLT_PREOP_SUCCESS_WITH_CALLBACK
            | FLT_PREOP_SUCCESS_NO_CALLBACK
            | FLT_PREOP_PENDING
            | FLT_PREOP_DISALLOW_FASTIO
            | FLT_PREOP_COMPLETE
            | FLT_PREOP_SYNCHRONIZE
    ) {
        w.violation(format!("pre-{} returned unknown status {status}", op.what));
    }
    Some((status, context as usize))
}

/// Calls the post-operation callback at `post` at `irql` with `flags`.
pub fn post(post: usize, op: &mut Operation, context: usize, flags: u32, irql: u8) -> Option<i32> {
    let address = code(post, &format!("post-{}", op.what))?;
    // SAFETY: `address` is inside the mapped image and was registered as a
    // PFLT_POST_OPERATION_CALLBACK (or passed to FltDoCompletionProcessingWhenSafe).
    let callback = unsafe { std::mem::transmute::<usize, PostOpFn>(address) };
    let saved = {
        let mut w = world();
        let saved = w.irql;
        w.irql = irql;
        saved
    };
    let held = world().driver_references();
    let id = op.id();
    world().in_post.push(id);
    let data: *mut FltCallbackData = &mut *op.data;
    let objects: *const FltRelatedObjects = &*op.objects;
    // SAFETY: live harness allocations for the whole call; the world is unlocked.
    let status = into_driver(|| unsafe { callback(data, objects, context as *mut c_void, flags) });
    let mut w = world();
    if let Some(at) = w.in_post.iter().rposition(|&d| d == id) {
        w.in_post.remove(at);
    }
    // MORE_PROCESSING_REQUIRED pends the operation, unless FltDoCompletionProcessingWhenSafe
    // queued its safe callback (Filter Manager completes it after that), or it was
    // completed already (a violation of its own).
    let safe = w.deferred.iter().any(|d| d.1 == id);
    if status == FLT_POSTOP_MORE_PROCESSING_REQUIRED && !safe && !w.completed_pended.contains(&id) {
        pended(&mut w, op);
    }
    let held_after = w.driver_references();
    if held_after != held {
        w.violation(format!(
            "post-{} returned holding {} more reference(s)",
            op.what,
            held_after - held
        ));
    }
    if status != FLT_POSTOP_FINISHED_PROCESSING && status != FLT_POSTOP_MORE_PROCESSING_REQUIRED {
        w.violation(format!(
            "post-{} returned unknown status {status:#X}",
            op.what
        ));
    }
    w.irql = saved;
    Some(status)
}

/// The post-operation of `op` returned `FLT_POSTOP_MORE_PROCESSING_REQUIRED`: Filter
/// Manager holds the operation until `FltCompletePendedPostOperation`. Only an
/// IRP-based operation that is not paging I/O, on a thread without a top-level IRP,
/// may be pended to another thread (page "Pending an I/O Operation in a Postoperation
/// Callback Routine": the conditions under which `FltQueueDeferredIoWorkItem` refuses;
/// they hold for the driver's own threads as much, which is why the host fake's
/// `queue_deferred_flush` refuses there too).
fn pended(w: &mut crate::world::World, op: &Operation) {
    let what = op.what;
    if op.data.Flags & 0x2 != 0 {
        w.violation(format!(
            "post-{what} pended a fast I/O (non-IRP) operation (FLT_POSTOP_MORE_PROCESSING_REQUIRED)"
        ));
    }
    if op.iopb.IrpFlags & 0x2 != 0 {
        w.violation(format!(
            "post-{what} pended a paging I/O operation (FLT_POSTOP_MORE_PROCESSING_REQUIRED)"
        ));
    }
    if w.top_level_irp != 0 {
        w.violation(format!(
            "post-{what} pended the operation with a top-level IRP on the thread \
             (FLT_POSTOP_MORE_PROCESSING_REQUIRED; FltQueueDeferredIoWorkItem would refuse: \
             STATUS_FLT_NOT_SAFE_TO_POST_OPERATION)"
        ));
    }
    w.pended.push(op.id());
}

/// Runs the safe post-operation callbacks queued for `op`
/// (`FltDoCompletionProcessingWhenSafe`: a worker thread at PASSIVE_LEVEL). Pended
/// post-operations are completed by the driver's own system threads
/// (`kernel::run_until_idle`).
pub fn run_deferred(op: &mut Operation) {
    let id = op.id();
    loop {
        let item = {
            let mut w = world();
            let at = w.deferred.iter().position(|d| d.1 == id);
            at.map(|at| w.deferred.remove(at))
        };
        let Some((callback, _, _, context, flags)) = item else {
            return;
        };
        let _ = post(callback, op, context, flags, PASSIVE_LEVEL);
    }
}
