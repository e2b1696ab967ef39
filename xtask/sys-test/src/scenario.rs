//! The scenarios: the driver's whole life through its registered callbacks, one
//! description run against the binary here and against the host fake
//! ([`crate::compare`]) for the same policy.
//!
//! Lifecycle: DriverEntry (policy from `Parameters\Policy`) -> FltRegisterFilter
//! (operation table captured) -> port -> FltStartFiltering -> InstanceSetup on a
//! network volume (attach) and a local one (no attach) -> create / write / flush /
//! cleanup / close of a file on `\\srv\share` over SMB -> connect to
//! `\FlushGuardPort`, GetVersion, a truncated request, disconnect -> FilterUnload ->
//! leak report.

use std::ffi::c_void;
use std::ptr::null_mut;

use flushguard_engine::policy::{FlushMethod, Mode, ProviderSelector};
use flushguard_protocol::message::ReplyHeader;
use flushguard_protocol::{ConnectContext, FlushFlags, NtStatus};

use crate::dispatch::{self, Operation};
use crate::kernel::{self, FILE_DEVICE_NETWORK_FILE_SYSTEM};
use crate::layout::{
    DriverObject, FileObject, FltRelatedObjects, FltWriteParameters, UnicodeString,
};
use crate::loader::LoadedImage;
use crate::world::{world, File, FilterState, World, DISPATCH_LEVEL, PASSIVE_LEVEL};

/// The requestor image (as the host scenarios use).
pub const PROCESS: &str = "\\Device\\HarddiskVolume2\\Apps\\app.exe";
/// The governed file (as the host scenarios use).
pub const SHARE_FILE: &str = "\\Device\\Mup\\srv\\share\\data\\a.db";
/// DriverEntry's RegistryPath.
pub const SERVICE_KEY: &str =
    "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\FlushGuard";
/// MUP provider id of SMB (`\Device\LanmanRedirector`).
pub const PROVIDER_SMB: u32 = 0x10;
/// `FILE_DEVICE_DISK_FILE_SYSTEM`.
const FILE_DEVICE_DISK_FILE_SYSTEM: u32 = 0x8;
/// `FLT_FSTYPE_MUP`.
const FLT_FSTYPE_MUP: u32 = 13;
/// `FLT_FSTYPE_NTFS`.
const FLT_FSTYPE_NTFS: u32 = 2;
/// `STATUS_FLT_DO_NOT_ATTACH`.
const STATUS_FLT_DO_NOT_ATTACH: i32 = 0xC01C_000F_u32 as i32;
/// `FO_SYNCHRONOUS_IO`.
const FO_SYNCHRONOUS_IO: u32 = 0x2;
/// Create options: `FILE_OPEN_IF` disposition, `FILE_SYNCHRONOUS_IO_NONALERT`,
/// `FILE_NON_DIRECTORY_FILE`.
pub const CREATE_OPTIONS: u32 = (3 << 24) | 0x20 | 0x40;
/// As [`CREATE_OPTIONS`] without `FILE_SYNCHRONOUS_IO_NONALERT` (asynchronous I/O).
pub const CREATE_OPTIONS_ASYNC: u32 = (3 << 24) | 0x40;

/// The create options of `spec`'s file.
pub fn create_options(spec: &Spec) -> u32 {
    if spec.asynchronous {
        CREATE_OPTIONS_ASYNC
    } else {
        CREATE_OPTIONS
    }
}
/// `FILE_WRITE_THROUGH`.
const FILE_WRITE_THROUGH: u32 = 0x2;
/// `SL_WRITE_THROUGH`.
const SL_WRITE_THROUGH: u8 = 0x4;
/// Bytes per scenario write (as the host harness writes).
pub const WRITE_LENGTH: u32 = 512;

