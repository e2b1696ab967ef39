//! ntoskrnl.exe: the imported kernel routines (pool, registry, handles, time, MUP,
//! debug output, bug check, C runtime), each with its IRQL maximum and object checks.

use super::*;

pub(super) extern "win64" fn dbg_print_ex(
    component: u32,
    level: u32,
    format: *const c_char,
    a1: usize,
    a2: usize,
) -> u32 {
    guarded("DbgPrintEx", 0, || {
        world().call("DbgPrintEx", u8::MAX);
        if format.is_null() {
            return 0;
        }
        // SAFETY: DbgPrintEx's Format is a NUL-terminated string (the driver passes C
        // string literals from its image).
        let format = unsafe { CStr::from_ptr(format) }
            .to_string_lossy()
            .into_owned();
        let mut out = String::new();
        let mut args = [a1, a2].into_iter();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut spec = String::new();
            while let Some(&n) = chars.peek() {
                spec.push(n);
                chars.next();
                if n.is_ascii_alphabetic() && n != 'I' {
                    break;
                }
            }
            let arg = args.next().unwrap_or(0);
            match spec.chars().last() {
                Some('s') if arg != 0 => {
                    // SAFETY: a `%s` argument of the driver's fixed formats is a C
                    // string literal of its image.
                    let s = unsafe { CStr::from_ptr(arg as *const c_char) };
                    out.push_str(&s.to_string_lossy());
                }
                Some('X') | Some('x') => out.push_str(&format!("{:08X}", arg as u32)),
                _ => out.push_str(&arg.to_string()),
            }
        }
        world()
            .debug_output
            .push(format!("[{component}/{level}] {}", out.trim_end()));
        0
    })
}

pub(super) extern "win64" fn ex_allocate_pool_with_tag(
    pool_type: i32,
    size: usize,
    tag: u32,
) -> *mut c_void {
    guarded("ExAllocatePoolWithTag", std::ptr::null_mut(), || {
        let mut w = world();
        w.call("ExAllocatePoolWithTag", DISPATCH_LEVEL);
        if pool_type != 512 {
            // NonPagedPoolNx
            w.violation(format!(
                "ExAllocatePoolWithTag pool type {pool_type} (expected NonPagedPoolNx = 512)"
            ));
        }
        if w.coordinator_block_fails(size) {
            return std::ptr::null_mut();
        }
        let address = w.allocate(size, tag, "ExAllocatePoolWithTag");
        w.allocated(address, size);
        address as *mut c_void
    })
}

pub(super) extern "win64" fn ex_allocate_pool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    guarded("ExAllocatePool2", std::ptr::null_mut(), || {
        let mut w = world();
        w.call("ExAllocatePool2", DISPATCH_LEVEL);
        if flags & 0x40 == 0 && w.irql > APC_LEVEL {
            w.violation("ExAllocatePool2 of paged pool above APC_LEVEL");
        }
        if tag == 0 {
            w.violation("ExAllocatePool2 with tag 0");
        }
        if w.coordinator_block_fails(size) {
            return std::ptr::null_mut();
        }
        let address = w.allocate(size, tag, "ExAllocatePool2");
        w.allocated(address, size);
        address as *mut c_void
    })
}

pub(super) extern "win64" fn ex_free_pool(p: *mut c_void) {
    guarded("ExFreePool", (), || {
        let mut w = world();
        w.call("ExFreePool", DISPATCH_LEVEL);
        w.free(p as usize, None, "ExFreePool");
    })
}

pub(super) extern "win64" fn ex_free_pool_with_tag(p: *mut c_void, tag: u32) {
    guarded("ExFreePoolWithTag", (), || {
        let mut w = world();
        w.call("ExFreePoolWithTag", DISPATCH_LEVEL);
        w.free(p as usize, Some(tag), "ExFreePoolWithTag");
    })
}

