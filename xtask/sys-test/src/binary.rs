//! Runs a [`Spec`] against the loaded flushguard.sys: the I/O manager's and Filter
//! Manager's side of DriverEntry, instance setup, every [`Step`], FilterUnload, and
//! the checks after unload (teardown order, leaks).

use std::ffi::c_void;
use std::ptr::null_mut;

use flushguard_protocol::message::ReplyHeader;
use flushguard_protocol::NtStatus;

use crate::dispatch::{self, Operation};
use crate::kernel::{self, FILE_DEVICE_NETWORK_FILE_SYSTEM};
use crate::layout::{DriverObject, FileObject, FltRelatedObjects, UnicodeString};
use crate::loader::LoadedImage;
use crate::scenario::{
    bad_requests, create_options, group_options, policy_blob, policy_of, Outcome, Seen, Spec, Step,
    WriteKind, PROVIDER_SMB, SERVICE_KEY, SHARE_FILE, WRITE_LENGTH,
};
use crate::world::{
    world, File, FilterState, World, APC_LEVEL, COORDINATOR_BLOCK_SITE, COORDINATOR_BLOCK_SIZE,
    DISPATCH_LEVEL, PASSIVE_LEVEL,
};

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
/// `FILE_WRITE_THROUGH`.
const FILE_WRITE_THROUGH: u32 = 0x2;
/// `SL_WRITE_THROUGH`.
const SL_WRITE_THROUGH: u8 = 0x4;
/// `FLTFL_CALLBACK_DATA_IRP_OPERATION`.
const FLTFL_CALLBACK_DATA_IRP_OPERATION: u32 = 0x1;
/// `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`.
const FLTFL_CALLBACK_DATA_FAST_IO_OPERATION: u32 = 0x2;
/// `IRP_PAGING_IO | IRP_NOCACHE`.
const IRP_PAGING_NOCACHE: u32 = 0x2 | 0x1;
/// `FSRTL_MOD_WRITE_TOP_LEVEL_IRP`.
const FSRTL_MOD_WRITE_TOP_LEVEL_IRP: usize = 3;

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
pub fn write_parameters(length: u32) -> crate::layout::FltWriteParameters {
    crate::layout::FltWriteParameters {
        Length: length,
        _align1: 0,
        Key: 0,
        _align2: 0,
        ByteOffset: 0,
        WriteBuffer: null_mut(),
        MdlAddress: null_mut(),
    }
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

/// The harness's side of one scenario run.
struct Runner<'a> {
    spec: &'a Spec,
    filter: usize,
    volume: usize,
    instance: usize,
    callbacks: usize,
    seen: Seen,
    file_object: Box<FileObject>,
    _file_name: Vec<u16>,
    /// The connected client port and its connection cookie.
    client: Option<(usize, usize)>,
    /// Port messages `(what, status, reply)`.
    messages: Vec<(String, i32, Vec<u8>)>,
    /// Operations left pended ([`Step::WriteLeftPended`]): their callback data lives
    /// until FilterUnload, where the system threads complete them.
    left_pended: Vec<Operation>,
}

