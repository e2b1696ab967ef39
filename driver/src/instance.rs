//! Instance setup and teardown queries: where FlushGuard attaches.
//!
//! Since Windows Vista, minifilters see network I/O on the MUP volume (`\Device\Mup`),
//! whose `VolumeDeviceType` is `FILE_DEVICE_NETWORK_FILE_SYSTEM`; the redirectors behind
//! it (SMB/LANMAN, WebDAV, NFS, RDPDR) have no volumes of their own (DESIGN.md section 1;
//! DDI page "PFLT_INSTANCE_SETUP_CALLBACK").

use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS;
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_FLT_DO_NOT_ATTACH, STATUS_SUCCESS};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;
use windows_sys::Win32::System::Ioctl::FILE_DEVICE_NETWORK_FILE_SYSTEM;

/// Whether FlushGuard attaches to a volume of this device type (`FILE_DEVICE_*`, as
/// passed to `InstanceSetup`): only network file systems.
pub const fn attaches_to(volume_device_type: u32) -> bool {
    volume_device_type == FILE_DEVICE_NETWORK_FILE_SYSTEM
}

/// `InstanceSetupCallback`: called when an instance is about to attach to a volume
/// (automatically, or by `fltmc attach`).
///
/// Returns `STATUS_SUCCESS` for network file systems (and for other volumes when the
/// policy in force sets `attach_local_volumes`), `STATUS_FLT_DO_NOT_ATTACH` elsewhere. IRQL: PASSIVE_LEVEL. The pointer argument is not dereferenced.
pub extern "system" fn instance_setup(
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    volume_device_type: u32,
    _volume_filesystem_type: FLT_FILESYSTEM_TYPE,
) -> NTSTATUS {
    let network = attaches_to(volume_device_type);
    // The engine adds local volumes when the policy opts them in and counts instances.
    let attach = crate::globals::engine().map_or(network, |engine| engine.instance_setup(network));
    if attach {
        STATUS_SUCCESS
    } else {
        STATUS_FLT_DO_NOT_ATTACH
    }
}

/// `InstanceTeardownCompleteCallback`: an instance is gone (volume dismount, detach,
/// unload); the engine's instance count for GetStatus drops. IRQL: PASSIVE_LEVEL.
pub extern "system" fn instance_teardown_complete(
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _reason: u32,
) {
    if let Some(engine) = crate::globals::engine() {
        engine.instance_teardown();
    }
}

/// `InstanceQueryTeardownCallback`: allows manual detach (`fltmc detach`); without this
/// callback Filter Manager refuses it. Returns `STATUS_SUCCESS`. IRQL: PASSIVE_LEVEL.
pub extern "system" fn instance_query_teardown(
    _flt_objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
) -> NTSTATUS {
    STATUS_SUCCESS
}