pub(super) extern "win64" fn fs_rtl_mup_get_provider_id_from_name(
    name: *const UnicodeString,
    id: *mut u32,
) -> i32 {
    guarded(
        "FsRtlMupGetProviderIdFromName",
        STATUS_INVALID_PARAMETER,
        || {
            world().call("FsRtlMupGetProviderIdFromName", PASSIVE_LEVEL);
            // SAFETY: the driver passes a UNICODE_STRING describing its local buffer.
            let Some(name) = (unsafe { read_unicode(name) }) else {
                world().violation("FsRtlMupGetProviderIdFromName with a NULL name");
                return STATUS_INVALID_PARAMETER;
            };
            match PROVIDERS
                .iter()
                .find(|(device, _)| device.eq_ignore_ascii_case(&name))
            {
                Some((_, provider)) => {
                    // SAFETY: the driver passes a pointer to a local ULONG.
                    unsafe { put(id, *provider) };
                    STATUS_SUCCESS
                }
                None => STATUS_OBJECT_NAME_NOT_FOUND,
            }
        },
    )
}

pub(super) extern "win64" fn fs_rtl_mup_get_provider_info_from_file_object(
    file_object: *mut FileObject,
    level: u32,
    buffer: *mut c_void,
    size: *mut u32,
) -> i32 {
    guarded(
        "FsRtlMupGetProviderInfoFromFileObject",
        STATUS_INVALID_PARAMETER,
        || {
            let mut w = world();
            w.call("FsRtlMupGetProviderInfoFromFileObject", PASSIVE_LEVEL);
            w.call_arguments(None, file_object as usize);
            if let Some(status) = w.fail_now("FsRtlMupGetProviderInfoFromFileObject") {
                return status;
            }
            if level != 1 {
                w.violation(format!(
                    "FsRtlMupGetProviderInfoFromFileObject level {level}"
                ));
                return STATUS_INVALID_PARAMETER;
            }
            let Some(file) = w.files.get(&(file_object as usize)).cloned() else {
                w.violation("FsRtlMupGetProviderInfoFromFileObject on an unknown file object");
                return STATUS_INVALID_PARAMETER;
            };
            drop(w);
            let Some(provider) = file.provider else {
                return STATUS_INVALID_PARAMETER;
            };
            if !file.opened {
                return STATUS_OBJECT_NAME_NOT_FOUND;
            }
            // SAFETY: the driver passes a pointer to its local ULONG size.
            let available = unsafe { size.as_ref() }.copied().unwrap_or(0);
            if (available as usize) < std::mem::size_of::<MupProviderInfoLevel1>() {
                return STATUS_BUFFER_TOO_SMALL;
            }
            // SAFETY: `buffer` holds at least `*size` bytes (checked above).
            unsafe {
                put(
                    buffer.cast::<MupProviderInfoLevel1>(),
                    MupProviderInfoLevel1 {
                        ProviderId: provider,
                    },
                )
            };
            // SAFETY: as above, the driver's local ULONG.
            unsafe { put(size, std::mem::size_of::<MupProviderInfoLevel1>() as u32) };
            STATUS_SUCCESS
        },
    )
}

pub(super) extern "win64" fn io_get_top_level_irp() -> usize {
    guarded("IoGetTopLevelIrp", 0, || {
        let mut w = world();
        w.call("IoGetTopLevelIrp", u8::MAX);
        w.top_level_irp
    })
}

pub(super) extern "win64" fn ke_are_all_apcs_disabled() -> u8 {
    guarded("KeAreAllApcsDisabled", 0, || {
        let mut w = world();
        w.call("KeAreAllApcsDisabled", DISPATCH_LEVEL);
        u8::from(w.irql >= APC_LEVEL)
    })
}

pub(super) extern "win64" fn ke_are_apcs_disabled() -> u8 {
    guarded("KeAreApcsDisabled", 0, || {
        let mut w = world();
        w.call("KeAreApcsDisabled", DISPATCH_LEVEL);
        u8::from(w.irql >= APC_LEVEL || w.critical_region > 0)
    })
}

pub(super) extern "win64" fn ke_bug_check_ex(
    code: u32,
    p1: usize,
    p2: usize,
    p3: usize,
    p4: usize,
) -> ! {
    let violations = world().violations.clone();
    eprintln!(
        "KeBugCheckEx(0x{code:08X}, 0x{p1:X}, 0x{p2:X}, 0x{p3:X}, 0x{p4:X}): the driver \
         stopped the system"
    );
    for v in violations {
        eprintln!("  violation before the bug check: {v}");
    }
    std::process::exit(3)
}

pub(super) extern "win64" fn ke_get_current_irql() -> u8 {
    guarded("KeGetCurrentIrql", 0, || {
        let mut w = world();
        w.call("KeGetCurrentIrql", u8::MAX);
        w.irql
    })
}