impl Runner<'_> {
    fn file(&mut self) -> *mut FileObject {
        &mut *self.file_object
    }

    /// One pre/post pair the way Filter Manager runs an operation: the pre-operation
    /// at `pre_irql`; the post-operation for SUCCESS_WITH_CALLBACK (at `post_irql`) or
    /// SYNCHRONIZE (at PASSIVE_LEVEL, in the issuing thread); then any deferred safe
    /// post-operation work (a worker at PASSIVE_LEVEL) and the driver's system threads
    /// until they are idle (scheduling point 1 of kernel/thread.rs), which must have
    /// completed a post-operation it pended. `complete` plays the file system between
    /// the two. Returns the pre-operation status.
    fn run(
        &mut self,
        op: &mut Operation,
        synchronous: bool,
        irql: (u8, u8),
        complete: impl FnOnce(&mut Operation),
    ) -> i32 {
        self.run_op(op, synchronous, irql, complete, true)
    }

    /// [`Runner::run`]; with `serve` false the system threads get no turn after the
    /// post-operation: a post-operation it pended stays pended (until FilterUnload:
    /// `FltUnregisterFilter` waits for it).
    fn run_op(
        &mut self,
        op: &mut Operation,
        synchronous: bool,
        (pre_irql, post_irql): (u8, u8),
        complete: impl FnOnce(&mut Operation),
        serve: bool,
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
        dispatch::set_irql(pre_irql);
        self.callbacks += 1;
        let Some((status, context)) = dispatch::pre(pre, op) else {
            dispatch::set_irql(PASSIVE_LEVEL);
            return dispatch::FLT_PREOP_SUCCESS_NO_CALLBACK;
        };
        dispatch::set_irql(PASSIVE_LEVEL);
        let wants_post = status == dispatch::FLT_PREOP_SUCCESS_WITH_CALLBACK
            || status == dispatch::FLT_PREOP_SYNCHRONIZE;
        if status != dispatch::FLT_PREOP_DISALLOW_FASTIO && status != dispatch::FLT_PREOP_COMPLETE {
            complete(op);
        }
        if wants_post && post != 0 {
            self.callbacks += 1;
            let irql = if status == dispatch::FLT_PREOP_SYNCHRONIZE {
                PASSIVE_LEVEL
            } else {
                post_irql
            };
            let post_status = dispatch::post(post, op, context, 0, irql);
            dispatch::run_deferred(op);
            if serve {
                kernel::run_until_idle();
                let id = op.id();
                let mut w = world();
                if post_status == Some(dispatch::FLT_POSTOP_MORE_PROCESSING_REQUIRED)
                    && w.pended.contains(&id)
                {
                    w.violation(format!(
                        "post-{} returned FLT_POSTOP_MORE_PROCESSING_REQUIRED and the \
                         operation was never completed (FltCompletePendedPostOperation): the \
                         system threads went idle without it",
                        op.what
                    ));
                    // No thread may touch the operation after this step drops it.
                    w.pended.retain(|&d| d != id);
                }
                w.completed_pended.retain(|&d| d != id);
            }
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

    fn new_op(&mut self, what: &'static str, major: u8) -> Operation {
        let file = self.file();
        Operation::new(what, major, file, self.filter, self.volume, self.instance)
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Open => self.open(),
            Step::Write(kind) => self.write(kind),
            Step::WriteLeftPended => {
                let mut op = self.new_op("write (left pended)", 0x04);
                op.iopb.Parameters.Write = write_parameters(WRITE_LENGTH);
                let mut seen = false;
                let complete = |op: &mut Operation| {
                    seen = op.iopb.OperationFlags & SL_WRITE_THROUGH != 0;
                    op.data.IoStatus.Status = 0;
                    op.data.IoStatus.Information = WRITE_LENGTH as usize;
                };
                let sync_fo = !self.spec.asynchronous;
                let irql = if sync_fo {
                    (PASSIVE_LEVEL, PASSIVE_LEVEL)
                } else {
                    (PASSIVE_LEVEL, DISPATCH_LEVEL)
                };
                self.run_op(&mut op, sync_fo, irql, complete, false);
                self.seen.write_through = seen;
                if world().pended.contains(&op.id()) {
                    self.left_pended.push(op);
                }
            }
            Step::Flush(minor) => {
                let mut op = self.new_op("flush", 0x09);
                op.iopb.MinorFunction = minor;
                let mut seen = 0;
                self.run(&mut op, true, (PASSIVE_LEVEL, PASSIVE_LEVEL), |op| {
                    seen = op.iopb.MinorFunction;
                    op.data.IoStatus.Status = 0;
                });
                self.seen.flush_minor = seen;
            }
            Step::Cleanup => {
                let mut op = self.new_op("cleanup", 0x12);
                self.run(&mut op, true, (PASSIVE_LEVEL, PASSIVE_LEVEL), |op| {
                    op.data.IoStatus.Status = 0
                });
                let file = self.file() as usize;
                if let Some(f) = world().files.get_mut(&file) {
                    f.user_handle_open = false;
                }
            }
            Step::Close => {
                let file = self.file() as usize;
                kernel::close_file_object(self.instance, file);
            }
            Step::Connect => self.connect(),
            Step::GetVersion => {
                let request = flushguard_tests::port_request_get_version();
                if let Some((status, reply)) = self.message("GetVersion", &request) {
                    match ReplyHeader::decode(&reply) {
                        Ok((header, _)) if status == 0 && header.status.is_success() => {}
                        other => violation(format!(
                            "GetVersion: status {}, {} bytes, decoded {other:?}",
                            NtStatus(status),
                            reply.len()
                        )),
                    }
                }
            }
            Step::BadRequests => {
                for (what, request) in bad_requests() {
                    if let Some((status, reply)) = self.message(what, &request) {
                        if status >= 0 || !reply.is_empty() {
                            violation(format!(
                                "request \"{what}\" returned {} with {} bytes",
                                NtStatus(status),
                                reply.len()
                            ));
                        }
                    }
                }
            }
            Step::PortAbuse => match self.client {
                Some((_, cookie)) => {
                    self.callbacks += crate::port::abuse(cookie);
                }
                None => violation("port abuse without a connection"),
            },
            Step::SetPolicy(mode) => {
                let blob = policy_blob(self.spec, mode);
                let request = flushguard_tests::port_request_set_policy(&blob, true);
                if let Some((status, reply)) = self.message("SetPolicy", &request) {
                    match ReplyHeader::decode(&reply) {
                        Ok((header, _)) if status == 0 && header.status.is_success() => {}
                        other => violation(format!(
                            "SetPolicy: status {}, decoded {other:?}",
                            NtStatus(status)
                        )),
                    }
                    if world().policy_value.as_deref() != Some(&blob[..]) {
                        violation("SetPolicy (persist) did not write Parameters\\Policy");
                    }
                }
            }
            Step::Disconnect => self.disconnect(),
        }
    }

    fn open(&mut self) {
        let mut op = self.new_op("create", 0x00);
        op.iopb.Parameters.Create.Options = create_options(self.spec);
        let file = self.file() as usize;
        let mut write_through = false;
        self.run(&mut op, true, (PASSIVE_LEVEL, PASSIVE_LEVEL), |op| {
            // SAFETY: IRP_MJ_CREATE: `Create` is the active member (harness-written).
            let options = unsafe { op.iopb.Parameters.Create.Options };
            write_through = options & FILE_WRITE_THROUGH != 0;
            op.data.IoStatus.Status = 0;
            op.data.IoStatus.Information = 2; // FILE_CREATED
            if let Some(f) = world().files.get_mut(&file) {
                f.opened = true;
                f.user_handle_open = true;
            }
        });
        self.seen.create_write_through = write_through;
    }

    fn write(&mut self, kind: WriteKind) {
        let mut op = self.new_op("write", 0x04);
        op.iopb.Parameters.Write = write_parameters(WRITE_LENGTH);
        let sync_fo = !self.spec.asynchronous;
        let mut seen = false;
        let mut complete = |op: &mut Operation| {
            seen = op.iopb.OperationFlags & SL_WRITE_THROUGH != 0;
            op.data.IoStatus.Status = 0;
            op.data.IoStatus.Information = WRITE_LENGTH as usize;
        };
        match kind {
            WriteKind::Cached => {
                let irql = if sync_fo {
                    (PASSIVE_LEVEL, PASSIVE_LEVEL)
                } else {
                    (PASSIVE_LEVEL, DISPATCH_LEVEL)
                };
                self.run(&mut op, sync_fo, irql, complete);
            }
            WriteKind::Synchronous => {
                self.run(&mut op, true, (PASSIVE_LEVEL, PASSIVE_LEVEL), complete);
            }
            WriteKind::FastIo => {
                op.data.Flags = FLTFL_CALLBACK_DATA_FAST_IO_OPERATION;
                let status = self.run(
                    &mut op,
                    false,
                    (PASSIVE_LEVEL, PASSIVE_LEVEL),
                    &mut complete,
                );
                if status == dispatch::FLT_PREOP_DISALLOW_FASTIO {
                    // The I/O manager reissues the write as an IRP.
                    let mut op = self.new_op("write (reissued IRP)", 0x04);
                    op.iopb.Parameters.Write = write_parameters(WRITE_LENGTH);
                    op.data.Flags = FLTFL_CALLBACK_DATA_IRP_OPERATION;
                    self.run(&mut op, sync_fo, (PASSIVE_LEVEL, PASSIVE_LEVEL), complete);
                }
            }
            WriteKind::Paging => {
                op.iopb.IrpFlags = IRP_PAGING_NOCACHE;
                op.data.RequestorMode = 0;
                world().top_level_irp = FSRTL_MOD_WRITE_TOP_LEVEL_IRP;
                self.run(&mut op, false, (APC_LEVEL, PASSIVE_LEVEL), complete);
                world().top_level_irp = 0;
            }
        }
        self.seen.write_through = seen;
    }

    fn connect(&mut self) {
        self.callbacks += 1;
        let (status, connection) = crate::port::connect();
        match connection {
            Some(c) => self.client = Some(c),
            None => violation(format!(
                "ConnectNotify with the current context returned {}",
                NtStatus(status)
            )),
        }
    }

    /// Sends `request` on the connection; records `(what, status, reply)`.
    fn message(&mut self, what: &str, request: &[u8]) -> Option<(i32, Vec<u8>)> {
        let Some((_, cookie)) = self.client else {
            violation("a port message without a connection");
            return None;
        };
        self.callbacks += 1;
        let (status, reply) = crate::port::message(cookie, request);
        self.messages
            .push((what.to_string(), status, reply.clone()));
        Some((status, reply))
    }

    fn disconnect(&mut self) {
        let Some((client, cookie)) = self.client.take() else {
            violation("disconnect without a connection");
            return;
        };
        self.callbacks += 1;
        crate::port::disconnect(client, cookie);
    }

    fn instance_setup(&mut self, device_type: u32, fs_type: u32) -> (i32, usize, usize) {
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
            Filter: self.filter as *mut c_void,
            Volume: volume as *mut c_void,
            Instance: instance as *mut c_void,
            FileObject: null_mut(),
            Transaction: null_mut(),
        };
        // SAFETY: a PFLT_INSTANCE_SETUP_CALLBACK inside the image (captured registration).
        let callback = unsafe { std::mem::transmute::<usize, dispatch::InstanceSetupFn>(address) };
        self.callbacks += 1;
        // SAFETY: `objects` is a live local for the call; PASSIVE_LEVEL.
        let status =
            dispatch::into_driver(|| unsafe { callback(&objects, 0x1, device_type, fs_type) });
        (status, volume, instance)
    }
}

