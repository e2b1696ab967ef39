//! Locks, critical regions, the completion of pended post-operations and the handle
//! of FlushGuard's own: `ExAcquire/ReleaseSpinLock{Exclusive,Shared}` (raise to and
//! restore from DISPATCH_LEVEL, as `KeGetCurrentIrql` then reports),
//! `KeEnter/LeaveCriticalRegion`, the `Flt*PushLock` routines,
//! `FltCompletePendedPostOperation`, `FltCreateFileEx2` and `FltClose`.

use super::*;

pub(super) extern "win64" fn ex_acquire_spin_lock_exclusive(lock: *mut i32) -> u8 {
    guarded("ExAcquireSpinLockExclusive", 0, || {
        let mut w = world();
        w.call("ExAcquireSpinLockExclusive", DISPATCH_LEVEL);
        let entry = w.spin_locks.entry(lock as usize).or_default();
        if entry.0 || entry.1 > 0 {
            w.violation("ExAcquireSpinLockExclusive of a lock this thread holds (deadlock)");
        }
        w.spin_locks.entry(lock as usize).or_default().0 = true;
        let old = w.irql;
        w.irql = w.irql.max(DISPATCH_LEVEL);
        old
    })
}

pub(super) extern "win64" fn ex_release_spin_lock_exclusive(lock: *mut i32, old: u8) {
    guarded("ExReleaseSpinLockExclusive", (), || {
        let mut w = world();
        w.call("ExReleaseSpinLockExclusive", DISPATCH_LEVEL);
        match w.spin_locks.get_mut(&(lock as usize)) {
            Some(entry) if entry.0 => entry.0 = false,
            _ => w.violation("ExReleaseSpinLockExclusive of a lock not held exclusively"),
        }
        w.irql = old;
    })
}

pub(super) extern "win64" fn ex_acquire_spin_lock_shared(lock: *mut i32) -> u8 {
    guarded("ExAcquireSpinLockShared", 0, || {
        let mut w = world();
        w.call("ExAcquireSpinLockShared", DISPATCH_LEVEL);
        let entry = w.spin_locks.entry(lock as usize).or_default();
        let exclusive = entry.0;
        entry.1 += 1;
        if exclusive {
            w.violation("ExAcquireSpinLockShared of a lock this thread holds exclusively");
        }
        let old = w.irql;
        w.irql = w.irql.max(DISPATCH_LEVEL);
        old
    })
}

pub(super) extern "win64" fn ex_release_spin_lock_shared(lock: *mut i32, old: u8) {
    guarded("ExReleaseSpinLockShared", (), || {
        let mut w = world();
        w.call("ExReleaseSpinLockShared", DISPATCH_LEVEL);
        match w.spin_locks.get_mut(&(lock as usize)) {
            Some(entry) if entry.1 > 0 => entry.1 -= 1,
            _ => w.violation("ExReleaseSpinLockShared of a lock not held shared"),
        }
        w.irql = old;
    })
}

pub(super) extern "win64" fn ke_enter_critical_region() {
    guarded("KeEnterCriticalRegion", (), || {
        let mut w = world();
        w.call("KeEnterCriticalRegion", APC_LEVEL);
        w.critical_region += 1;
    })
}

pub(super) extern "win64" fn ke_leave_critical_region() {
    guarded("KeLeaveCriticalRegion", (), || {
        let mut w = world();
        w.call("KeLeaveCriticalRegion", APC_LEVEL);
        if w.critical_region == 0 {
            w.violation("KeLeaveCriticalRegion without KeEnterCriticalRegion");
        } else {
            w.critical_region -= 1;
        }
    })
}

pub(super) extern "win64" fn flt_initialize_push_lock(lock: *mut usize) {
    guarded("FltInitializePushLock", (), || {
        let mut w = world();
        w.call("FltInitializePushLock", u8::MAX);
        if w.push_locks.insert(lock as usize, false).is_some() {
            w.violation("FltInitializePushLock of a push lock already initialized");
        }
    })
}

pub(super) extern "win64" fn flt_delete_push_lock(lock: *mut usize) {
    guarded("FltDeletePushLock", (), || {
        let mut w = world();
        w.call("FltDeletePushLock", u8::MAX);
        match w.push_locks.remove(&(lock as usize)) {
            Some(false) => {}
            Some(true) => w.violation("FltDeletePushLock of a push lock still held"),
            None => w.violation("FltDeletePushLock of a push lock never initialized"),
        }
    })
}

pub(super) extern "win64" fn flt_acquire_push_lock_exclusive(lock: *mut usize) {
    guarded("FltAcquirePushLockExclusive", (), || {
        let mut w = world();
        w.call("FltAcquirePushLockExclusive", APC_LEVEL);
        if w.critical_region == 0 && w.irql < APC_LEVEL {
            w.violation(
                "FltAcquirePushLockExclusive with normal kernel APCs enabled (no \
                 KeEnterCriticalRegion)",
            );
        }
        match w.push_locks.get_mut(&(lock as usize)) {
            Some(held) if !*held => *held = true,
            Some(_) => w.violation("FltAcquirePushLockExclusive of a push lock this thread holds"),
            None => w.violation("FltAcquirePushLockExclusive of an uninitialized push lock"),
        }
    })
}