pub(super) extern "win64" fn ke_query_interrupt_time_precise(qpc: *mut u64) -> u64 {
    guarded("KeQueryInterruptTimePrecise", 0, || {
        world().call("KeQueryInterruptTimePrecise", u8::MAX);
        let t = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos() / 100) as u64;
        // SAFETY: the driver passes a pointer to a local ULONG64.
        unsafe { put(qpc, t) };
        t
    })
}

pub(super) extern "win64" fn ke_query_system_time_precise(time: *mut i64) {
    guarded("KeQuerySystemTimePrecise", (), || {
        world().call("KeQuerySystemTimePrecise", u8::MAX);
        let unix = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos() / 100) as i64;
        // SAFETY: the driver passes a pointer to a local LARGE_INTEGER.
        unsafe { put(time, unix + 116_444_736_000_000_000) };
    })
}

pub(super) extern "win64" fn mm_get_system_routine_address(
    name: *const UnicodeString,
) -> *mut c_void {
    guarded("MmGetSystemRoutineAddress", std::ptr::null_mut(), || {
        world().call("MmGetSystemRoutineAddress", PASSIVE_LEVEL);
        // SAFETY: the driver passes a UNICODE_STRING describing a static buffer.
        let name = unsafe { read_unicode(name) }.unwrap_or_default();
        match name.as_str() {
            "ExAllocatePool2" if world().has_pool2 => {
                ex_allocate_pool2 as *const () as usize as *mut c_void
            }
            _ => std::ptr::null_mut(),
        }
    })
}

