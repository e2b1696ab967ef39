//! `flushguard.sys`: the kernel shell of FlushGuard, a file-system minifilter that makes
//! writes to network shares durable (DESIGN.md sections 1 and 2).
//!
//! Every decision lives in the safe, host-tested `flushguard-engine` crate; this crate only
//! translates between Filter Manager structures and that core. It holds the kernel's
//! `unsafe` code; the only other `unsafe` in the workspace is flushctl's Windows port
//! module (`user-tool/src/port/win.rs`: fltlib and Win32 calls) and the FFI
//! declarations of `driver/ntoskrnl-imports`. Each `unsafe` block does exactly one thing
//! and says why it is sound (`// SAFETY:`), enforced by the workspace lints.
//!
//! The kernel code compiles only for `x86_64-pc-windows-msvc`, where build.rs sets
//! `--cfg flushguard_kernel`; on every other target (the Linux host included) this crate
//! is an empty library so that `cargo build`/`cargo test --workspace` work everywhere.
//!
//! Layout (one file per role, as in Microsoft's minifilter samples):
//! - [`entry`]: `DriverEntry`, `FilterUnload`, setup and reverse-order teardown.
//! - [`registration`]: the `FLT_REGISTRATION` and operation tables.
//! - [`instance`]: `InstanceSetup` (network file systems only) and teardown queries.
//! - [`port`]: the `\FlushGuardPort` communication port and its callbacks.
//! - [`user_buffer`]: the only code that touches user memory, through the C SEH shim
//!   (`driver/seh/seh_copy.c`).
//! - [`pool`]: the global allocator over the kernel pool (tag `POOL_TAG`).
//! - [`globals`]: the filter handle and the engine's `Filter` (one place, as minispy's
//!   `MINISPY_DATA`).
//! - [`callbacks`]: the `extern "system"` operation callbacks (pointer conversion only).
//! - [`worker`]: FlushGuard's flush worker threads (`PsCreateSystemThread`) and their
//!   queue of pended asynchronous writes.
//! - [`fltmgr`]: the engine's `FilterManager` / `CallbackData` traits over FFI.
//! - [`locks`]: the `EX_SPIN_LOCK` and push lock behind the engine's policy locks.
//! - [`group`]: the `EX_SPIN_LOCK` and `KEVENT` pair of each group-commit coordinator.
//! - [`layout`]: `#[repr(C)]` mirrors of the structures the driver dereferences, each
//!   offset asserted against fltKernel.h / wdm.h (windows-sys's `FLT_PARAMETERS` is wrong).
#![cfg_attr(flushguard_kernel, no_std)]

#[cfg(flushguard_kernel)]
extern crate alloc;

#[cfg(flushguard_kernel)]
pub mod callbacks;
#[cfg(flushguard_kernel)]
pub mod entry;
#[cfg(flushguard_kernel)]
pub mod fltmgr;
// Only unoptimised builds reference these C-runtime symbols; keeping them out of release
// keeps the shipped image's export table to `DriverEntry`.
#[cfg(all(flushguard_kernel, debug_assertions))]
mod crt;
#[cfg(flushguard_kernel)]
pub mod globals;
#[cfg(flushguard_kernel)]
pub mod group;
#[cfg(flushguard_kernel)]
pub mod instance;
pub mod layout;
#[cfg(flushguard_kernel)]
pub mod locks;
#[cfg(flushguard_kernel)]
pub mod pool;
#[cfg(flushguard_kernel)]
pub mod port;
#[cfg(flushguard_kernel)]
pub mod registration;
#[cfg(flushguard_kernel)]
pub mod trace;
#[cfg(flushguard_kernel)]
pub mod unicode;
#[cfg(flushguard_kernel)]
pub mod user_buffer;
#[cfg(flushguard_kernel)]
pub mod worker;

/// Bug-check code raised if Rust code in the driver ever panics (driver-defined; the
/// parameters are the source line and column of the panic). A panic is a driver bug: the
/// I/O paths are written not to panic, so this only stops a corrupted state from spreading.
#[cfg(flushguard_kernel)]
pub const BUGCHECK_FLUSHGUARD_PANIC: u32 = 0xF1D5_0001;

#[cfg(flushguard_kernel)]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (line, column) = info
        .location()
        .map_or((0, 0), |location| (location.line(), location.column()));
    trace::error_with_value(c"panic, bug check follows; line", line as usize);
    // SAFETY: KeBugCheckEx may be called at any IRQL and never returns; the parameters are
    // plain integers.
    unsafe {
        flushguard_ntoskrnl_imports::KeBugCheckEx(
            BUGCHECK_FLUSHGUARD_PANIC,
            line as usize,
            column as usize,
            0,
            0,
        )
    }
}
