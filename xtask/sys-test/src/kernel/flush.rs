//! The flushes: `FltFlushBuffers`, `FltFlushBuffers2` (resolved through
//! `FltGetRoutineAddress`) and `ZwFlushBuffersFileEx`, with the checks every flush gets
//! (PASSIVE_LEVEL, no top-level IRP, not nested) and the cache manager's paging
//! write-back that re-enters the driver's pre-write under a flush, as on Windows.

use super::*;

pub(super) fn flush_checks(
    w: &mut crate::world::World,
    routine: &'static str,
    file: usize,
    flags: u32,
) {
    if w.irql != PASSIVE_LEVEL {
        let irql = w.irql;
        w.violation(format!("{routine} at IRQL {irql}"));
    }
    if w.top_level_irp != 0 {
        w.violation(format!("{routine} with a top-level IRP set"));
    }
    if w.flush_depth > 0 {
        w.violation(format!("{routine} issued inside another flush"));
    }
    w.flushes.push(Flush {
        routine,
        file,
        flags,
    });
}

/// The cache manager's write-back under a flush: a synchronous paging write that
/// re-enters the driver's pre-write (and post-write) with a file-system IRP top-level.
pub(super) fn paging_write_back(instance: usize, file: usize) {
    let (pre, post, filter, volume) = {
        let w = world();
        let Some(&(_, _, pre, post)) = w
            .registration
            .operations
            .iter()
            .find(|o| o.0 == IRP_MJ_WRITE)
        else {
            return;
        };
        let volume = crate::binary::volume_of(&w, instance);
        (pre, post, w.filter, volume)
    };
    let mut op = dispatch::Operation::new(
        "write (paging, from a flush)",
        IRP_MJ_WRITE,
        file as *mut FileObject,
        filter,
        volume,
        instance,
    );
    op.iopb.IrpFlags = PAGING_WRITE_FLAGS;
    op.iopb.Parameters.Write = crate::binary::write_parameters(4096);
    let (saved_top, saved_depth) = {
        let mut w = world();
        let saved = (w.top_level_irp, w.flush_depth);
        w.top_level_irp = 0xFFFF_8000_0000_1000; // a file system's IRP
        w.flush_depth += 1;
        saved
    };
    if let Some((status, context)) = dispatch::pre(pre, &mut op) {
        if post != 0
            && (status == dispatch::FLT_PREOP_SUCCESS_WITH_CALLBACK
                || status == dispatch::FLT_PREOP_SYNCHRONIZE)
        {
            op.data.IoStatus.Status = 0;
            op.data.IoStatus.Information = 4096;
            let irql = world().irql;
            let _ = dispatch::post(post, &mut op, context, 0, irql);
        }
    }
    let mut w = world();
    w.top_level_irp = saved_top;
    w.flush_depth = saved_depth;
}

pub(super) extern "win64" fn flt_flush_buffers(
    instance: usize,
    file_object: *mut FileObject,
) -> i32 {
    guarded("FltFlushBuffers", STATUS_INVALID_PARAMETER, || {
        {
            let mut w = world();
            w.call("FltFlushBuffers", PASSIVE_LEVEL);
            w.call_arguments(None, file_object as usize);
            flush_checks(&mut w, "FltFlushBuffers", file_object as usize, 0);
            if let Some(status) = w.fail_now("FltFlushBuffers") {
                return status;
            }
        }
        paging_write_back(instance, file_object as usize);
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_flush_buffers2(
    instance: usize,
    file_object: *mut FileObject,
    flush_type: u32,
    _data: *mut FltCallbackData,
) -> i32 {
    guarded("FltFlushBuffers2", STATUS_INVALID_PARAMETER, || {
        {
            let mut w = world();
            w.call("FltFlushBuffers2", PASSIVE_LEVEL);
            w.call_arguments(Some(flush_type), file_object as usize);
            if !w.has_flush2 {
                w.violation("FltFlushBuffers2 called although it did not resolve");
            }
            if flush_type & !0xF != 0 {
                w.violation(format!("FltFlushBuffers2 flush type 0x{flush_type:X}"));
            }
            flush_checks(&mut w, "FltFlushBuffers2", file_object as usize, flush_type);
            if let Some(status) = w.fail_now("FltFlushBuffers2") {
                return status;
            }
        }
        paging_write_back(instance, file_object as usize);
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn zw_flush_buffers_file_ex(
    handle: usize,
    flags: u32,
    _parameters: *const c_void,
    _parameters_size: u32,
    io_status: *mut IoStatusBlock,
) -> i32 {
    guarded("ZwFlushBuffersFileEx", STATUS_INVALID_HANDLE, || {
        let mut w = world();
        w.call("ZwFlushBuffersFileEx", PASSIVE_LEVEL);
        let Some(Handle::File(file)) = w.handles.get(&handle).cloned() else {
            w.violation(format!(
                "ZwFlushBuffersFileEx(0x{handle:X}): not an open file handle"
            ));
            return STATUS_INVALID_HANDLE;
        };
        w.call_arguments(Some(flags), file);
        flush_checks(&mut w, "ZwFlushBuffersFileEx", file, flags);
        let instance = w.instances.first().map_or(0, |&(_, i)| i);
        drop(w);
        own_flush_reenters(instance, file, flags);
        if let Some(status) = world().fail_now("ZwFlushBuffersFileEx") {
            return status;
        }
        paging_write_back(instance, file);
        // SAFETY: the driver passes a pointer to a local IO_STATUS_BLOCK.
        unsafe {
            put(
                io_status,
                IoStatusBlock {
                    Status: 0,
                    _pointer_high: 0,
                    Information: 0,
                },
            )
        };
        STATUS_SUCCESS
    })
}

/// `ZwFlushBuffersFileEx` enters the stack at the top: the driver's own pre-flush sees
/// its flush (kernel mode, the minor function from the flags) and must pass it through
/// untouched, without a post-operation.
fn own_flush_reenters(instance: usize, file: usize, flags: u32) {
    let (pre, filter, volume) = {
        let w = world();
        let Some(&(_, _, pre, _)) = w.registration.operations.iter().find(|o| o.0 == 0x09) else {
            return;
        };
        (pre, w.filter, crate::binary::volume_of(&w, instance))
    };
    let mut op = dispatch::Operation::new(
        "flush (the driver's own ZwFlushBuffersFileEx)",
        0x09,
        file as *mut FileObject,
        filter,
        volume,
        instance,
    );
    op.data.RequestorMode = 0;
    op.iopb.MinorFunction = match flags {
        0x1 => 2, // FLUSH_FLAGS_FILE_DATA_ONLY -> IRP_MN_FLUSH_DATA_ONLY
        0x2 => 3, // FLUSH_FLAGS_NO_SYNC -> IRP_MN_FLUSH_NO_SYNC
        0x4 => 4, // FLUSH_FLAGS_FILE_DATA_SYNC_ONLY -> IRP_MN_FLUSH_DATA_SYNC_ONLY
        _ => 0,
    };
    let minor = op.iopb.MinorFunction;
    world().flush_depth += 1;
    let result = dispatch::pre(pre, &mut op);
    let mut w = world();
    w.flush_depth -= 1;
    match result {
        Some((dispatch::FLT_PREOP_SUCCESS_NO_CALLBACK, _)) if op.iopb.MinorFunction == minor => {}
        other => w.violation(format!(
            "the driver's own flush was not passed through untouched: {other:?}, minor {} -> {}",
            minor, op.iopb.MinorFunction
        )),
    }
}
