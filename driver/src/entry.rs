//! `DriverEntry` and `FilterUnload`: setup and reverse-order teardown of the minifilter
//! (DDI pages "DriverEntry for a minifilter", "FltRegisterFilter", "FltStartFiltering",
//! "PFLT_FILTER_UNLOAD_CALLBACK").
//!
//! Setup: resolve pool routines -> `FltRegisterFilter` -> build the engine's `Filter`
//! (policy from `Parameters\Policy`) -> start the flush worker threads -> create
//! `\FlushGuardPort` -> `FltStartFiltering`. Any failure undoes the completed steps in
//! reverse.
//! Unload: `Filter::unload` (close the server port -> `FltUnregisterFilter`, the order
//! the engine's teardown defines and the fake Filter Manager checks; the worker threads
//! complete every pended write meanwhile) -> stop the worker threads -> free globals
//! (DESIGN.md section 1, "Unload").

use flushguard_protocol::NtStatus;
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltRegisterFilter, FltStartFiltering, FltUnregisterFilter, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

use flushguard_engine::callbacks::PolicySource;

use crate::fltmgr::{self, Hooks};
use crate::globals::{self, engine, filter_handle, free_engine, install_engine};
use crate::registration::REGISTRATION;
use crate::{pool, port, trace, worker};

/// What the Filter Manager layer hands work back to.
const HOOKS: Hooks = Hooks {
    close_server_port: port::close,
    unregister_filter: unregister,
};

/// The driver's entry point, called once by the I/O manager when `fltmc load FlushGuard`
/// (or the service start) loads the image.
///
/// `driver_object` is ours for the driver's lifetime; `registry_path` names the service
/// key, whose `Parameters\Policy` value holds the persisted policy.
/// Returns `STATUS_SUCCESS`, or the first failing step's NTSTATUS after undoing what was
/// set up (the image is then unloaded). IRQL: PASSIVE_LEVEL.
#[no_mangle]
pub extern "system" fn DriverEntry(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    match start(driver_object, registry_path) {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => status.0,
    }
}

/// Registers the filter, creates the port and starts filtering, unwinding on failure.
fn start(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> Result<(), NtStatus> {
    pool::init();

    let mut filter: PFLT_FILTER = 0;
    // SAFETY: PASSIVE_LEVEL in DriverEntry; `driver_object` is the object the I/O manager
    // passed in; REGISTRATION is a 'static table; `filter` is a local out parameter.
    let status = unsafe { FltRegisterFilter(driver_object, &REGISTRATION.0, &mut filter) };
    if let Err(error) = NtStatus(status).ok() {
        trace::error_status(c"FltRegisterFilter failed", status);
        return Err(error);
    }
    globals::set_filter_handle(filter);

    // SAFETY: `registry_path` is DriverEntry's argument, valid during DriverEntry.
    let key = match unsafe { fltmgr::registry_path(registry_path) } {
        Ok(key) => key,
        Err(error) => {
            trace::error_status(c"no pool for the registry path", error.0);
            unregister();
            return Err(error);
        }
    };
    match install_engine(filter, &key, HOOKS) {
        Ok(PolicySource::Registry) => trace::info(c"policy loaded from Parameters\\Policy"),
        Ok(PolicySource::Absent) => trace::info(c"no persisted policy: pass-through"),
        Ok(PolicySource::Invalid(status)) => {
            trace::error_status(c"persisted policy rejected: pass-through", status.0)
        }
        Err(error) => {
            unregister();
            return Err(error);
        }
    }
    drop(key);

    if let Err(error) = worker::start() {
        trace::error_status(c"flush worker threads not started", error.0);
        unregister();
        free_engine();
        return Err(error);
    }

    if let Err(error) = port::create(filter) {
        unregister();
        worker::stop();
        free_engine();
        return Err(error);
    }

    // SAFETY: PASSIVE_LEVEL; `filter` was returned by FltRegisterFilter above and is
    // still registered.
    let status = unsafe { FltStartFiltering(filter) };
    if let Err(error) = NtStatus(status).ok() {
        trace::error_status(c"FltStartFiltering failed", status);
        port::close();
        unregister();
        worker::stop();
        free_engine();
        return Err(error);
    }
    trace::info(c"filtering started");
    Ok(())
}

/// Unregisters the filter, if registered. Waits for outstanding callbacks and detaches
/// every instance. The handle stays readable through [`filter_handle`] until
/// `FltUnregisterFilter` returns: callbacks still draining (disconnect notifications,
/// post-operations) may use it. Called once (unload, or a failed DriverEntry).
/// IRQL: PASSIVE_LEVEL.
pub(crate) fn unregister() {
    let filter = filter_handle();
    if filter != 0 {
        // SAFETY: `filter` came from FltRegisterFilter; unload and DriverEntry's unwind
        // are mutually exclusive, so this is its only unregistration.
        unsafe { FltUnregisterFilter(filter) };
        globals::set_filter_handle(0);
    }
}

/// `FilterUnloadCallback`: `fltmc unload FlushGuard` or service stop.
///
/// `Filter::unload` closes the server port, then unregisters the filter (which closes
/// client ports and waits for callbacks, draining post-operations); then the globals
/// are freed. Returns `STATUS_SUCCESS` (FlushGuard never vetoes an unload; with
/// `FLTFL_FILTER_UNLOAD_MANDATORY` it could not anyway). IRQL: PASSIVE_LEVEL.
pub extern "system" fn filter_unload(_flags: u32) -> NTSTATUS {
    match engine() {
        Some(engine) => engine.unload(),
        None => {
            port::close();
            unregister();
        }
    }
    // FltUnregisterFilter returned: every pended write was completed by the workers.
    worker::stop();
    free_engine();
    trace::info(c"unloaded");
    STATUS_SUCCESS
}
