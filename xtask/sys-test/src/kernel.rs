//! The ABI-level ntoskrnl.exe and fltmgr.sys: every routine the driver imports, as an
//! `extern "win64"` function the loader binds into the image's IAT.
//!
//! Each routine records its call, checks its documented maximum IRQL (DDI page of the
//! routine) and the object rules Filter Verifier checks (references, pool tags,
//! handles, the port's security descriptor, registration and teardown order), and
//! records violations in the [`World`](crate::world::World). None of them panics: the
//! body runs under `catch_unwind`, and a harness bug becomes a violation.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::dispatch;
use crate::layout::{
    FileObject, FltCallbackData, FltFileNameInformation, FltRegistration, FltRelatedObjects,
    FltVolumeProperties, IoStatusBlock, MupProviderInfoLevel1, ObjectAttributes, UnicodeString,
    KEY_VALUE_PARTIAL_INFORMATION_HEADER,
};
use crate::world::{
    world, Context, File, FilterState, Flush, Handle, NameInfo, Registration, ServerPort,
    APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL,
};

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 0;
const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
const STATUS_INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
const STATUS_NOT_FOUND: i32 = 0xC000_0225_u32 as i32;
const STATUS_FLT_CONTEXT_ALREADY_DEFINED: i32 = 0xC01C_0016_u32 as i32;
/// `FILE_DEVICE_NETWORK_FILE_SYSTEM`.
pub const FILE_DEVICE_NETWORK_FILE_SYSTEM: u32 = 0x14;
/// `FLT_REGISTRATION_VERSION` (0x0203).
const FLT_REGISTRATION_VERSION: u16 = 0x0203;
/// `IRP_MJ_OPERATION_END`.
const IRP_MJ_OPERATION_END: u8 = 0x80;
/// `FLT_CONTEXT_END`.
const FLT_CONTEXT_END: u16 = 0xFFFF;
/// `FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD`.
const FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD: u32 = 0x2;
/// `IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO | IRP_NOCACHE`.
const PAGING_WRITE_FLAGS: u32 = 0x2 | 0x40 | 0x1;
/// `IRP_MJ_WRITE`.
const IRP_MJ_WRITE: u8 = 0x04;
/// The harness's `MmUserProbeAddress` (the x64 value): Linux user addresses lie below.
static MM_USER_PROBE_ADDRESS: usize = 0x7FFF_FFFF_0000;
/// Redirector device names -> MUP provider ids (as the host fake registers them).
pub const PROVIDERS: &[(&str, u32)] = &[
    ("\\Device\\LanmanRedirector", 0x10),
    ("\\Device\\WebDavRedirector", 0x20),
    ("\\Device\\Nfs", 0x30),
];

/// Runs `body`, turning a panic into a violation and `fallback`.
fn guarded<T>(routine: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            world().violation(format!("harness bug: {routine} panicked"));
            fallback
        }
    }
}

/// Reads a `UNICODE_STRING` the driver passed.
///
/// # Safety
/// `s` is NULL or points to a `UNICODE_STRING` whose `Buffer` holds `Length` bytes.
unsafe fn read_unicode(s: *const UnicodeString) -> Option<String> {
    // SAFETY: the caller's contract: NULL or a readable UNICODE_STRING.
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() {
        return Some(String::new());
    }
    // SAFETY: the caller's contract: `Buffer` holds `Length` bytes of UTF-16.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

/// Writes `value` through an out pointer the driver passed, if non-NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        unsafe { p.write_unaligned(value) };
    }
}

// ---------------------------------------------------------------- ntoskrnl.exe

extern "win64" fn dbg_print_ex(
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

extern "win64" fn ex_allocate_pool_with_tag(pool_type: i32, size: usize, tag: u32) -> *mut c_void {
    guarded("ExAllocatePoolWithTag", std::ptr::null_mut(), || {
        let mut w = world();
        w.call("ExAllocatePoolWithTag", DISPATCH_LEVEL);
        if pool_type != 512 {
            // NonPagedPoolNx
            w.violation(format!(
                "ExAllocatePoolWithTag pool type {pool_type} (expected NonPagedPoolNx = 512)"
            ));
        }
        w.allocate(size, tag, "ExAllocatePoolWithTag") as *mut c_void
    })
}

extern "win64" fn ex_allocate_pool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    guarded("ExAllocatePool2", std::ptr::null_mut(), || {
        let mut w = world();
        w.call("ExAllocatePool2", DISPATCH_LEVEL);
        if flags & 0x40 == 0 && w.irql > APC_LEVEL {
            w.violation("ExAllocatePool2 of paged pool above APC_LEVEL");
        }
        if tag == 0 {
            w.violation("ExAllocatePool2 with tag 0");
        }
        w.allocate(size, tag, "ExAllocatePool2") as *mut c_void
    })
}