/// One scenario: a policy mode and what the run must show.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Name on the command line and in the summary.
    pub name: &'static str,
    /// The governed rule's mode (`None`: no persisted policy at all).
    pub mode: Option<Mode>,
    /// Flush method of the rule.
    pub method: FlushMethod,
    /// `FltGetRoutineAddress("FltFlushBuffers2")` resolves.
    pub has_flush2: bool,
    /// The file is opened for asynchronous I/O (no `FO_SYNCHRONOUS_IO`): the write is
    /// not synchronous and its post-operation runs at DISPATCH_LEVEL (a redirector's
    /// completion), deferred work in a PASSIVE_LEVEL worker.
    pub asynchronous: bool,
    /// The rule matches any provider (`provider = any`), so it can act in pre-create
    /// (`FILE_WRITE_THROUGH`); an SMB-only rule waits for the post-create, where MUP
    /// names the redirector.
    pub any_provider: bool,
}

/// Every scenario.
pub const SCENARIOS: &[Spec] = &[
    Spec {
        name: "no-policy",
        mode: None,
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "flush-after-write",
        mode: Some(Mode::FlushAfterWrite),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "flush-after-write-legacy",
        mode: Some(Mode::FlushAfterWrite),
        method: FlushMethod::Filter,
        has_flush2: false,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "flush-after-write-native",
        mode: Some(Mode::FlushAfterWrite),
        method: FlushMethod::Native,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "write-through",
        mode: Some(Mode::WriteThrough),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "write-through-any-provider",
        mode: Some(Mode::WriteThrough),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: true,
    },
    Spec {
        name: "flush-on-close",
        mode: Some(Mode::FlushOnClose),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
    Spec {
        name: "flush-after-write-async",
        mode: Some(Mode::FlushAfterWrite),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: true,
        any_provider: false,
    },
    Spec {
        name: "flush-on-close-async",
        mode: Some(Mode::FlushOnClose),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: true,
        any_provider: false,
    },
    Spec {
        name: "audit",
        mode: Some(Mode::Audit),
        method: FlushMethod::Filter,
        has_flush2: true,
        asynchronous: false,
        any_provider: false,
    },
];

/// The persisted policy blob of `spec` (the host scenarios' one-rule policy).
pub fn policy_of(spec: &Spec) -> Option<Vec<u8>> {
    let mode = spec.mode?;
    let action = flushguard_tests::scenario::action(mode, spec.method, FlushFlags::empty(), None);
    let provider = if spec.any_provider {
        ProviderSelector::Any
    } else {
        ProviderSelector::Smb
    };
    Some(flushguard_tests::scenario::policy_blob_for(
        provider, action,
    ))
}

/// Attached instances `(volume, instance)`.
pub fn instances(w: &World) -> Vec<(usize, usize)> {
    w.instances.clone()
}

/// The volume of an attached instance.
pub fn volume_of(w: &World, instance: usize) -> usize {
    w.instances
        .iter()
        .find(|(_, i)| *i == instance)
        .map_or(0, |(v, _)| *v)
}

/// `FLT_PARAMETERS.Write` for a write of `length` bytes at offset 0.
pub fn write_parameters(length: u32) -> FltWriteParameters {
    FltWriteParameters {
        Length: length,
        _align1: 0,
        Key: 0,
        _align2: 0,
        ByteOffset: 0,
        WriteBuffer: null_mut(),
        MdlAddress: null_mut(),
    }
}

/// What one scenario observed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Violations (harness checks, leaks, expectation mismatches).
    pub violations: Vec<String>,
    /// Import calls made by the driver.
    pub calls: usize,
    /// Distinct imports called.
    pub distinct_calls: usize,
    /// Driver callbacks the harness invoked.
    pub callbacks: usize,
    /// Pool allocations (all tags).
    pub allocations: u64,
    /// `DbgPrintEx` lines.
    pub debug_output: Vec<String>,
    /// Per-routine call counts (for the comparison with the fake).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Flushes `(routine, flags)`.
    pub flushes: Vec<(&'static str, u32)>,
    /// Create options, operation flags and flush minor the file system saw.
    pub seen: Seen,
}

/// What reached the (simulated) file system below the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `FILE_WRITE_THROUGH` in the create options.
    pub create_write_through: bool,
    /// `SL_WRITE_THROUGH` on the write.
    pub write_through: bool,
    /// The flush's minor function.
    pub flush_minor: u8,
}

struct Driver {
    filter: usize,
    callbacks: usize,
}