pub(super) extern "win64" fn ob_open_object_by_pointer(
    object: *mut c_void,
    _attributes: u32,
    _access_state: *mut c_void,
    _access: u32,
    _object_type: *mut c_void,
    mode: i8,
    handle: *mut usize,
) -> i32 {
    guarded("ObOpenObjectByPointer", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("ObOpenObjectByPointer", PASSIVE_LEVEL);
        if mode != 0 {
            w.violation("ObOpenObjectByPointer with UserMode access checks");
        }
        if let Some(status) = w.fail_now("ObOpenObjectByPointer") {
            return status;
        }
        let Some(file) = w.files.get_mut(&(object as usize)) else {
            w.violation("ObOpenObjectByPointer on an unknown object");
            return STATUS_INVALID_PARAMETER;
        };
        file.kernel_handles += 1;
        let h = w.open_handle(Handle::File(object as usize));
        drop(w);
        // SAFETY: the driver passes a pointer to a local HANDLE.
        unsafe { put(handle, h) };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn ps_get_current_thread_id() -> usize {
    guarded("PsGetCurrentThreadId", 0, || {
        let mut w = world();
        w.call("PsGetCurrentThreadId", u8::MAX);
        super::thread::current_thread_id(&w)
    })
}

pub(super) extern "win64" fn se_locate_process_image_name(
    _process: usize,
    image: *mut *mut UnicodeString,
) -> i32 {
    guarded("SeLocateProcessImageName", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("SeLocateProcessImageName", PASSIVE_LEVEL);
        if let Some(status) = w.fail_now("SeLocateProcessImageName") {
            return status;
        }
        let name: Vec<u16> = crate::scenario::PROCESS.encode_utf16().collect();
        let header = std::mem::size_of::<UnicodeString>();
        let block = w.allocate(
            header + name.len() * 2,
            u32::from_le_bytes(*b"SeIn"),
            "SeLocateProcessImageName",
        );
        let Some(memory) = w.pool.get_mut(&block) else {
            return STATUS_INVALID_PARAMETER;
        };
        let bytes: &mut [u128] = &mut memory.memory;
        let base = bytes.as_mut_ptr().cast::<u8>();
        let buffer = base.wrapping_add(header).cast::<u16>();
        // SAFETY: `buffer` points into the fresh block, which has room for the header
        // and `name.len()` code units after it.
        unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), buffer, name.len()) };
        let string = UnicodeString {
            Length: (name.len() * 2) as u16,
            MaximumLength: (name.len() * 2) as u16,
            Buffer: buffer,
        };
        // SAFETY: the block starts with room for the UNICODE_STRING header.
        unsafe { put(base.cast::<UnicodeString>(), string) };
        drop(w);
        // SAFETY: the driver passes a pointer to a local PUNICODE_STRING.
        unsafe { put(image, base.cast::<UnicodeString>()) };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn zw_close(handle: usize) -> i32 {
    guarded("ZwClose", STATUS_INVALID_HANDLE, || {
        let mut w = world();
        w.call("ZwClose", PASSIVE_LEVEL);
        match w.handles.remove(&handle) {
            Some(Handle::File(file)) => {
                w.file_handle_closes += 1;
                let last = match w.files.get_mut(&file) {
                    Some(f) => {
                        f.kernel_handles = f.kernel_handles.saturating_sub(1);
                        f.kernel_handles == 0 && !f.user_handle_open && f.opened
                    }
                    None => false,
                };
                if last {
                    w.violation(
                        "ZwClose of the driver's handle sent a second IRP_MJ_CLEANUP (the \
                         user's handle was already cleaned up)",
                    );
                }
                w.fail_now("ZwClose(file handle)").unwrap_or(STATUS_SUCCESS)
            }
            // Closing a thread's handle does not end the thread (checked at the end).
            Some(Handle::Key(_) | Handle::Thread(_)) => STATUS_SUCCESS,
            None => {
                w.violation(format!("ZwClose(0x{handle:X}): not an open handle"));
                STATUS_INVALID_HANDLE
            }
        }
    })
}

pub(super) fn parameters_key_name(w: &crate::world::World) -> String {
    format!("{}\\Parameters", w.service_key)
}

pub(super) fn open_key(
    routine: &'static str,
    key: *mut usize,
    attributes: *const ObjectAttributes,
    create: bool,
) -> i32 {
    let mut w = world();
    w.call(routine, PASSIVE_LEVEL);
    // SAFETY: the driver passes its local OBJECT_ATTRIBUTES.
    let Some(attributes) = (unsafe { attributes.as_ref() }) else {
        w.violation(format!("{routine} with NULL ObjectAttributes"));
        return STATUS_INVALID_PARAMETER;
    };
    if attributes.Length as usize != std::mem::size_of::<ObjectAttributes>() {
        w.violation(format!(
            "{routine}: OBJECT_ATTRIBUTES.Length {}",
            attributes.Length
        ));
    }
    if attributes.Attributes & 0x200 == 0 {
        w.violation(format!("{routine} without OBJ_KERNEL_HANDLE"));
    }
    // SAFETY: ObjectName describes the driver's pool buffer of the key path.
    let name = unsafe { read_unicode(attributes.ObjectName) }.unwrap_or_default();
    let expected = parameters_key_name(&w);
    if !name.eq_ignore_ascii_case(&expected) {
        w.violation(format!("{routine}({name}): expected {expected}"));
        return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    if create {
        w.parameters_key = true;
    } else if !w.parameters_key {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    let h = w.open_handle(Handle::Key(name));
    drop(w);
    // SAFETY: the driver passes a pointer to a local HANDLE.
    unsafe { put(key, h) };
    STATUS_SUCCESS
}

pub(super) extern "win64" fn zw_create_key(
    key: *mut usize,
    _access: u32,
    attributes: *const ObjectAttributes,
    _title_index: u32,
    _class: *const UnicodeString,
    _options: u32,
    disposition: *mut u32,
) -> i32 {
    guarded("ZwCreateKey", STATUS_INVALID_PARAMETER, || {
        let existed = world().parameters_key;
        let status = open_key("ZwCreateKey", key, attributes, true);
        // SAFETY: the driver passes a pointer to a local ULONG (or NULL).
        unsafe { put(disposition, if existed { 2 } else { 1 }) };
        status
    })
}

pub(super) extern "win64" fn zw_open_key(
    key: *mut usize,
    _access: u32,
    attributes: *const ObjectAttributes,
) -> i32 {
    guarded("ZwOpenKey", STATUS_INVALID_PARAMETER, || {
        open_key("ZwOpenKey", key, attributes, false)
    })
}

pub(super) fn check_key(w: &mut crate::world::World, routine: &str, key: usize) -> bool {
    match w.handles.get(&key) {
        Some(Handle::Key(_)) => true,
        _ => {
            w.violation(format!("{routine}(0x{key:X}): not an open key handle"));
            false
        }
    }
}

pub(super) extern "win64" fn zw_query_value_key(
    key: usize,
    name: *const UnicodeString,
    class: i32,
    information: *mut u8,
    length: u32,
    result_length: *mut u32,
) -> i32 {
    guarded("ZwQueryValueKey", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("ZwQueryValueKey", PASSIVE_LEVEL);
        if !check_key(&mut w, "ZwQueryValueKey", key) {
            return STATUS_INVALID_HANDLE;
        }
        // SAFETY: the driver passes a UNICODE_STRING describing its local buffer.
        let name = unsafe { read_unicode(name) }.unwrap_or_default();
        if class != 2 {
            w.violation(format!("ZwQueryValueKey class {class}"));
            return STATUS_INVALID_PARAMETER;
        }
        if name != flushguard_protocol::REGISTRY_POLICY_VALUE {
            return STATUS_OBJECT_NAME_NOT_FOUND;
        }
        let Some(value) = w.policy_value.clone() else {
            return STATUS_OBJECT_NAME_NOT_FOUND;
        };
        drop(w);
        let mut out = Vec::with_capacity(KEY_VALUE_PARTIAL_INFORMATION_HEADER + value.len());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes()); // REG_BINARY
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(&value);
        // SAFETY: the driver passes a pointer to a local ULONG.
        unsafe { put(result_length, out.len() as u32) };
        let length = length as usize;
        if length < KEY_VALUE_PARTIAL_INFORMATION_HEADER {
            return STATUS_BUFFER_TOO_SMALL;
        }
        let copy = out.len().min(length);
        // SAFETY: `information` is the driver's buffer of `length` bytes (>= copy).
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), information, copy) };
        if copy < out.len() {
            STATUS_BUFFER_OVERFLOW
        } else {
            STATUS_SUCCESS
        }
    })
}