extern "win64" fn ex_free_pool(p: *mut c_void) {
    guarded("ExFreePool", (), || {
        let mut w = world();
        w.call("ExFreePool", DISPATCH_LEVEL);
        w.free(p as usize, None, "ExFreePool");
    })
}

extern "win64" fn ex_free_pool_with_tag(p: *mut c_void, tag: u32) {
    guarded("ExFreePoolWithTag", (), || {
        let mut w = world();
        w.call("ExFreePoolWithTag", DISPATCH_LEVEL);
        w.free(p as usize, Some(tag), "ExFreePoolWithTag");
    })
}

extern "win64" fn fs_rtl_mup_get_provider_id_from_name(
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

extern "win64" fn fs_rtl_mup_get_provider_info_from_file_object(
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

extern "win64" fn io_get_top_level_irp() -> usize {
    guarded("IoGetTopLevelIrp", 0, || {
        let mut w = world();
        w.call("IoGetTopLevelIrp", u8::MAX);
        w.top_level_irp
    })
}

extern "win64" fn ke_are_all_apcs_disabled() -> u8 {
    guarded("KeAreAllApcsDisabled", 0, || {
        let mut w = world();
        w.call("KeAreAllApcsDisabled", DISPATCH_LEVEL);
        u8::from(w.irql >= APC_LEVEL)
    })
}

extern "win64" fn ke_bug_check_ex(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> ! {
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

extern "win64" fn ke_get_current_irql() -> u8 {
    guarded("KeGetCurrentIrql", 0, || {
        let mut w = world();
        w.call("KeGetCurrentIrql", u8::MAX);
        w.irql
    })
}

extern "win64" fn ke_query_interrupt_time_precise(qpc: *mut u64) -> u64 {
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

extern "win64" fn ke_query_system_time_precise(time: *mut i64) {
    guarded("KeQuerySystemTimePrecise", (), || {
        world().call("KeQuerySystemTimePrecise", u8::MAX);
        let unix = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos() / 100) as i64;
        // SAFETY: the driver passes a pointer to a local LARGE_INTEGER.
        unsafe { put(time, unix + 116_444_736_000_000_000) };
    })
}

extern "win64" fn mm_get_system_routine_address(name: *const UnicodeString) -> *mut c_void {
    guarded("MmGetSystemRoutineAddress", std::ptr::null_mut(), || {
        world().call("MmGetSystemRoutineAddress", PASSIVE_LEVEL);
        // SAFETY: the driver passes a UNICODE_STRING describing a static buffer.
        let name = unsafe { read_unicode(name) }.unwrap_or_default();
        match name.as_str() {
            "ExAllocatePool2" => ex_allocate_pool2 as *const () as usize as *mut c_void,
            _ => std::ptr::null_mut(),
        }
    })
}

extern "win64" fn ob_open_object_by_pointer(
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
        if !w.files.contains_key(&(object as usize)) {
            w.violation("ObOpenObjectByPointer on an unknown object");
            return STATUS_INVALID_PARAMETER;
        }
        let h = w.open_handle(Handle::File(object as usize));
        drop(w);
        // SAFETY: the driver passes a pointer to a local HANDLE.
        unsafe { put(handle, h) };
        STATUS_SUCCESS
    })
}

extern "win64" fn ps_get_current_thread_id() -> usize {
    guarded("PsGetCurrentThreadId", 0, || {
        world().call("PsGetCurrentThreadId", u8::MAX);
        0x1234
    })
}

extern "win64" fn se_locate_process_image_name(
    _process: usize,
    image: *mut *mut UnicodeString,
) -> i32 {
    guarded("SeLocateProcessImageName", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("SeLocateProcessImageName", PASSIVE_LEVEL);
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

extern "win64" fn zw_close(handle: usize) -> i32 {
    guarded("ZwClose", STATUS_INVALID_HANDLE, || {
        let mut w = world();
        w.call("ZwClose", PASSIVE_LEVEL);
        match w.handles.remove(&handle) {
            Some(Handle::File(_)) => {
                w.file_handle_closes += 1;
                STATUS_SUCCESS
            }
            Some(Handle::Key(_)) => STATUS_SUCCESS,
            None => {
                w.violation(format!("ZwClose(0x{handle:X}): not an open handle"));
                STATUS_INVALID_HANDLE
            }
        }
    })
}

fn parameters_key_name(w: &crate::world::World) -> String {
    format!("{}\\Parameters", w.service_key)
}

fn open_key(
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

extern "win64" fn zw_create_key(
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

extern "win64" fn zw_open_key(
    key: *mut usize,
    _access: u32,
    attributes: *const ObjectAttributes,
) -> i32 {
    guarded("ZwOpenKey", STATUS_INVALID_PARAMETER, || {
        open_key("ZwOpenKey", key, attributes, false)
    })
}

fn check_key(w: &mut crate::world::World, routine: &str, key: usize) -> bool {
    match w.handles.get(&key) {
        Some(Handle::Key(_)) => true,
        _ => {
            w.violation(format!("{routine}(0x{key:X}): not an open key handle"));
            false
        }
    }
}

extern "win64" fn zw_query_value_key(
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

extern "win64" fn zw_set_value_key(
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

extern "win64" fn zw_flush_buffers_file_ex(
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
        flush_checks(&mut w, "ZwFlushBuffersFileEx", file, flags);
        drop(w);
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

extern "win64" fn c_specific_handler(
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

extern "win64" fn mem_cmp(a: *const u8, b: *const u8, n: usize) -> i32 {
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

extern "win64" fn mem_cpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: memcpy's contract: `dst` and `src` hold `n` bytes and do not overlap
    // (copy, not copy_nonoverlapping: tolerate the common memmove-through-memcpy).
    unsafe { std::ptr::copy(src, dst, n) };
    dst
}

extern "win64" fn mem_set(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: memset's contract: `dst` holds `n` writable bytes.
    unsafe { std::ptr::write_bytes(dst, value as u8, n) };
    dst
}

// ---------------------------------------------------------------- fltmgr.sys

fn check_filter(w: &mut crate::world::World, routine: &str, filter: usize) -> bool {
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

extern "win64" fn flt_register_filter(
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

extern "win64" fn flt_start_filtering(filter: usize) -> i32 {
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

extern "win64" fn flt_unregister_filter(filter: usize) {
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

fn release_context_ref(w: &mut crate::world::World, context: usize, fm: bool) {
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

extern "win64" fn flt_allocate_context(
    filter: usize,
    context_type: u16,
    size: usize,
    pool_type: i32,
    context: *mut *mut c_void,
) -> i32 {
    guarded("FltAllocateContext", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("FltAllocateContext", APC_LEVEL);
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

extern "win64" fn flt_release_context(context: *mut c_void) {
    guarded("FltReleaseContext", (), || {
        let mut w = world();
        w.call("FltReleaseContext", DISPATCH_LEVEL);
        release_context_ref(&mut w, context as usize, false);
    })
}

extern "win64" fn flt_set_stream_handle_context(
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

extern "win64" fn flt_get_stream_handle_context(
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

extern "win64" fn flt_build_default_security_descriptor(
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

extern "win64" fn flt_free_security_descriptor(descriptor: *mut c_void) {
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
extern "win64" fn flt_create_communication_port(
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

extern "win64" fn flt_close_communication_port(port: usize) {
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

extern "win64" fn flt_close_client_port(filter: usize, port: *mut usize) {
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

extern "win64" fn flt_do_completion_processing_when_safe(
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

fn flush_checks(w: &mut crate::world::World, routine: &'static str, file: usize, flags: u32) {
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
fn paging_write_back(instance: usize, file: usize) {
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

extern "win64" fn flt_flush_buffers(instance: usize, file_object: *mut FileObject) -> i32 {
    guarded("FltFlushBuffers", STATUS_INVALID_PARAMETER, || {
        {
            let mut w = world();
            w.call("FltFlushBuffers", PASSIVE_LEVEL);
            flush_checks(&mut w, "FltFlushBuffers", file_object as usize, 0);
        }
        paging_write_back(instance, file_object as usize);
        STATUS_SUCCESS
    })
}

extern "win64" fn flt_flush_buffers2(
    instance: usize,
    file_object: *mut FileObject,
    flush_type: u32,
    _data: *mut FltCallbackData,
) -> i32 {
    guarded("FltFlushBuffers2", STATUS_INVALID_PARAMETER, || {
        {
            let mut w = world();
            w.call("FltFlushBuffers2", PASSIVE_LEVEL);
            if !w.has_flush2 {
                w.violation("FltFlushBuffers2 called although it did not resolve");
            }
            if flush_type & !0xF != 0 {
                w.violation(format!("FltFlushBuffers2 flush type 0x{flush_type:X}"));
            }
            flush_checks(&mut w, "FltFlushBuffers2", file_object as usize, flush_type);
        }
        paging_write_back(instance, file_object as usize);
        STATUS_SUCCESS
    })
}

extern "win64" fn flt_get_file_name_information(
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

extern "win64" fn flt_parse_file_name_information(information: *mut FltFileNameInformation) -> i32 {
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

extern "win64" fn flt_release_file_name_information(information: *mut FltFileNameInformation) {
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

extern "win64" fn flt_get_requestor_process(_data: *mut FltCallbackData) -> usize {
    guarded("FltGetRequestorProcess", 0, || {
        let mut w = world();
        w.call("FltGetRequestorProcess", DISPATCH_LEVEL);
        0xFFFF_9000_0000_0080 // an EPROCESS the harness never dereferences
    })
}

extern "win64" fn flt_get_routine_address(name: *const c_char) -> *mut c_void {
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

extern "win64" fn flt_get_volume_properties(
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

extern "win64" fn flt_is_operation_synchronous(data: *mut FltCallbackData) -> u8 {
    guarded("FltIsOperationSynchronous", 0, || {
        let mut w = world();
        w.call("FltIsOperationSynchronous", DISPATCH_LEVEL);
        u8::from(w.synchronous.contains(&(data as usize)))
    })
}

extern "win64" fn flt_set_callback_data_dirty(data: *mut FltCallbackData) {
    guarded("FltSetCallbackDataDirty", (), || {
        let mut w = world();
        w.call("FltSetCallbackDataDirty", DISPATCH_LEVEL);
        w.dirty.push(data as usize);
    })
}

/// The address the harness binds for `dll!name`, or `None` if it lacks the import.
pub fn resolve(dll: &str, name: &str) -> Option<usize> {
    let dll = dll.to_ascii_lowercase();
    let address = match (dll.as_str(), name) {
        ("ntoskrnl.exe", "DbgPrintEx") => dbg_print_ex as *const () as usize,
        ("ntoskrnl.exe", "ExAllocatePoolWithTag") => {
            ex_allocate_pool_with_tag as *const () as usize
        }
        ("ntoskrnl.exe", "ExAllocatePool2") => ex_allocate_pool2 as *const () as usize,
        ("ntoskrnl.exe", "ExFreePool") => ex_free_pool as *const () as usize,
        ("ntoskrnl.exe", "ExFreePoolWithTag") => ex_free_pool_with_tag as *const () as usize,
        ("ntoskrnl.exe", "FsRtlMupGetProviderIdFromName") => {
            fs_rtl_mup_get_provider_id_from_name as *const () as usize
        }
        ("ntoskrnl.exe", "FsRtlMupGetProviderInfoFromFileObject") => {
            fs_rtl_mup_get_provider_info_from_file_object as *const () as usize
        }
        ("ntoskrnl.exe", "IoGetTopLevelIrp") => io_get_top_level_irp as *const () as usize,
        ("ntoskrnl.exe", "KeAreAllApcsDisabled") => ke_are_all_apcs_disabled as *const () as usize,
        ("ntoskrnl.exe", "KeBugCheckEx") => ke_bug_check_ex as *const () as usize,
        ("ntoskrnl.exe", "KeGetCurrentIrql") => ke_get_current_irql as *const () as usize,
        ("ntoskrnl.exe", "KeQueryInterruptTimePrecise") => {
            ke_query_interrupt_time_precise as *const () as usize
        }
        ("ntoskrnl.exe", "KeQuerySystemTimePrecise") => {
            ke_query_system_time_precise as *const () as usize
        }
        ("ntoskrnl.exe", "MmGetSystemRoutineAddress") => {
            mm_get_system_routine_address as *const () as usize
        }
        ("ntoskrnl.exe", "MmUserProbeAddress") => {
            &MM_USER_PROBE_ADDRESS as *const usize as *const () as usize
        }
        ("ntoskrnl.exe", "ObOpenObjectByPointer") => {
            ob_open_object_by_pointer as *const () as usize
        }
        ("ntoskrnl.exe", "PsGetCurrentThreadId") => ps_get_current_thread_id as *const () as usize,
        ("ntoskrnl.exe", "SeLocateProcessImageName") => {
            se_locate_process_image_name as *const () as usize
        }
        ("ntoskrnl.exe", "ZwClose") => zw_close as *const () as usize,
        ("ntoskrnl.exe", "ZwCreateKey") => zw_create_key as *const () as usize,
        ("ntoskrnl.exe", "ZwFlushBuffersFileEx") => zw_flush_buffers_file_ex as *const () as usize,
        ("ntoskrnl.exe", "ZwOpenKey") => zw_open_key as *const () as usize,
        ("ntoskrnl.exe", "ZwQueryValueKey") => zw_query_value_key as *const () as usize,
        ("ntoskrnl.exe", "ZwSetValueKey") => zw_set_value_key as *const () as usize,
        ("ntoskrnl.exe", "__C_specific_handler") => c_specific_handler as *const () as usize,
        ("ntoskrnl.exe", "memcmp") => mem_cmp as *const () as usize,
        ("ntoskrnl.exe", "memcpy") => mem_cpy as *const () as usize,
        ("ntoskrnl.exe", "memset") => mem_set as *const () as usize,
        ("fltmgr.sys", "FltAllocateContext") => flt_allocate_context as *const () as usize,
        ("fltmgr.sys", "FltBuildDefaultSecurityDescriptor") => {
            flt_build_default_security_descriptor as *const () as usize
        }
        ("fltmgr.sys", "FltCloseClientPort") => flt_close_client_port as *const () as usize,
        ("fltmgr.sys", "FltCloseCommunicationPort") => {
            flt_close_communication_port as *const () as usize
        }
        ("fltmgr.sys", "FltCreateCommunicationPort") => {
            flt_create_communication_port as *const () as usize
        }
        ("fltmgr.sys", "FltDoCompletionProcessingWhenSafe") => {
            flt_do_completion_processing_when_safe as *const () as usize
        }
        ("fltmgr.sys", "FltFlushBuffers") => flt_flush_buffers as *const () as usize,
        ("fltmgr.sys", "FltFreeSecurityDescriptor") => {
            flt_free_security_descriptor as *const () as usize
        }
        ("fltmgr.sys", "FltGetFileNameInformation") => {
            flt_get_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltGetRequestorProcess") => flt_get_requestor_process as *const () as usize,
        ("fltmgr.sys", "FltGetRoutineAddress") => flt_get_routine_address as *const () as usize,
        ("fltmgr.sys", "FltGetStreamHandleContext") => {
            flt_get_stream_handle_context as *const () as usize
        }
        ("fltmgr.sys", "FltGetVolumeProperties") => flt_get_volume_properties as *const () as usize,
        ("fltmgr.sys", "FltIsOperationSynchronous") => {
            flt_is_operation_synchronous as *const () as usize
        }
        ("fltmgr.sys", "FltParseFileNameInformation") => {
            flt_parse_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltRegisterFilter") => flt_register_filter as *const () as usize,
        ("fltmgr.sys", "FltReleaseContext") => flt_release_context as *const () as usize,
        ("fltmgr.sys", "FltReleaseFileNameInformation") => {
            flt_release_file_name_information as *const () as usize
        }
        ("fltmgr.sys", "FltSetCallbackDataDirty") => {
            flt_set_callback_data_dirty as *const () as usize
        }
        ("fltmgr.sys", "FltSetStreamHandleContext") => {
            flt_set_stream_handle_context as *const () as usize
        }
        ("fltmgr.sys", "FltStartFiltering") => flt_start_filtering as *const () as usize,
        ("fltmgr.sys", "FltUnregisterFilter") => flt_unregister_filter as *const () as usize,
        _ => return None,
    };
    Some(address)
}

/// Filter Manager's side of closing a file object (IRP_MJ_CLOSE): its stream-handle
/// context references go.
pub fn close_file_object(instance: usize, file: usize) {
    let mut w = world();
    if let Some(context) = w.stream_handle_contexts.remove(&(instance, file)) {
        release_context_ref(&mut w, context, true);
    }
    w.files.remove(&file);
}

/// Registers a simulated file object.
pub fn add_file(address: usize, file: File) {
    world().files.insert(address, file);
}

/// The context memory stays referenced while contexts live (silences dead-code
/// analysis of the owning field).
pub fn context_bytes() -> usize {
    world().contexts.values().map(|c| c.memory.len() * 16).sum()
}