fn violation(message: impl Into<String>) {
    world().violation(message);
}

fn operation(major: u8) -> Option<(usize, usize)> {
    world()
        .registration
        .operations
        .iter()
        .find(|o| o.0 == major)
        .map(|o| (o.2, o.3))
}

/// Runs one pre/post pair the way Filter Manager does for an IRP-based operation:
/// the post-operation runs for SUCCESS_WITH_CALLBACK (at `post_irql`) or SYNCHRONIZE
/// (at PASSIVE_LEVEL, in the issuing thread), then any deferred safe post-operation
/// work (a worker at PASSIVE_LEVEL).
fn run(
    driver: &mut Driver,
    op: &mut Operation,
    synchronous: bool,
    post_irql: u8,
    complete: impl FnOnce(&mut Operation),
) -> i32 {
    let Some((pre, post)) = operation(op.iopb.MajorFunction) else {
        violation(format!(
            "IRP_MJ {}: the operation is not registered",
            op.what
        ));
        return dispatch::FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if synchronous {
        world().synchronous.push(op.id());
    }
    dispatch::set_irql(PASSIVE_LEVEL);
    driver.callbacks += 1;
    let Some((status, context)) = dispatch::pre(pre, op) else {
        return dispatch::FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    complete(op);
    let wants_post = status == dispatch::FLT_PREOP_SUCCESS_WITH_CALLBACK
        || status == dispatch::FLT_PREOP_SYNCHRONIZE;
    if wants_post && post != 0 {
        driver.callbacks += 1;
        let irql = if status == dispatch::FLT_PREOP_SYNCHRONIZE {
            PASSIVE_LEVEL
        } else {
            post_irql
        };
        let _ = dispatch::post(post, op, context, 0, irql);
        dispatch::run_deferred(op);
    } else if wants_post {
        violation(format!(
            "pre-{} asked for a post-operation callback it did not register",
            op.what
        ));
    }
    let id = op.id();
    let mut w = world();
    w.synchronous.retain(|&d| d != id);
    w.dirty.retain(|&d| d != id);
    status
}

fn call_instance_setup(driver: &mut Driver, device_type: u32, fs_type: u32) -> (i32, usize, usize) {
    let (setup, volume, instance) = {
        let mut w = world();
        let volume = w.object();
        let instance = w.object();
        w.volumes.insert(volume, device_type);
        (w.registration.instance_setup, volume, instance)
    };
    let Some(address) = dispatch::code(setup, "InstanceSetup") else {
        return (STATUS_FLT_DO_NOT_ATTACH, volume, instance);
    };
    let objects = FltRelatedObjects {
        Size: std::mem::size_of::<FltRelatedObjects>() as u16,
        TransactionContext: 0,
        Filter: driver.filter as *mut c_void,
        Volume: volume as *mut c_void,
        Instance: instance as *mut c_void,
        FileObject: null_mut(),
        Transaction: null_mut(),
    };
    // SAFETY: a PFLT_INSTANCE_SETUP_CALLBACK inside the image (captured registration).
    let callback = unsafe { std::mem::transmute::<usize, dispatch::InstanceSetupFn>(address) };
    driver.callbacks += 1;
    // SAFETY: `objects` is a live local for the call; PASSIVE_LEVEL.
    let status = unsafe { callback(&objects, 0x1, device_type, fs_type) };
    (status, volume, instance)
}

/// Runs `spec` against the loaded image; the caller reports the outcome.
pub fn run_scenario(image: &LoadedImage, spec: &Spec) -> Outcome {
    {
        let mut w = world();
        w.irql = PASSIVE_LEVEL;
        w.image = (image.base, image.base + image.size);
        w.service_key = SERVICE_KEY.to_string();
        w.policy_value = policy_of(spec);
        w.parameters_key = w.policy_value.is_some();
        w.has_flush2 = spec.has_flush2;
    }
    let mut driver = Driver {
        filter: 0,
        callbacks: 0,
    };
    let mut seen = Seen::default();

    // DriverEntry.
    let service: Vec<u16> = SERVICE_KEY.encode_utf16().collect();
    let registry_path = UnicodeString {
        Length: (service.len() * 2) as u16,
        MaximumLength: (service.len() * 2) as u16,
        Buffer: service.as_ptr().cast_mut(),
    };
    let name: Vec<u16> = "\\FileSystem\\FlushGuard".encode_utf16().collect();
    let mut driver_object = Box::new(DriverObject {
        Type: 4,
        Size: std::mem::size_of::<DriverObject>() as i16,
        DeviceObject: null_mut(),
        Flags: 0,
        DriverStart: image.base as *mut c_void,
        DriverSize: image.size as u32,
        DriverSection: null_mut(),
        DriverExtension: null_mut(),
        DriverName: UnicodeString {
            Length: (name.len() * 2) as u16,
            MaximumLength: (name.len() * 2) as u16,
            Buffer: name.as_ptr().cast_mut(),
        },
        HardwareDatabase: null_mut(),
        FastIoDispatch: null_mut(),
        DriverInit: image.entry() as *mut c_void,
        DriverStartIo: null_mut(),
        DriverUnload: null_mut(),
        MajorFunction: [null_mut(); 28],
    });
    let Some(entry) = dispatch::code(image.entry(), "DriverEntry") else {
        return finish(driver, seen);
    };
    // SAFETY: the image's entry point (AddressOfEntryPoint = DriverEntry, checked by the
    // PE gate), a PDRIVER_INITIALIZE.
    let driver_entry = unsafe { std::mem::transmute::<usize, dispatch::DriverEntryFn>(entry) };
    driver.callbacks += 1;
    // SAFETY: the driver object and registry path are live harness allocations for the
    // call (the driver copies the path); PASSIVE_LEVEL.
    let status = unsafe { driver_entry(&mut *driver_object, &registry_path) };
    if status != 0 {
        violation(format!("DriverEntry returned {}", NtStatus(status)));
        return finish(driver, seen);
    }
    {
        let mut w = world();
        driver.filter = w.filter;
        if w.filter_state != FilterState::Filtering {
            let state = w.filter_state;
            w.violation(format!(
                "after DriverEntry the filter is {state:?}, not filtering"
            ));
        }
        if !w.server_port_created {
            w.violation("DriverEntry created no communication port");
        }
        if !w.security_descriptors.is_empty() {
            w.violation(
                "the port's security descriptor was not freed after FltCreateCommunicationPort",
            );
        }
        let majors: Vec<u8> = w.registration.operations.iter().map(|o| o.0).collect();
        for major in [0x00u8, 0x04, 0x09, 0x12] {
            if !majors.contains(&major) {
                w.violation(format!("IRP_MJ 0x{major:02X} not in the operation table"));
            }
        }
    }

    // Instances: the MUP volume attaches, a local NTFS volume does not.
    let (status, volume, instance) =
        call_instance_setup(&mut driver, FILE_DEVICE_NETWORK_FILE_SYSTEM, FLT_FSTYPE_MUP);
    if status != 0 {
        violation(format!(
            "InstanceSetup on the MUP volume returned {}",
            NtStatus(status)
        ));
    }
    world().instances.push((volume, instance));
    let (status, _, _) =
        call_instance_setup(&mut driver, FILE_DEVICE_DISK_FILE_SYSTEM, FLT_FSTYPE_NTFS);
    if status != STATUS_FLT_DO_NOT_ATTACH {
        violation(format!(
            "InstanceSetup on a local NTFS volume returned {} (expected STATUS_FLT_DO_NOT_ATTACH)",
            NtStatus(status)
        ));
    }

    // A file on \\srv\share over SMB: create, write, flush, cleanup, close.
    let file_name: Vec<u16> = "\\srv\\share\\data\\a.db".encode_utf16().collect();
    // SAFETY: FILE_OBJECT is plain data (integers and raw pointers); all-zero is a
    // valid value, completed below.
    let mut file_object: Box<FileObject> = Box::new(unsafe { std::mem::zeroed() });
    file_object.Type = 5;
    file_object.Size = std::mem::size_of::<FileObject>() as i16;
    file_object.Flags = if spec.asynchronous {
        0
    } else {
        FO_SYNCHRONOUS_IO
    };
    file_object.FileName = UnicodeString {
        Length: (file_name.len() * 2) as u16,
        MaximumLength: (file_name.len() * 2) as u16,
        Buffer: file_name.as_ptr().cast_mut(),
    };
    let fo: *mut FileObject = &mut *file_object;
    kernel::add_file(
        fo as usize,
        File {
            name: SHARE_FILE.to_string(),
            provider: Some(PROVIDER_SMB),
            opened: false,
        },
    );

    let mut create = Operation::new("create", 0x00, fo, driver.filter, volume, instance);
    create.iopb.Parameters.Create.Options = create_options(spec);
    run(&mut driver, &mut create, true, PASSIVE_LEVEL, |op| {
        // SAFETY: IRP_MJ_CREATE: `Create` is the active member (harness-written).
        let options = unsafe { op.iopb.Parameters.Create.Options };
        seen.create_write_through = options & FILE_WRITE_THROUGH != 0;
        op.data.IoStatus.Status = 0;
        op.data.IoStatus.Information = 2; // FILE_CREATED
        if let Some(f) = world().files.get_mut(&(fo as usize)) {
            f.opened = true;
        }
    });

    let mut write = Operation::new("write", 0x04, fo, driver.filter, volume, instance);
    write.iopb.Parameters.Write = write_parameters(WRITE_LENGTH);
    let (synchronous, post_irql) = if spec.asynchronous {
        (false, DISPATCH_LEVEL)
    } else {
        (true, PASSIVE_LEVEL)
    };
    run(&mut driver, &mut write, synchronous, post_irql, |op| {
        seen.write_through = op.iopb.OperationFlags & SL_WRITE_THROUGH != 0;
        op.data.IoStatus.Status = 0;
        op.data.IoStatus.Information = WRITE_LENGTH as usize;
    });

    let mut flush = Operation::new("flush", 0x09, fo, driver.filter, volume, instance);
    run(&mut driver, &mut flush, true, PASSIVE_LEVEL, |op| {
        seen.flush_minor = op.iopb.MinorFunction;
        op.data.IoStatus.Status = 0;
    });

    let mut cleanup = Operation::new("cleanup", 0x12, fo, driver.filter, volume, instance);
    run(&mut driver, &mut cleanup, true, PASSIVE_LEVEL, |op| {
        op.data.IoStatus.Status = 0
    });
    kernel::close_file_object(instance, fo as usize);

    // The port: connect, GetVersion, a truncated request, disconnect.
    port_round_trip(&mut driver);

    // FilterUnload.
    let unload = world().registration.unload;
    if let Some(address) = dispatch::code(unload, "FilterUnload") {
        // SAFETY: the registered PFLT_FILTER_UNLOAD_CALLBACK inside the image.
        let callback = unsafe { std::mem::transmute::<usize, dispatch::UnloadFn>(address) };
        dispatch::set_irql(PASSIVE_LEVEL);
        driver.callbacks += 1;
        // SAFETY: no arguments but the flags; PASSIVE_LEVEL; no callback is running.
        let status = unsafe { callback(0) };
        if status != 0 {
            violation(format!("FilterUnload returned {}", NtStatus(status)));
        }
    }
    {
        let mut w = world();
        let order = w.teardown.clone();
        if order != ["FltCloseCommunicationPort", "FltUnregisterFilter"] {
            w.violation(format!(
                "teardown order {order:?} (expected FltCloseCommunicationPort, then FltUnregisterFilter)"
            ));
        }
        for leak in w.leaks() {
            w.violation(format!("leak after unload: {leak}"));
        }
    }
    drop(driver_object);
    drop(file_object);
    finish(driver, seen)
}

fn port_round_trip(driver: &mut Driver) {
    let Some(port) = world().server_port else {
        violation("no server port to connect to");
        return;
    };
    let Some(connect) = dispatch::code(port.connect, "ConnectNotify") else {
        return;
    };
    let client = {
        let mut w = world();
        w.object()
    };
    let context = ConnectContext::current().encode();
    let mut cookie: *mut c_void = null_mut();
    // SAFETY: the PFLT_CONNECT_NOTIFY registered with FltCreateCommunicationPort.
    let connect = unsafe { std::mem::transmute::<usize, dispatch::ConnectFn>(connect) };
    world().client_ports.insert(client, 0);
    driver.callbacks += 1;
    // SAFETY: the context buffer and cookie slot are live locals for the call.
    let status = unsafe {
        connect(
            client,
            null_mut(),
            context.as_ptr().cast_mut().cast(),
            context.len() as u32,
            &mut cookie,
        )
    };
    if status != 0 {
        world().client_ports.remove(&client);
        violation(format!(
            "ConnectNotify with the current context returned {}",
            NtStatus(status)
        ));
        return;
    }
    world().client_ports.insert(client, cookie as usize);
    world().connections += 1;

    if let Some(message) = dispatch::code(port.message, "MessageNotify") {
        // SAFETY: the PFLT_MESSAGE_NOTIFY registered with FltCreateCommunicationPort.
        let message = unsafe { std::mem::transmute::<usize, dispatch::MessageFn>(message) };
        let request = flushguard_tests::port_request_get_version();
        let mut reply = vec![0u64; 64];
        let mut written = 0u32;
        driver.callbacks += 1;
        // SAFETY: request and reply are live buffers of the stated lengths, the reply
        // 8-byte aligned (REPLY_ALIGNMENT), below MmUserProbeAddress like user buffers.
        let status = unsafe {
            message(
                cookie,
                request.as_ptr().cast_mut().cast(),
                request.len() as u32,
                reply.as_mut_ptr().cast(),
                (reply.len() * 8) as u32,
                &mut written,
            )
        };
        let bytes: Vec<u8> = reply.iter().flat_map(|w| w.to_le_bytes()).collect();
        match bytes.get(..written as usize).map(ReplyHeader::decode) {
            Some(Ok((header, _))) if status == 0 && header.status.is_success() => {
                world().messages += 1;
            }
            other => violation(format!(
                "GetVersion: status {}, {written} bytes, decoded {other:?}",
                NtStatus(status)
            )),
        }
        // A truncated request: rejected with a status, nothing written.
        let mut written = 0u32;
        driver.callbacks += 1;
        // SAFETY: as above, with a 3-byte input.
        let status = unsafe {
            message(
                cookie,
                request.as_ptr().cast_mut().cast(),
                3,
                reply.as_mut_ptr().cast(),
                (reply.len() * 8) as u32,
                &mut written,
            )
        };
        if status >= 0 || written != 0 {
            violation(format!(
                "a 3-byte request returned {} with {written} bytes",
                NtStatus(status)
            ));
        } else {
            world().messages += 1;
        }
    }

    if let Some(disconnect) = dispatch::code(port.disconnect, "DisconnectNotify") {
        // SAFETY: the PFLT_DISCONNECT_NOTIFY registered with FltCreateCommunicationPort.
        let disconnect =
            unsafe { std::mem::transmute::<usize, dispatch::DisconnectFn>(disconnect) };
        driver.callbacks += 1;
        // SAFETY: the cookie the driver returned from connect.
        unsafe { disconnect(cookie) };
        if world().client_ports.contains_key(&client) {
            violation("DisconnectNotify did not close the client port (FltCloseClientPort)");
            world().client_ports.remove(&client);
        }
    }
}

fn finish(driver: Driver, seen: Seen) -> Outcome {
    let w = world();
    let mut counts = std::collections::BTreeMap::new();
    for call in &w.calls {
        *counts.entry(*call).or_insert(0u64) += 1;
    }
    let distinct_calls = counts.len();
    counts.insert("ZwClose(file handle)", w.file_handle_closes);
    Outcome {
        violations: w.violations.clone(),
        calls: w.calls.len(),
        distinct_calls,
        callbacks: driver.callbacks,
        allocations: w.pool_by_tag.values().map(|v| v.0).sum(),
        debug_output: w.debug_output.clone(),
        counts,
        flushes: w.flushes.iter().map(|f| (f.routine, f.flags)).collect(),
        seen,
    }
}
