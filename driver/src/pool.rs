//! The driver's global allocator: non-paged, no-execute kernel pool tagged with
//! [`flushguard_protocol::POOL_TAG`].
//!
//! The engine (`flushguard-engine`, `no_std + alloc`) allocates through this allocator;
//! allocations may happen at IRQL <= DISPATCH_LEVEL, so the pool is non-paged.
//!
//! - Windows 10 2004 and later: `ExAllocatePool2(POOL_FLAG_NON_PAGED, size, tag)` (DDI page
//!   "ExAllocatePool2"; zeroed, NX). It is resolved at `DriverEntry` with
//!   `MmGetSystemRoutineAddress`, because importing it would keep the driver from loading
//!   on Windows 10 1903/1909, which FlushGuard supports.
//! - Older systems: `ExAllocatePoolWithTag(NonPagedPoolNx, size, tag)`.
//! - Freeing: `ExFreePoolWithTag(pointer, tag)` (valid for both).
//!
//! Pool blocks are aligned to `MEMORY_ALLOCATION_ALIGNMENT` (16 bytes on x64); a layout
//! with a larger alignment gets a null pointer (an allocation failure the caller handles),
//! never a misaligned block.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering};

use flushguard_protocol::POOL_TAG;
use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::System::SystemServices::{
    ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress,
};

use crate::unicode::{ascii_to_utf16, unicode_string};

/// `POOL_FLAG_NON_PAGED` (wdm.h): non-paged, non-executable pool for `ExAllocatePool2`.
pub const POOL_FLAG_NON_PAGED: u64 = 0x0000_0000_0000_0040;

/// `MEMORY_ALLOCATION_ALIGNMENT` (ntdef.h) on x64: every pool block's alignment, in bytes.
pub const MEMORY_ALLOCATION_ALIGNMENT: usize = 16;

/// Signature of `ExAllocatePool2` (wdm.h): `(POOL_FLAGS, SIZE_T bytes, ULONG tag) -> PVOID`.
type ExAllocatePool2Fn = unsafe extern "system" fn(u64, usize, u32) -> *mut c_void;

/// `ExAllocatePool2`, once [`init`] found it; null before `init` or on systems without it.
static EX_ALLOCATE_POOL2: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// UTF-16 of `"ExAllocatePool2"` for `MmGetSystemRoutineAddress`.
static EX_ALLOCATE_POOL2_NAME: [u16; 15] = ascii_to_utf16("ExAllocatePool2");

/// Resolves `ExAllocatePool2`. Call once at the start of `DriverEntry`, before anything
/// allocates. IRQL: PASSIVE_LEVEL (`MmGetSystemRoutineAddress`).
pub fn init() {
    let name = unicode_string(&EX_ALLOCATE_POOL2_NAME);
    // SAFETY: PASSIVE_LEVEL (DriverEntry); `name` points to a UTF-16 buffer of the stated
    // length that lives for the whole call and is only read.
    let routine = unsafe { MmGetSystemRoutineAddress(&name) };
    EX_ALLOCATE_POOL2.store(routine, Ordering::Release);
}

/// The kernel-pool allocator; installed as `#[global_allocator]`.
pub struct KernelPool;

// SAFETY: `alloc` returns either null or a fresh pool block of at least `layout.size()`
// bytes aligned to MEMORY_ALLOCATION_ALIGNMENT (checked against `layout.align()`), and
// `dealloc` returns exactly such blocks to the pool with the same tag.
unsafe impl GlobalAlloc for KernelPool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > MEMORY_ALLOCATION_ALIGNMENT {
            return null_mut();
        }
        let routine = EX_ALLOCATE_POOL2.load(Ordering::Acquire);
        if routine.is_null() {
            // SAFETY: non-paged pool may be allocated at IRQL <= DISPATCH_LEVEL; the size
            // is non-zero (GlobalAlloc contract) and the tag is a constant.
            return unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, layout.size(), POOL_TAG) }
                .cast();
        }
        // SAFETY: `routine` is the address MmGetSystemRoutineAddress returned for
        // "ExAllocatePool2", whose prototype is `ExAllocatePool2Fn`.
        let allocate: ExAllocatePool2Fn = unsafe { core::mem::transmute(routine) };
        // SAFETY: as above for IRQL and size; POOL_FLAG_NON_PAGED is a valid flag set.
        unsafe { allocate(POOL_FLAG_NON_PAGED, layout.size(), POOL_TAG) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above (GlobalAlloc contract), i.e. from the pool
        // with POOL_TAG; freeing non-paged pool is allowed at IRQL <= DISPATCH_LEVEL.
        unsafe { ExFreePoolWithTag(ptr.cast(), POOL_TAG) }
    }
}

#[global_allocator]
static ALLOCATOR: KernelPool = KernelPool;