pub(super) extern "win64" fn flt_release_push_lock(lock: *mut usize) {
    guarded("FltReleasePushLock", (), || {
        let mut w = world();
        w.call("FltReleasePushLock", APC_LEVEL);
        match w.push_locks.get_mut(&(lock as usize)) {
            Some(held) if *held => *held = false,
            _ => w.violation("FltReleasePushLock of a push lock not held"),
        }
    })
}

pub(super) extern "win64" fn flt_complete_pended_post_operation(data: *mut FltCallbackData) {
    guarded("FltCompletePendedPostOperation", (), || {
        let mut w = world();
        w.call("FltCompletePendedPostOperation", DISPATCH_LEVEL);
        if w.in_post.contains(&(data as usize)) {
            // The post-operation that pends it has not returned
            // FLT_POSTOP_MORE_PROCESSING_REQUIRED yet.
            w.violation(
                "FltCompletePendedPostOperation for an operation whose post-operation \
                 callback has not returned yet (completed before it was pended)",
            );
            w.completed_pended.push(data as usize);
            return;
        }
        match w.pended.iter().position(|&d| d == data as usize) {
            Some(at) => {
                w.pended.remove(at);
                w.completed_pended.push(data as usize);
            }
            None => w.violation(
                "FltCompletePendedPostOperation for an operation not pended (completed twice?)",
            ),
        }
    })
}

#[allow(clippy::too_many_arguments)] // the DDI's signature
pub(super) extern "win64" fn flt_create_file_ex2(
    filter: usize,
    _instance: usize,
    handle: *mut usize,
    file_object: *mut *mut FileObject,
    _access: u32,
    attributes: *const ObjectAttributes,
    io_status: *mut IoStatusBlock,
    _allocation_size: *const i64,
    _file_attributes: u32,
    _share_access: u32,
    _disposition: u32,
    _create_options: u32,
    _ea_buffer: *const c_void,
    _ea_length: u32,
    _flags: u32,
    _driver_context: *const c_void,
) -> i32 {
    guarded("FltCreateFileEx2", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("FltCreateFileEx2", PASSIVE_LEVEL);
        check_filter(&mut w, "FltCreateFileEx2", filter);
        if !file_object.is_null() {
            w.violation(
                "FltCreateFileEx2 asked for the file object (the harness expects the driver \
                 to use the handle only)",
            );
        }
        if let Some(status) = w.fail_now("FltCreateFileEx2") {
            return status;
        }
        // SAFETY: the driver passes its local OBJECT_ATTRIBUTES.
        let Some(attributes) = (unsafe { attributes.as_ref() }) else {
            w.violation("FltCreateFileEx2 with NULL ObjectAttributes");
            return STATUS_INVALID_PARAMETER;
        };
        if attributes.Attributes & 0x200 == 0 {
            w.violation("FltCreateFileEx2 without OBJ_KERNEL_HANDLE");
        }
        // SAFETY: ObjectName describes the driver's copy of the file's name.
        let name = unsafe { read_unicode(attributes.ObjectName) }.unwrap_or_default();
        let Some(file) = w
            .files
            .iter()
            .find(|(_, f)| f.name == name)
            .map(|(&address, _)| address)
        else {
            w.violation(format!(
                "FltCreateFileEx2({name}): not the normalized name of an open file"
            ));
            return STATUS_OBJECT_NAME_NOT_FOUND;
        };
        if let Some(f) = w.files.get_mut(&file) {
            f.kernel_handles += 1;
        }
        let h = w.open_handle(Handle::File(file));
        drop(w);
        // SAFETY: the driver passes a pointer to its local HANDLE.
        unsafe { put(handle, h) };
        // SAFETY: the driver passes a pointer to its local IO_STATUS_BLOCK.
        unsafe {
            put(
                io_status,
                IoStatusBlock {
                    Status: 0,
                    _pointer_high: 0,
                    Information: 1, // FILE_OPENED
                },
            )
        };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_close(handle: usize) -> i32 {
    guarded("FltClose", STATUS_INVALID_HANDLE, || {
        let mut w = world();
        w.call("FltClose", PASSIVE_LEVEL);
        match w.handles.remove(&handle) {
            Some(Handle::File(file)) => {
                w.file_handle_closes += 1;
                if let Some(f) = w.files.get_mut(&file) {
                    f.kernel_handles = f.kernel_handles.saturating_sub(1);
                }
                // A file object of FlushGuard's own: its cleanup and close never touch
                // the application's.
                w.fail_now("FltClose").unwrap_or(STATUS_SUCCESS)
            }
            other => {
                w.violation(format!(
                    "FltClose(0x{handle:X}): not a file handle from FltCreateFileEx2 ({other:?})"
                ));
                STATUS_INVALID_HANDLE
            }
        }
    })
}