fn driver_entry(image: &LoadedImage, runner: &mut Runner<'_>) -> bool {
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
        return false;
    };
    // SAFETY: the image's entry point (AddressOfEntryPoint = DriverEntry, checked by the
    // PE gate), a PDRIVER_INITIALIZE.
    let entry = unsafe { std::mem::transmute::<usize, dispatch::DriverEntryFn>(entry) };
    runner.callbacks += 1;
    dispatch::set_irql(PASSIVE_LEVEL);
    world().in_driver_entry = true;
    // SAFETY: the driver object and registry path are live harness allocations for the
    // call (the driver copies the path); PASSIVE_LEVEL.
    let status = dispatch::into_driver(|| unsafe { entry(&mut *driver_object, &registry_path) });
    check_coordinator_blocks();
    let binary_only = world().binary_only_injection;
    if binary_only && world().injected {
        // A failure only the binary's DriverEntry sees (compare::BINARY_ONLY_SITES): it
        // must fail, having undone everything (checked by `failed_driver_entry`).
        if status >= 0 {
            violation(format!(
                "DriverEntry returned {} although a call it needs failed (the injected \
                 failure): it must fail and undo what it did",
                NtStatus(status)
            ));
        } else {
            return false;
        }
    } else if status != 0 {
        violation(format!("DriverEntry returned {}", NtStatus(status)));
        return false;
    }
    let mut w = world();
    runner.filter = w.filter;
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
    true
}

