//! Kernel routines and data that `flushguard.sys` imports from `ntoskrnl.exe`.
//!
//! windows-sys 0.61 links a few kernel routines (`DbgPrintEx`, `ZwFlushBuffersFileEx`,
//! ...) to `ntdll.dll`, which a kernel driver cannot import. A `raw-dylib` declaration of
//! the same routine inside the driver crate silently loses to windows-sys's import, so the
//! declarations live here, in a crate of their own (DESIGN.md section 3). The driver calls
//! these instead of the windows-sys items of the same name, and `cargo xtask package`
//! rejects any image that still imports from a DLL other than `ntoskrnl.exe` and
//! `FLTMGR.SYS`.
//!
//! Every declaration follows its prototype in the WDK headers (`wdm.h`, `ntifs.h`); the
//! doc comment names the Microsoft DDI page. On any target other than
//! `x86_64-pc-windows-msvc` this crate is empty.
#![no_std]

#[cfg(all(windows, target_env = "msvc"))]
mod imp {
    use core::ffi::c_void;

    /// `IO_STATUS_BLOCK` (wdm.h): `Status` (NTSTATUS, pointer-sized union) and
    /// `Information` (bytes transferred or operation-specific value).
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct IoStatusBlock {
        /// Final NTSTATUS of the operation (the union's pointer member widens it to 8 bytes).
        pub status: isize,
        /// Operation-specific information; for I/O, bytes transferred.
        pub information: usize,
    }

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "system" {
        /// `ZwFlushBuffersFileEx` (ntifs.h, Windows 8+; DDI page "ZwFlushBuffersFileEx").
        /// Flushes a file opened by a kernel handle; `flags` are `FLUSH_FLAGS_*`.
        /// IRQL: PASSIVE_LEVEL with special kernel APCs enabled.
        pub fn ZwFlushBuffersFileEx(
            file_handle: *mut c_void,
            flags: u32,
            parameters: *const c_void,
            parameters_size: u32,
            io_status_block: *mut IoStatusBlock,
        ) -> i32;

        /// `ZwClose` (wdm.h; DDI page "ZwClose"): closes a kernel handle. Closing the last
        /// handle of a file object sends IRP_MJ_CLEANUP. IRQL: PASSIVE_LEVEL.
        pub fn ZwClose(handle: *mut c_void) -> i32;

        /// `PsCreateSystemThread` (wdm.h; DDI page "PsCreateSystemThread"): creates a
        /// system thread running `start_routine(start_context)` and returns a kernel
        /// handle to it (`process` NULL: in the system process; `object_attributes` and
        /// `client_id` may be NULL). Declared here because windows-sys 0.61 gives
        /// `PKSTART_ROUTINE` no context parameter and ties the routine to the
        /// `Win32_System_WindowsProgramming` feature. IRQL: PASSIVE_LEVEL.
        pub fn PsCreateSystemThread(
            thread_handle: *mut *mut c_void,
            desired_access: u32,
            object_attributes: *const c_void,
            process: *mut c_void,
            client_id: *mut c_void,
            start_routine: unsafe extern "system" fn(start_context: *mut c_void),
            start_context: *mut c_void,
        ) -> i32;

        /// `ZwWaitForSingleObject` (ntifs.h; DDI page "ZwWaitForSingleObject"): waits
        /// until the object behind a kernel `handle` (here a system thread FlushGuard
        /// created) is signalled (a thread: it terminated); `alertable` FALSE, `timeout`
        /// NULL = no timeout. IRQL: PASSIVE_LEVEL.
        pub fn ZwWaitForSingleObject(
            handle: *mut c_void,
            alertable: u8,
            timeout: *const i64,
        ) -> i32;

        /// `ZwOpenKey` (wdm.h; DDI page "ZwOpenKey"): opens a registry key named by
        /// `object_attributes` (an `OBJECT_ATTRIBUTES`) with `desired_access` (`KEY_*`).
        /// IRQL: PASSIVE_LEVEL.
        pub fn ZwOpenKey(
            key_handle: *mut *mut c_void,
            desired_access: u32,
            object_attributes: *const c_void,
        ) -> i32;

        /// `ZwCreateKey` (wdm.h; DDI page "ZwCreateKey"): opens or creates a registry
        /// key; `disposition` receives `REG_CREATED_NEW_KEY` (1) or
        /// `REG_OPENED_EXISTING_KEY` (2). IRQL: PASSIVE_LEVEL.
        pub fn ZwCreateKey(
            key_handle: *mut *mut c_void,
            desired_access: u32,
            object_attributes: *const c_void,
            title_index: u32,
            class: *const c_void,
            create_options: u32,
            disposition: *mut u32,
        ) -> i32;

        /// `ZwQueryValueKey` (wdm.h; DDI page "ZwQueryValueKey"): reads a value;
        /// `information_class` 2 = `KeyValuePartialInformation` (TitleIndex u32, Type
        /// u32, DataLength u32, Data). `result_length` in bytes. IRQL: PASSIVE_LEVEL.
        pub fn ZwQueryValueKey(
            key_handle: *mut c_void,
            value_name: *const c_void,
            information_class: i32,
            information: *mut c_void,
            length: u32,
            result_length: *mut u32,
        ) -> i32;

        /// `ZwSetValueKey` (wdm.h; DDI page "ZwSetValueKey"): writes a value of
        /// `value_type` (`REG_BINARY` 3), `data_size` bytes. IRQL: PASSIVE_LEVEL.
        pub fn ZwSetValueKey(
            key_handle: *mut c_void,
            value_name: *const c_void,
            title_index: u32,
            value_type: u32,
            data: *const c_void,
            data_size: u32,
        ) -> i32;

        /// `KeBugCheckEx` (wdm.h): stops the system with the given bug-check code and
        /// four parameters. Never returns. Any IRQL.
        pub fn KeBugCheckEx(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> !;

        /// `MmUserProbeAddress` (wdm.h data export, read by the `MM_USER_PROBE_ADDRESS`
        /// macro): the first address above the user-mode range. A user buffer
        /// `[p, p + len)` is in range when `p + len <= MmUserProbeAddress` without
        /// overflow. Constant after boot.
        pub static MmUserProbeAddress: usize;

        /// `__C_specific_handler`: the language-specific handler that clang and MSVC name
        /// in the unwind info of every function with `__try/__except`. In a driver it
        /// must come from ntoskrnl.exe (the SEH copy shim needs it). Never called by Rust.
        pub fn __C_specific_handler() -> i32;
    }

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "C" {
        /// `DbgPrintEx` (wdm.h): prints a `printf`-style message to the kernel debugger
        /// when `component_id`/`level` pass the debug filter. Any IRQL for `%s`-free
        /// formats at DISPATCH_LEVEL or below; returns an NTSTATUS.
        pub fn DbgPrintEx(
            component_id: u32,
            level: u32,
            format: *const core::ffi::c_char,
            ...
        ) -> u32;

        /// C runtime `memcpy`, exported by ntoskrnl.exe; code generation emits calls to it.
        pub fn memcpy(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;
        /// C runtime `memmove`, exported by ntoskrnl.exe.
        pub fn memmove(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;
        /// C runtime `memset`, exported by ntoskrnl.exe.
        pub fn memset(dest: *mut c_void, value: i32, count: usize) -> *mut c_void;
        /// C runtime `memcmp`, exported by ntoskrnl.exe.
        pub fn memcmp(left: *const c_void, right: *const c_void, count: usize) -> i32;
        /// C runtime `strlen`, exported by ntoskrnl.exe; unoptimised `core` code calls it.
        pub fn strlen(string: *const core::ffi::c_char) -> usize;
    }
}

#[cfg(all(windows, target_env = "msvc"))]
pub use imp::*;
