//! fltmgr.sys: registration, contexts, names, volumes, the communication port and the
//! callback-data services, each with Filter Verifier's checks.

use super::*;

pub(super) fn check_filter(w: &mut crate::world::World, routine: &str, filter: usize) -> bool {
    if filter == 0 || filter != w.filter {
        w.violation(format!("{routine} with an unknown filter 0x{filter:X}"));
        return false;
    }
    if w.filter_state == FilterState::Unregistered {
        w.violation(format!("{routine} after FltUnregisterFilter"));
        return false;
    }
    true
}

pub(super) extern "win64" fn flt_register_filter(
    driver: *mut c_void,
    registration: *const FltRegistration,
    filter: *mut usize,
) -> i32 {
    guarded("FltRegisterFilter", STATUS_INVALID_PARAMETER, || {
        world().call("FltRegisterFilter", PASSIVE_LEVEL);
        if driver.is_null() {
            world().violation("FltRegisterFilter with a NULL DriverObject");
        }
        // SAFETY: the driver passes its static FLT_REGISTRATION.
        let Some(r) = (unsafe { registration.as_ref() }) else {
            world().violation("FltRegisterFilter with a NULL registration");
            return STATUS_INVALID_PARAMETER;
        };
        let mut captured = Registration {
            unload: r.FilterUnloadCallback,
            instance_setup: r.InstanceSetupCallback,
            query_teardown: r.InstanceQueryTeardownCallback,
            teardown_start: r.InstanceTeardownStartCallback,
            teardown_complete: r.InstanceTeardownCompleteCallback,
            ..Registration::default()
        };
        let mut problems = Vec::new();
        if usize::from(r.Size) != std::mem::size_of::<FltRegistration>() {
            problems.push(format!("FLT_REGISTRATION.Size {} (expected 112)", r.Size));
        }
        if r.Version != FLT_REGISTRATION_VERSION {
            problems.push(format!("FLT_REGISTRATION.Version 0x{:04X}", r.Version));
        }
        let mut op = r.OperationRegistration;
        for _ in 0..64 {
            if op.is_null() {
                break;
            }
            // SAFETY: the operation table is a static array in the image terminated
            // by IRP_MJ_OPERATION_END; `op` walks it one entry at a time.
            let entry = unsafe { op.read() };
            if entry.MajorFunction == IRP_MJ_OPERATION_END {
                break;
            }
            captured.operations.push((
                entry.MajorFunction,
                entry.Flags,
                entry.PreOperation,
                entry.PostOperation,
            ));
            op = op.wrapping_add(1);
        }
        let mut ctx = r.ContextRegistration;
        for _ in 0..16 {
            if ctx.is_null() {
                break;
            }
            // SAFETY: the context table is a static array in the image terminated by
            // FLT_CONTEXT_END; `ctx` walks it one entry at a time.
            let entry = unsafe { ctx.read() };
            if entry.ContextType == FLT_CONTEXT_END {
                break;
            }
            captured
                .contexts
                .push((entry.ContextType, entry.Size, entry.PoolTag));
            ctx = ctx.wrapping_add(1);
        }
        let mut w = world();
        if w.filter_state != FilterState::None {
            problems.push("FltRegisterFilter called twice".to_string());
        }
        let (start, end) = w.image;
        let mut routines: Vec<usize> = captured
            .operations
            .iter()
            .flat_map(|&(_, _, pre, post)| [pre, post])
            .collect();
        routines.extend([
            captured.unload,
            captured.instance_setup,
            captured.query_teardown,
            captured.teardown_start,
            captured.teardown_complete,
        ]);
        for routine in routines.into_iter().filter(|&a| a != 0) {
            if routine < start || routine >= end {
                problems.push(format!(
                    "registered callback 0x{routine:X} outside the image"
                ));
            }
        }
        for p in problems {
            w.violation(p);
        }
        let handle = w.object();
        w.filter = handle;
        w.filter_state = FilterState::Registered;
        w.registration = captured;
        drop(w);
        // SAFETY: the driver passes a pointer to its local PFLT_FILTER.
        unsafe { put(filter, handle) };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_start_filtering(filter: usize) -> i32 {
    guarded("FltStartFiltering", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("FltStartFiltering", PASSIVE_LEVEL);
        if !check_filter(&mut w, "FltStartFiltering", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        if w.filter_state != FilterState::Registered {
            w.violation("FltStartFiltering twice");
        }
        w.filter_state = FilterState::Filtering;
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_unregister_filter(filter: usize) {
    guarded("FltUnregisterFilter", (), || {
        let (clients, instances, disconnect, teardown) = {
            let mut w = world();
            w.call("FltUnregisterFilter", PASSIVE_LEVEL);
            w.teardown.push("FltUnregisterFilter");
            if !check_filter(&mut w, "FltUnregisterFilter", filter) {
                return;
            }
            if w.server_port.is_some() {
                w.violation(
                    "FltUnregisterFilter while the server port is open \
                     (close it first: DESIGN section 1, Unload)",
                );
            }
            let clients: Vec<(usize, usize)> =
                w.client_ports.iter().map(|(&p, &c)| (p, c)).collect();
            let instances: Vec<(usize, usize)> = crate::binary::instances(&w);
            let disconnect = w.server_port_disconnect;
            (
                clients,
                instances,
                disconnect,
                w.registration.teardown_complete,
            )
        };
        // Filter Manager closes the remaining client ports (disconnect notify)...
        for (_, cookie) in clients {
            if let Some(address) = dispatch::code(disconnect, "DisconnectNotify") {
                // SAFETY: a PFLT_DISCONNECT_NOTIFY inside the image, registered with
                // FltCreateCommunicationPort.
                let callback =
                    unsafe { std::mem::transmute::<usize, dispatch::DisconnectFn>(address) };
                // SAFETY: the connection cookie the driver returned from connect.
                unsafe { callback(cookie as *mut c_void) };
            }
        }
        // ... waits until every pended post-operation was completed (the driver's system
        // threads run meanwhile: scheduling point 2 of thread.rs) ...
        drain_pended();
        // ... and tears down every instance.
        for (volume, instance) in instances {
            if teardown == 0 {
                break;
            }
            let Some(address) = dispatch::code(teardown, "InstanceTeardownComplete") else {
                break;
            };
            let objects = FltRelatedObjects {
                Size: std::mem::size_of::<FltRelatedObjects>() as u16,
                TransactionContext: 0,
                Filter: filter as *mut c_void,
                Volume: volume as *mut c_void,
                Instance: instance as *mut c_void,
                FileObject: std::ptr::null_mut(),
                Transaction: std::ptr::null_mut(),
            };
            // SAFETY: a PFLT_INSTANCE_TEARDOWN_CALLBACK inside the image (registration).
            let callback = unsafe { std::mem::transmute::<usize, dispatch::TeardownFn>(address) };
            // SAFETY: `objects` is a live local for the call.
            unsafe { callback(&objects, FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD) };
        }
        let mut w = world();
        // Filter Manager's own context references go with the instances.
        let fm: Vec<usize> = w.stream_handle_contexts.drain().map(|(_, c)| c).collect();
        for context in fm {
            release_context_ref(&mut w, context, true);
        }
        if !w.client_ports.is_empty() {
            w.violation("client ports still open after the disconnect notifications");
        }
        w.filter_state = FilterState::Unregistered;
    })
}

pub(super) fn release_context_ref(w: &mut crate::world::World, context: usize, fm: bool) {
    let Some(c) = w.contexts.get_mut(&context) else {
        w.violation(format!(
            "FltReleaseContext(0x{context:X}): not a live context"
        ));
        return;
    };
    c.refs -= 1;
    if fm {
        c.fm_refs -= 1;
    }
    if c.refs == 0 {
        w.contexts.remove(&context);
    } else if c.refs < 0 {
        w.violation(format!(
            "context 0x{context:X} released more often than referenced"
        ));
    }
}

pub(super) extern "win64" fn flt_allocate_context(
    filter: usize,
    context_type: u16,
    size: usize,
    pool_type: i32,
    context: *mut *mut c_void,
) -> i32 {
    guarded("FltAllocateContext", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("FltAllocateContext", APC_LEVEL);
        if let Some(status) = w.fail_now("FltAllocateContext") {
            return status;
        }
        if !check_filter(&mut w, "FltAllocateContext", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        let registered = w
            .registration
            .contexts
            .iter()
            .any(|&(t, s, _)| t == context_type && s == size);
        if !registered {
            w.violation(format!(
                "FltAllocateContext(type 0x{context_type:X}, {size} bytes) not in the \
                 registered context table"
            ));
            return STATUS_FLT_CONTEXT_ALREADY_DEFINED;
        }
        if pool_type != 512 && pool_type != 0 {
            w.violation(format!("FltAllocateContext pool type {pool_type}"));
        }
        let memory = vec![0u128; size.div_ceil(16).max(1)].into_boxed_slice();
        let address = memory.as_ptr() as usize;
        w.contexts.insert(
            address,
            Context {
                memory,
                refs: 1,
                fm_refs: 0,
            },
        );
        drop(w);
        // SAFETY: the driver passes a pointer to its local PFLT_CONTEXT.
        unsafe { put(context, address as *mut c_void) };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_release_context(context: *mut c_void) {
    guarded("FltReleaseContext", (), || {
        let mut w = world();
        w.call("FltReleaseContext", DISPATCH_LEVEL);
        release_context_ref(&mut w, context as usize, false);
    })
}

pub(super) extern "win64" fn flt_set_stream_handle_context(
    instance: usize,
    file_object: *mut FileObject,
    operation: u32,
    new: *mut c_void,
    old: *mut *mut c_void,
) -> i32 {
    guarded(
        "FltSetStreamHandleContext",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltSetStreamHandleContext", APC_LEVEL);
            w.call_arguments(None, file_object as usize);
            if let Some(status) = w.fail_now("FltSetStreamHandleContext") {
                return status;
            }
            if operation != 0 && operation != 1 {
                w.violation(format!("FltSetStreamHandleContext operation {operation}"));
            }
            let key = (instance, file_object as usize);
            if let Some(&existing) = w.stream_handle_contexts.get(&key) {
                if operation == 0 {
                    // FLT_SET_CONTEXT_KEEP_IF_EXISTS
                    if !old.is_null() {
                        if let Some(c) = w.contexts.get_mut(&existing) {
                            c.refs += 1;
                        }
                        drop(w);
                        // SAFETY: the driver's out pointer for the old context.
                        unsafe { put(old, existing as *mut c_void) };
                    }
                    return STATUS_FLT_CONTEXT_ALREADY_DEFINED;
                }
            }
            let Some(c) = w.contexts.get_mut(&(new as usize)) else {
                w.violation("FltSetStreamHandleContext with an unknown context");
                return STATUS_INVALID_PARAMETER;
            };
            c.refs += 1;
            c.fm_refs += 1;
            if let Some(previous) = w.stream_handle_contexts.insert(key, new as usize) {
                release_context_ref(&mut w, previous, true);
            }
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn flt_get_stream_handle_context(
    instance: usize,
    file_object: *mut FileObject,
    context: *mut *mut c_void,
) -> i32 {
    guarded(
        "FltGetStreamHandleContext",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltGetStreamHandleContext", DISPATCH_LEVEL);
            w.call_arguments(None, file_object as usize);
            if let Some(status) = w.fail_now("FltGetStreamHandleContext") {
                return status;
            }
            let Some(&found) = w
                .stream_handle_contexts
                .get(&(instance, file_object as usize))
            else {
                return STATUS_NOT_FOUND;
            };
            if let Some(c) = w.contexts.get_mut(&found) {
                c.refs += 1;
            }
            drop(w);
            // SAFETY: the driver passes a pointer to its local PFLT_CONTEXT.
            unsafe { put(context, found as *mut c_void) };
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn flt_build_default_security_descriptor(
    descriptor: *mut *mut c_void,
    access: u32,
) -> i32 {
    guarded(
        "FltBuildDefaultSecurityDescriptor",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltBuildDefaultSecurityDescriptor", PASSIVE_LEVEL);
            if access != 0x001F_0001 {
                w.violation(format!(
                    "FltBuildDefaultSecurityDescriptor access 0x{access:X} (FLT_PORT_ALL_ACCESS \
                 is 0x1F0001)"
                ));
            }
            let sd = Box::new([0u128; 4]);
            let address = sd.as_ptr() as usize;
            w.security_descriptors.insert(address, sd);
            drop(w);
            // SAFETY: the driver passes a pointer to its local PSECURITY_DESCRIPTOR.
            unsafe { put(descriptor, address as *mut c_void) };
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn flt_free_security_descriptor(descriptor: *mut c_void) {
    guarded("FltFreeSecurityDescriptor", (), || {
        let mut w = world();
        w.call("FltFreeSecurityDescriptor", PASSIVE_LEVEL);
        if w.security_descriptors
            .remove(&(descriptor as usize))
            .is_none()
        {
            w.violation("FltFreeSecurityDescriptor of an unknown descriptor");
        }
    })
}

#[allow(clippy::too_many_arguments)] // the DDI's signature
pub(super) extern "win64" fn flt_create_communication_port(
    filter: usize,
    port: *mut usize,
    attributes: *const ObjectAttributes,
    _cookie: *mut c_void,
    connect: usize,
    disconnect: usize,
    message: usize,
    max_connections: i32,
) -> i32 {
    guarded(
        "FltCreateCommunicationPort",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltCreateCommunicationPort", PASSIVE_LEVEL);
            if !check_filter(&mut w, "FltCreateCommunicationPort", filter) {
                return STATUS_INVALID_PARAMETER;
            }
            // SAFETY: the driver passes its local OBJECT_ATTRIBUTES.
            let Some(attributes) = (unsafe { attributes.as_ref() }) else {
                w.violation("FltCreateCommunicationPort with NULL ObjectAttributes");
                return STATUS_INVALID_PARAMETER;
            };
            // SAFETY: ObjectName describes the driver's static port name.
            let name = unsafe { read_unicode(attributes.ObjectName) }.unwrap_or_default();
            if name != flushguard_protocol::PORT_NAME {
                w.violation(format!("port name {name:?}"));
            }
            if attributes.Attributes & 0x200 == 0 {
                w.violation("FltCreateCommunicationPort without OBJ_KERNEL_HANDLE");
            }
            let sd = attributes.SecurityDescriptor as usize;
            if !w.security_descriptors.contains_key(&sd) {
                w.violation(
                    "FltCreateCommunicationPort without a live FltBuildDefaultSecurityDescriptor \
                 descriptor",
                );
            }
            if w.server_port.is_some() {
                w.violation("a second server port");
            }
            if max_connections < 1 {
                w.violation(format!("MaxConnections {max_connections}"));
            }
            let handle = w.object();
            w.server_port = Some(ServerPort {
                handle,
                connect,
                disconnect,
                message,
                max_connections,
            });
            w.server_port_disconnect = disconnect;
            w.server_port_message = message;
            w.server_port_created = true;
            drop(w);
            // SAFETY: the driver passes a pointer to its local PFLT_PORT.
            unsafe { put(port, handle) };
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn flt_close_communication_port(port: usize) {
    guarded("FltCloseCommunicationPort", (), || {
        let mut w = world();
        w.call("FltCloseCommunicationPort", PASSIVE_LEVEL);
        w.teardown.push("FltCloseCommunicationPort");
        match w.server_port {
            Some(p) if p.handle == port => w.server_port = None,
            _ => w.violation(format!(
                "FltCloseCommunicationPort(0x{port:X}): not the open server port"
            )),
        }
    })
}

pub(super) extern "win64" fn flt_close_client_port(filter: usize, port: *mut usize) {
    guarded("FltCloseClientPort", (), || {
        let mut w = world();
        w.call("FltCloseClientPort", PASSIVE_LEVEL);
        check_filter(&mut w, "FltCloseClientPort", filter);
        // SAFETY: the driver passes a pointer to its PFLT_PORT variable.
        let Some(handle) = (unsafe { port.as_ref() }).copied() else {
            w.violation("FltCloseClientPort with a NULL port pointer");
            return;
        };
        if w.client_ports.remove(&handle).is_none() {
            w.violation(format!(
                "FltCloseClientPort(0x{handle:X}): not an open client port"
            ));
        }
        drop(w);
        // SAFETY: as above; Filter Manager sets the variable to NULL.
        unsafe { put(port, 0) };
    })
}

pub(super) extern "win64" fn flt_do_completion_processing_when_safe(
    data: *mut FltCallbackData,
    objects: *const FltRelatedObjects,
    context: *mut c_void,
    flags: u32,
    callback: usize,
    status: *mut i32,
) -> u8 {
    guarded("FltDoCompletionProcessingWhenSafe", 0, || {
        let mut w = world();
        w.call("FltDoCompletionProcessingWhenSafe", DISPATCH_LEVEL);
        // SAFETY: `data` is the live callback data of the running post-operation (a
        // harness allocation) or NULL.
        let major = unsafe { data.as_ref() }
            .map(|d| d.Iopb)
            .filter(|i| !i.is_null());
        // SAFETY: the harness's parameter block of that operation.
        let major = major.map(|iopb| unsafe { (*iopb).MajorFunction });
        if let Some(major @ (0x03 | 0x04 | 0x09)) = major {
            let name = match major {
                0x03 => "IRP_MJ_READ",
                0x04 => "IRP_MJ_WRITE",
                _ => "IRP_MJ_FLUSH_BUFFERS",
            };
            w.findings.insert(format!(
                "FltDoCompletionProcessingWhenSafe for {name}: the DDI page's caution forbids \
                 it for operations a storage-stack driver can complete (READ, WRITE, \
                 FLUSH_BUFFERS) \"to avoid deadlocks\"; DESIGN section 1 holds the caution \
                 binding, the engine narrows it to local volumes"
            ));
        }
        if w.fail_now("FltDoCompletionProcessingWhenSafe").is_some() {
            return 0;
        }
        if flags & 0x1 != 0 {
            w.violation("FltDoCompletionProcessingWhenSafe while draining");
            return 0;
        }
        // The safe callback runs later at PASSIVE_LEVEL in a worker (the scenario
        // runs the deferred queue); Filter Manager completes the operation after it.
        w.deferred.push((
            callback,
            data as usize,
            objects as usize,
            context as usize,
            flags,
        ));
        drop(w);
        // SAFETY: the driver passes a pointer to its local FLT_POSTOP_CALLBACK_STATUS.
        unsafe { put(status, dispatch::FLT_POSTOP_MORE_PROCESSING_REQUIRED) };
        1
    })
}

pub(super) extern "win64" fn flt_get_file_name_information(
    data: *mut FltCallbackData,
    _options: u32,
    information: *mut *mut FltFileNameInformation,
) -> i32 {
    guarded(
        "FltGetFileNameInformation",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltGetFileNameInformation", APC_LEVEL);
            if let Some(status) = w.fail_now("FltGetFileNameInformation") {
                return status;
            }
            // SAFETY: `data` is the live callback data of the running operation (harness
            // allocation); its Iopb is the harness's parameter block.
            let Some(d) = (unsafe { data.as_ref() }) else {
                w.violation("FltGetFileNameInformation with NULL callback data");
                return STATUS_INVALID_PARAMETER;
            };
            // SAFETY: as above: the harness's parameter block of the operation.
            let iopb = unsafe { &*d.Iopb };
            if iopb.IrpFlags & 0x2 != 0 {
                w.violation("FltGetFileNameInformation during paging I/O");
            }
            let Some(file) = w.files.get(&(iopb.TargetFileObject as usize)).cloned() else {
                return STATUS_OBJECT_NAME_NOT_FOUND;
            };
            let name: Box<[u16]> = file.name.encode_utf16().collect();
            let string = UnicodeString {
                Length: (name.len() * 2) as u16,
                MaximumLength: (name.len() * 2) as u16,
                Buffer: name.as_ptr().cast_mut(),
            };
            let empty = UnicodeString {
                Length: 0,
                MaximumLength: 0,
                Buffer: std::ptr::null_mut(),
            };
            let info = Box::new(FltFileNameInformation {
                Size: std::mem::size_of::<FltFileNameInformation>() as u16,
                NamesParsed: 0,
                Format: 0x01, // FLT_FILE_NAME_NORMALIZED
                Name: string,
                Volume: empty,
                Share: empty,
                Extension: empty,
                Stream: empty,
                FinalComponent: empty,
                ParentDir: empty,
            });
            let address = &*info as *const FltFileNameInformation as usize;
            w.names.insert(
                address,
                NameInfo {
                    info,
                    _name: name,
                    refs: 1,
                },
            );
            drop(w);
            // SAFETY: the driver passes a pointer to its local PFLT_FILE_NAME_INFORMATION.
            unsafe { put(information, address as *mut FltFileNameInformation) };
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn flt_parse_file_name_information(
    information: *mut FltFileNameInformation,
) -> i32 {
    guarded(
        "FltParseFileNameInformation",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FltParseFileNameInformation", APC_LEVEL);
            match w.names.get_mut(&(information as usize)) {
                Some(n) => {
                    n.info.NamesParsed = 0x3F;
                    STATUS_SUCCESS
                }
                None => {
                    w.violation("FltParseFileNameInformation of unknown name information");
                    STATUS_INVALID_PARAMETER
                }
            }
        },
    )
}

pub(super) extern "win64" fn flt_release_file_name_information(
    information: *mut FltFileNameInformation,
) {
    guarded("FltReleaseFileNameInformation", (), || {
        let mut w = world();
        w.call("FltReleaseFileNameInformation", APC_LEVEL);
        let key = information as usize;
        match w.names.get_mut(&key) {
            Some(n) => {
                n.refs -= 1;
                if n.refs == 0 {
                    w.names.remove(&key);
                }
            }
            None => w.violation(
                "FltReleaseFileNameInformation of unknown (or already released) name information",
            ),
        }
    })
}

pub(super) extern "win64" fn flt_get_requestor_process(_data: *mut FltCallbackData) -> usize {
    guarded("FltGetRequestorProcess", 0, || {
        let mut w = world();
        w.call("FltGetRequestorProcess", DISPATCH_LEVEL);
        0xFFFF_9000_0000_0080 // an EPROCESS the harness never dereferences
    })
}

pub(super) extern "win64" fn flt_get_routine_address(name: *const c_char) -> *mut c_void {
    guarded("FltGetRoutineAddress", std::ptr::null_mut(), || {
        let mut w = world();
        w.call("FltGetRoutineAddress", PASSIVE_LEVEL);
        if name.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: FltGetRoutineAddress takes a NUL-terminated ANSI name.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        match name.as_str() {
            "FltFlushBuffers2" if w.has_flush2 => {
                flt_flush_buffers2 as *const () as usize as *mut c_void
            }
            _ => std::ptr::null_mut(),
        }
    })
}

pub(super) extern "win64" fn flt_get_volume_properties(
    volume: usize,
    properties: *mut FltVolumeProperties,
    length: u32,
    returned: *mut u32,
) -> i32 {
    guarded("FltGetVolumeProperties", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("FltGetVolumeProperties", APC_LEVEL);
        let Some(&device_type) = w.volumes.get(&volume) else {
            w.violation(format!(
                "FltGetVolumeProperties(0x{volume:X}): unknown volume"
            ));
            return STATUS_INVALID_PARAMETER;
        };
        drop(w);
        let fixed = std::mem::size_of::<FltVolumeProperties>() as u32;
        // SAFETY: the driver passes a pointer to its local ULONG.
        unsafe { put(returned, fixed) };
        if length < fixed {
            return STATUS_BUFFER_TOO_SMALL;
        }
        let empty = UnicodeString {
            Length: 0,
            MaximumLength: 0,
            Buffer: std::ptr::null_mut(),
        };
        // SAFETY: `properties` holds `length` >= sizeof(FLT_VOLUME_PROPERTIES) bytes.
        unsafe {
            put(
                properties,
                FltVolumeProperties {
                    DeviceType: device_type,
                    DeviceCharacteristics: 0x10, // FILE_REMOTE_DEVICE
                    DeviceObjectFlags: 0,
                    AlignmentRequirement: 0,
                    SectorSize: 0,
                    Flags: 0,
                    FileSystemDriverName: empty,
                    FileSystemDeviceName: empty,
                    RealDeviceName: empty,
                },
            )
        };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn flt_is_operation_synchronous(data: *mut FltCallbackData) -> u8 {
    guarded("FltIsOperationSynchronous", 0, || {
        let mut w = world();
        w.call("FltIsOperationSynchronous", DISPATCH_LEVEL);
        u8::from(w.synchronous.contains(&(data as usize)))
    })
}

pub(super) extern "win64" fn flt_set_callback_data_dirty(data: *mut FltCallbackData) {
    guarded("FltSetCallbackDataDirty", (), || {
        let mut w = world();
        w.call("FltSetCallbackDataDirty", DISPATCH_LEVEL);
        w.dirty.push(data as usize);
    })
}