/// After DriverEntry: every group-commit coordinator block (identified by its size,
/// [`COORDINATOR_BLOCK_SIZE`]) got exactly its two `KeInitializeEvent`s, so the count
/// compared with the host fake's `AllocateCommitSync` counts those blocks and nothing
/// else (a KEVENT initialised elsewhere in DriverEntry is reported by
/// `KeInitializeEvent` itself).
fn check_coordinator_blocks() {
    let mut w = world();
    w.in_driver_entry = false;
    let wrong: Vec<String> = w
        .coordinator_blocks
        .iter()
        .filter(|(_, events)| *events != 2)
        .map(|(block, events)| format!("0x{block:X} ({events} event(s))"))
        .collect();
    if !wrong.is_empty() {
        w.violation(format!(
            "DriverEntry allocated {COORDINATOR_BLOCK_SIZE}-byte pool blocks that are not \
             group-commit coordinator blocks with two KEVENTs: {} (the harness identifies \
             those blocks by size: driver/src/group.rs Block, COORDINATOR_BLOCK_SIZE in \
             world.rs)",
            wrong.join(", ")
        ));
    }
}

/// The group-commit leader's delays (`KeDelayExecutionThread`) must be the rule's
/// `max-batch-wait-us`, relative, in 100 ns units.
fn check_delays(spec: &Spec) {
    let mut w = world();
    let us = group_options(spec).max_batch_wait_us;
    let expected = -(i64::from(us) * 10);
    let wrong: Vec<i64> = w
        .delays
        .iter()
        .copied()
        .filter(|&d| d != expected)
        .collect();
    if !wrong.is_empty() {
        w.violation(format!(
            "KeDelayExecutionThread intervals {wrong:?}, expected {expected} (the rule's \
             max-batch-wait-us {us} as a negative, relative interval in 100 ns units)"
        ));
    }
}

