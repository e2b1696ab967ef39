//! The few C-runtime symbols that compiled Rust code references on
//! `x86_64-pc-windows-msvc` and that no kernel export provides (DESIGN.md section 3).
//!
//! The precompiled `core`/`alloc` libraries are built with `panic=unwind`, so in an
//! unoptimised build their cleanup funclets name `__CxxFrameHandler3` as personality
//! routine, and any floating-point use references `_fltused`. The memory and string
//! routines (`memcpy`, `strlen`, ...) are imported from ntoskrnl.exe by the
//! `flushguard-ntoskrnl-imports` crate instead.

use core::ffi::c_void;

/// `_fltused`: the MSVC linker's marker that floating point is used. Kernel code on x64
/// may use SSE registers without saving state (DDI page "Using Floating Point in a WDM
/// Driver"); FlushGuard's own code does not use floating point.
#[no_mangle]
#[used]
static _fltused: i32 = 0;

/// `EXCEPTION_DISPOSITION ExceptionContinueSearch` (excpt.h).
const EXCEPTION_CONTINUE_SEARCH: i32 = 1;

/// Personality routine named by the unwind info of unoptimised `core` code.
///
/// Rust frames are never unwound in this driver (`panic=abort`, and the SEH shim catches
/// its own faults inside C frames), so no exception is ever handled here: if the
/// dispatcher ever asks, the answer is `ExceptionContinueSearch` ("this frame does not
/// handle it"), which leaves the exception to the frames above. Any IRQL.
#[no_mangle]
extern "C" fn __CxxFrameHandler3(
    _exception_record: *mut c_void,
    _establisher_frame: *mut c_void,
    _context_record: *mut c_void,
    _dispatcher_context: *mut c_void,
) -> i32 {
    EXCEPTION_CONTINUE_SEARCH
}