pub(super) extern "win64" fn zw_set_value_key(
    key: usize,
    name: *const UnicodeString,
    _title_index: u32,
    kind: u32,
    data: *const u8,
    size: u32,
) -> i32 {
    guarded("ZwSetValueKey", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("ZwSetValueKey", PASSIVE_LEVEL);
        if !check_key(&mut w, "ZwSetValueKey", key) {
            return STATUS_INVALID_HANDLE;
        }
        // SAFETY: the driver passes a UNICODE_STRING describing its local buffer.
        let name = unsafe { read_unicode(name) }.unwrap_or_default();
        if name != flushguard_protocol::REGISTRY_POLICY_VALUE || kind != 3 {
            w.violation(format!("ZwSetValueKey({name}, type {kind})"));
        }
        let value = if data.is_null() {
            Vec::new()
        } else {
            // SAFETY: the driver passes a kernel buffer of `size` bytes.
            unsafe { std::slice::from_raw_parts(data, size as usize) }.to_vec()
        };
        w.policy_value = Some(value);
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn c_specific_handler(
    _record: *mut c_void,
    _frame: *mut c_void,
    _context: *mut c_void,
    _dispatcher: *mut c_void,
) -> i32 {
    guarded("__C_specific_handler", 1, || {
        world().violation("__C_specific_handler called: an exception was dispatched");
        1 // ExceptionContinueSearch
    })
}

pub(super) extern "win64" fn mem_cmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    world().call("memcmp", u8::MAX);
    if n == 0 {
        return 0;
    }
    // SAFETY: memcmp's contract: both buffers hold `n` readable bytes.
    let a = unsafe { std::slice::from_raw_parts(a, n) };
    // SAFETY: as above.
    let b = unsafe { std::slice::from_raw_parts(b, n) };
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => i32::from(*x) - i32::from(*y),
        None => 0,
    }
}

pub(super) extern "win64" fn mem_cpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    world().call("memcpy", u8::MAX);
    // SAFETY: memcpy's contract: `dst` and `src` hold `n` bytes and do not overlap
    // (copy, not copy_nonoverlapping: tolerate the common memmove-through-memcpy).
    unsafe { std::ptr::copy(src, dst, n) };
    dst
}

pub(super) extern "win64" fn mem_set(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    world().call("memset", u8::MAX);
    // SAFETY: memset's contract: `dst` holds `n` writable bytes.
    unsafe { std::ptr::write_bytes(dst, value as u8, n) };
    dst
}