fn unload(runner: &mut Runner<'_>) {
    let unload = world().registration.unload;
    if let Some(address) = dispatch::code(unload, "FilterUnload") {
        // SAFETY: the registered PFLT_FILTER_UNLOAD_CALLBACK inside the image.
        let callback = unsafe { std::mem::transmute::<usize, dispatch::UnloadFn>(address) };
        dispatch::set_irql(PASSIVE_LEVEL);
        runner.callbacks += 1;
        // SAFETY: no arguments but the flags; PASSIVE_LEVEL; no callback is running.
        let status = dispatch::into_driver(|| unsafe { callback(0) });
        if status != 0 {
            violation(format!("FilterUnload returned {}", NtStatus(status)));
        }
    }
    // Filter Manager frees what it still holds for the file after the unload.
    let file = runner.file() as usize;
    kernel::close_file_object(runner.instance, file);
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

/// Runs `spec` against the loaded image.
pub fn run_scenario(image: &LoadedImage, spec: &Spec) -> Outcome {
    {
        let mut w = world();
        w.irql = PASSIVE_LEVEL;
        w.image = (image.base, image.base + image.size);
        w.service_key = SERVICE_KEY.to_string();
        w.policy_value = policy_of(spec);
        w.parameters_key = w.policy_value.is_some();
        w.has_flush2 = spec.has_flush2;
        w.has_pool2 = spec.has_pool2;
    }
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
    let mut runner = Runner {
        spec,
        filter: 0,
        volume: 0,
        instance: 0,
        callbacks: 0,
        seen: Seen::default(),
        file_object,
        _file_name: file_name,
        client: None,
        messages: Vec::new(),
        left_pended: Vec::new(),
    };
    // The file system's stream control block: every file object of the stream shares it
    // (the group-commit stream key).
    runner.file_object.FsContext = world().object() as *mut c_void;
    let file = runner.file() as usize;
    kernel::add_file(
        file,
        File {
            name: SHARE_FILE.to_string(),
            provider: Some(PROVIDER_SMB),
            opened: false,
            user_handle_open: false,
            kernel_handles: 0,
        },
    );

    if driver_entry(image, &mut runner) {
        let (status, volume, instance) =
            runner.instance_setup(FILE_DEVICE_NETWORK_FILE_SYSTEM, FLT_FSTYPE_MUP);
        if status != 0 {
            violation(format!(
                "InstanceSetup on the MUP volume returned {}",
                NtStatus(status)
            ));
        }
        runner.volume = volume;
        runner.instance = instance;
        world().instances.push((volume, instance));
        let (status, _, _) = runner.instance_setup(FILE_DEVICE_DISK_FILE_SYSTEM, FLT_FSTYPE_NTFS);
        if status != STATUS_FLT_DO_NOT_ATTACH {
            violation(format!(
                "InstanceSetup on a local NTFS volume returned {} (expected \
                 STATUS_FLT_DO_NOT_ATTACH)",
                NtStatus(status)
            ));
        }
        for &step in spec.steps {
            runner.step(step);
        }
        unload(&mut runner);
        check_delays(spec);
    } else if world().binary_only_injection && world().injected {
        failed_driver_entry();
    }
    finish(&runner)
}

/// After a DriverEntry that failed as it must (a binary-only injected failure): the I/O
/// manager unloads the image without FilterUnload, so nothing may be left: no thread
/// still running, no handle, no pool block, no registration.
fn failed_driver_entry() {
    let mut w = world();
    for leak in w.leaks() {
        w.violation(format!("leak after the failed DriverEntry: {leak}"));
    }
}

fn finish(runner: &Runner<'_>) -> Outcome {
    let w = world();
    let mut counts = std::collections::BTreeMap::new();
    for call in &w.calls {
        *counts.entry(*call).or_insert(0u64) += 1;
    }
    let distinct_calls = counts.len();
    counts.insert("ZwClose(file handle)", w.file_handle_closes);
    // The pending of a write (a release inside a post-operation), as the host fake
    // counts CallSite::QueueDeferredIoWorkItem; the wake-ups that stop the threads are
    // not among them.
    counts.insert("KeReleaseSemaphore", w.pend_releases);
    counts.insert(
        COORDINATOR_BLOCK_SITE,
        w.site_counts
            .get(COORDINATOR_BLOCK_SITE)
            .copied()
            .unwrap_or(0),
    );
    Outcome {
        violations: w.violations.clone(),
        calls: w.calls.len(),
        distinct_calls,
        callbacks: runner.callbacks,
        allocations: w.pool_by_tag.values().map(|v| v.0).sum(),
        debug_output: w.debug_output.clone(),
        counts,
        flushes: w.flushes.iter().map(|f| (f.routine, f.flags)).collect(),
        seen: runner.seen,
        messages: runner.messages.clone(),
        sequence: w.sequence.clone(),
    }
}
