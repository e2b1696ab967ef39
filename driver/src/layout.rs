//! The driver's own `#[repr(C)]` mirrors of the Filter Manager and I/O manager
//! structures it dereferences, each offset checked at compile time against the header.
//!
//! Why not windows-sys: windows-sys 0.61 declares every struct member of `FLT_PARAMETERS`
//! `#[repr(C, packed(4))]` and drops fltKernel.h's `POINTER_ALIGNMENT`
//! (`DECLSPEC_ALIGN(8)` on AMD64), so it places `Write.ByteOffset` at +8 (real: +16),
//! `FileSystemControl.Common.FsControlCode` at +8 (real: +16) and
//! `SetFileInformation.FileInformationClass` at +4 (real: +8). The same metadata bug is
//! known upstream (microsoft/windows-rs #3525, microsoft/wdkmetadata #88). Reading those
//! members through windows-sys returns the wrong field; `clippy.toml` therefore forbids
//! `FLT_PARAMETERS` and `FLT_IO_PARAMETER_BLOCK` from windows-sys in this crate.
//!
//! Sources (x86_64, the only target): fltKernel.h (`FLT_CALLBACK_DATA`,
//! `FLT_IO_PARAMETER_BLOCK`, `FLT_PARAMETERS`, `FLT_RELATED_OBJECTS`) and wdm.h
//! (`FILE_OBJECT`, `IO_STATUS_BLOCK`); the member lists are those of the DDI pages
//! "FLT_CALLBACK_DATA structure", "FLT_IO_PARAMETER_BLOCK structure", "FLT_PARAMETERS for
//! IRP_MJ_CREATE / IRP_MJ_WRITE / IRP_MJ_FILE_SYSTEM_CONTROL / IRP_MJ_SET_INFORMATION
//! union" and "FILE_OBJECT structure". `POINTER_ALIGNMENT` members are written here as
//! an explicit `u32` padding member before them, so the offsets can be read off the source.
//!
//! The types hold only integers and raw pointers and compile on every target; the
//! assertions below run on the Linux host build as well as the kernel build. Only
//! members the driver reads or writes are named; the rest are `_reserved*` so that sizes
//! and offsets stay exact.
#![allow(non_snake_case)] // member names are the header's, for auditability.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;

/// `IO_STATUS_BLOCK` (wdm.h): `Status` (the NTSTATUS member of the union with `Pointer`)
/// at +0, `Information` at +8; 16 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoStatusBlock {
    /// Completion status (`NTSTATUS`), valid in post-operation callbacks.
    pub Status: i32,
    _reserved_pointer_high: u32,
    /// Operation-specific (bytes transferred for a write).
    pub Information: usize,
}

/// `FLT_CALLBACK_DATA` (fltKernel.h); 88 bytes.
#[repr(C)]
pub struct FltCallbackData {
    /// `FLTFL_CALLBACK_DATA_*` flags (e.g. `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`).
    pub Flags: u32,
    _reserved_align: u32,
    /// `PETHREAD` of the thread that initiated the operation.
    pub Thread: *mut c_void,
    /// The operation's parameter block.
    pub Iopb: *mut FltIoParameterBlock,
    /// Completion status; valid in post-operation callbacks.
    pub IoStatus: IoStatusBlock,
    _reserved_tag_data: *mut c_void,
    _reserved_filter_context: [*mut c_void; 4],
    /// `KPROCESSOR_MODE` of the requestor (`KernelMode` = 0, `UserMode` = 1).
    pub RequestorMode: i8,
}

/// `FLT_IO_PARAMETER_BLOCK` (fltKernel.h); 72 bytes.
#[repr(C)]
pub struct FltIoParameterBlock {
    /// `IRP_*` flags of the IRP (e.g. `IRP_PAGING_IO`, `IRP_SYNCHRONOUS_PAGING_IO`).
    pub IrpFlags: u32,
    /// `IRP_MJ_*`.
    pub MajorFunction: u8,
    /// `IRP_MN_*` (for IRP_MJ_FLUSH_BUFFERS: the `IRP_MN_FLUSH_*` flush type).
    pub MinorFunction: u8,
    /// `SL_*` stack-location flags (e.g. `SL_WRITE_THROUGH`).
    pub OperationFlags: u8,
    _reserved: u8,
    /// `PFILE_OBJECT` the operation targets.
    pub TargetFileObject: *mut c_void,
    /// `PFLT_INSTANCE` the operation is sent to.
    pub TargetInstance: *mut c_void,
    /// Operation-specific parameters; the active member is chosen by `MajorFunction`.
    pub Parameters: FltParameters,
}

/// `FLT_PARAMETERS` (fltKernel.h), the members the driver uses; 48 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FltParameters {
    /// Active for IRP_MJ_CREATE.
    pub Create: FltCreateParameters,
    /// Active for IRP_MJ_WRITE.
    pub Write: FltWriteParameters,
    /// Active for IRP_MJ_FILE_SYSTEM_CONTROL (the `Common` member of the inner union).
    pub FileSystemControl: FltFileSystemControlParameters,
    /// Active for IRP_MJ_SET_INFORMATION.
    pub SetFileInformation: FltSetFileInformationParameters,
    /// `Others`: sizes the union as the header does (five pointers and a LARGE_INTEGER).
    pub Others: [u64; 6],
}

/// `FLT_PARAMETERS.Create` (FLT_PARAMETERS for IRP_MJ_CREATE union).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltCreateParameters {
    /// `PIO_SECURITY_CONTEXT`.
    pub SecurityContext: *mut c_void,
    /// Create options (low 24 bits, `FILE_WRITE_THROUGH` = 0x2, ...) and the create
    /// disposition (high 8 bits).
    pub Options: u32,
    _reserved_align1: u32,
    /// `FileAttributes` (USHORT, `POINTER_ALIGNMENT`).
    pub FileAttributes: u16,
    /// `ShareAccess` (USHORT).
    pub ShareAccess: u16,
    _reserved_align2: u32,
    /// `EaLength` (ULONG, `POINTER_ALIGNMENT`).
    pub EaLength: u32,
    _reserved_align3: u32,
    /// `EaBuffer`.
    pub EaBuffer: *mut c_void,
    /// `AllocationSize` (LARGE_INTEGER), bytes.
    pub AllocationSize: i64,
}

/// `FLT_PARAMETERS.Write` (FLT_PARAMETERS for IRP_MJ_WRITE union).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltWriteParameters {
    /// Bytes to write.
    pub Length: u32,
    _reserved_align: u32,
    /// Byte-range lock key (ULONG, `POINTER_ALIGNMENT`).
    pub Key: u32,
    _reserved_align2: u32,
    /// Starting byte offset in the file (LARGE_INTEGER; -1 with the high part -1 means
    /// "current position" / `FILE_WRITE_TO_END_OF_FILE` for the file system).
    pub ByteOffset: i64,
    /// The data (may be a user address).
    pub WriteBuffer: *mut c_void,
    /// `PMDL` describing `WriteBuffer`, or NULL.
    pub MdlAddress: *mut c_void,
}

/// `FLT_PARAMETERS.FileSystemControl.Common` (FLT_PARAMETERS for
/// IRP_MJ_FILE_SYSTEM_CONTROL union).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltFileSystemControlParameters {
    /// Output buffer length, bytes.
    pub OutputBufferLength: u32,
    _reserved_align1: u32,
    /// Input buffer length, bytes (ULONG, `POINTER_ALIGNMENT`).
    pub InputBufferLength: u32,
    _reserved_align2: u32,
    /// `FSCTL_*` code (ULONG, `POINTER_ALIGNMENT`), for IRP_MN_USER_FS_REQUEST.
    pub FsControlCode: u32,
}

/// `FLT_PARAMETERS.SetFileInformation` (FLT_PARAMETERS for IRP_MJ_SET_INFORMATION
/// union).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltSetFileInformationParameters {
    /// Length of `InfoBuffer`, bytes.
    pub Length: u32,
    _reserved_align: u32,
    /// `FILE_INFORMATION_CLASS` (an enum, 4 bytes; `POINTER_ALIGNMENT`).
    pub FileInformationClass: i32,
    _reserved_align2: u32,
    /// `PFILE_OBJECT` of the target directory (rename, link), or NULL.
    pub ParentOfTarget: *mut c_void,
    /// The `ReplaceIfExists`/`AdvanceOnly` / `ClusterCount` / `DeleteHandle` union.
    pub DeleteHandle: *mut c_void,
    /// The information buffer.
    pub InfoBuffer: *mut c_void,
}

/// `FLT_RELATED_OBJECTS` (fltKernel.h); 48 bytes.
#[repr(C)]
pub struct FltRelatedObjects {
    /// Size of this structure, bytes.
    pub Size: u16,
    /// `TransactionContext` (USHORT).
    pub TransactionContext: u16,
    _reserved_align: u32,
    /// `PFLT_FILTER` (an opaque pointer; `isize` as windows-sys's `PFLT_FILTER`).
    pub Filter: isize,
    /// `PFLT_VOLUME` (opaque; `isize` as windows-sys's `PFLT_VOLUME`).
    pub Volume: isize,
    /// `PFLT_INSTANCE` (opaque; `isize` as windows-sys's `PFLT_INSTANCE`).
    pub Instance: isize,
    /// `PFILE_OBJECT`.
    pub FileObject: *mut c_void,
    /// `PKTRANSACTION`.
    pub Transaction: *mut c_void,
}

/// The leading members of `FILE_OBJECT` (wdm.h) up to `Flags`; the driver never needs
/// the rest, and only ever reads a `FILE_OBJECT` through a pointer.
#[repr(C)]
pub struct FileObjectPrefix {
    /// `CSHORT Type` (IO_TYPE_FILE = 5).
    pub Type: i16,
    /// `CSHORT Size`.
    pub Size: i16,
    _reserved_align: u32,
    /// `DeviceObject`, `Vpb`.
    _reserved_device_vpb: [*mut c_void; 2],
    /// `FsContext`: the file system's per-stream control block, the same for every
    /// file object of one stream (the group-commit stream key; only compared).
    pub FsContext: *mut c_void,
    /// `FsContext2`, `SectionObjectPointer`, `PrivateCacheMap`.
    _reserved_pointers: [*mut c_void; 3],
    /// `FinalStatus` (NTSTATUS).
    pub FinalStatus: i32,
    _reserved_align2: u32,
    /// `RelatedFileObject`.
    pub RelatedFileObject: *mut c_void,
    _reserved_booleans: [u8; 8],
    /// `FO_*` flags (e.g. `FO_SYNCHRONOUS_IO`, `FO_WRITE_THROUGH`, `FO_CLEANUP_COMPLETE`).
    pub Flags: u32,
}

// Offsets from fltKernel.h / wdm.h for AMD64 (pointer = 8 bytes, POINTER_ALIGNMENT = 8).
const_assert_eq!(size_of::<IoStatusBlock>(), 16);
const_assert_eq!(offset_of!(IoStatusBlock, Information), 8);

const_assert_eq!(offset_of!(FltCallbackData, Flags), 0);
const_assert_eq!(offset_of!(FltCallbackData, Thread), 8);
const_assert_eq!(offset_of!(FltCallbackData, Iopb), 16);
const_assert_eq!(offset_of!(FltCallbackData, IoStatus), 24);
const_assert_eq!(offset_of!(FltCallbackData, _reserved_tag_data), 40);
const_assert_eq!(offset_of!(FltCallbackData, _reserved_filter_context), 48);
const_assert_eq!(offset_of!(FltCallbackData, RequestorMode), 80);
const_assert_eq!(size_of::<FltCallbackData>(), 88);

const_assert_eq!(offset_of!(FltIoParameterBlock, IrpFlags), 0);
const_assert_eq!(offset_of!(FltIoParameterBlock, MajorFunction), 4);
const_assert_eq!(offset_of!(FltIoParameterBlock, MinorFunction), 5);
const_assert_eq!(offset_of!(FltIoParameterBlock, OperationFlags), 6);
const_assert_eq!(offset_of!(FltIoParameterBlock, TargetFileObject), 8);
const_assert_eq!(offset_of!(FltIoParameterBlock, TargetInstance), 16);
const_assert_eq!(offset_of!(FltIoParameterBlock, Parameters), 24);
const_assert_eq!(size_of::<FltIoParameterBlock>(), 72);
const_assert_eq!(size_of::<FltParameters>(), 48);

const_assert_eq!(offset_of!(FltCreateParameters, SecurityContext), 0);
const_assert_eq!(offset_of!(FltCreateParameters, Options), 8);
const_assert_eq!(offset_of!(FltCreateParameters, FileAttributes), 16);
const_assert_eq!(offset_of!(FltCreateParameters, ShareAccess), 18);
const_assert_eq!(offset_of!(FltCreateParameters, EaLength), 24);
const_assert_eq!(offset_of!(FltCreateParameters, EaBuffer), 32);
const_assert_eq!(offset_of!(FltCreateParameters, AllocationSize), 40);

const_assert_eq!(offset_of!(FltWriteParameters, Length), 0);
const_assert_eq!(offset_of!(FltWriteParameters, Key), 8);
const_assert_eq!(offset_of!(FltWriteParameters, ByteOffset), 16);
const_assert_eq!(offset_of!(FltWriteParameters, WriteBuffer), 24);
const_assert_eq!(offset_of!(FltWriteParameters, MdlAddress), 32);

const_assert_eq!(
    offset_of!(FltFileSystemControlParameters, OutputBufferLength),
    0
);
const_assert_eq!(
    offset_of!(FltFileSystemControlParameters, InputBufferLength),
    8
);
const_assert_eq!(
    offset_of!(FltFileSystemControlParameters, FsControlCode),
    16
);

const_assert_eq!(offset_of!(FltSetFileInformationParameters, Length), 0);
const_assert_eq!(
    offset_of!(FltSetFileInformationParameters, FileInformationClass),
    8
);
const_assert_eq!(
    offset_of!(FltSetFileInformationParameters, ParentOfTarget),
    16
);
const_assert_eq!(
    offset_of!(FltSetFileInformationParameters, DeleteHandle),
    24
);
const_assert_eq!(offset_of!(FltSetFileInformationParameters, InfoBuffer), 32);

const_assert_eq!(offset_of!(FltRelatedObjects, Size), 0);
const_assert_eq!(offset_of!(FltRelatedObjects, TransactionContext), 2);
const_assert_eq!(offset_of!(FltRelatedObjects, Filter), 8);
const_assert_eq!(offset_of!(FltRelatedObjects, Volume), 16);
const_assert_eq!(offset_of!(FltRelatedObjects, Instance), 24);
const_assert_eq!(offset_of!(FltRelatedObjects, FileObject), 32);
const_assert_eq!(offset_of!(FltRelatedObjects, Transaction), 40);
const_assert_eq!(size_of::<FltRelatedObjects>(), 48);

const_assert_eq!(offset_of!(FileObjectPrefix, FsContext), 24);
const_assert_eq!(offset_of!(FileObjectPrefix, FinalStatus), 56);
const_assert_eq!(offset_of!(FileObjectPrefix, RelatedFileObject), 64);
const_assert_eq!(offset_of!(FileObjectPrefix, Flags), 80);

/// Cross-checks against windows-sys where its declaration is right (the kernel build):
/// the structures the driver passes to or receives from Filter Manager by pointer but
/// does not mirror. A future windows-sys whose layout moves fails the build here.
#[cfg(flushguard_kernel)]
mod windows_sys_audit {
    use core::mem::{offset_of, size_of};

    use static_assertions::const_assert_eq;
    use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FLT_CALLBACK_DATA, FLT_CONTEXT_REGISTRATION, FLT_FILE_NAME_INFORMATION,
        FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_RELATED_OBJECTS, FLT_VOLUME_PROPERTIES,
    };

    // The callback signatures use windows-sys's pointer types; the pointees are cast to
    // the mirrors above, so the sizes must agree.
    const_assert_eq!(
        size_of::<FLT_CALLBACK_DATA>(),
        size_of::<super::FltCallbackData>()
    );
    const_assert_eq!(
        size_of::<FLT_RELATED_OBJECTS>(),
        size_of::<super::FltRelatedObjects>()
    );
    const_assert_eq!(offset_of!(FILE_OBJECT, Flags), 80);
    const_assert_eq!(offset_of!(FILE_OBJECT, FsContext), 24);
    const_assert_eq!(
        offset_of!(FILE_OBJECT, FsContext),
        offset_of!(super::FileObjectPrefix, FsContext)
    );

    // FLT_REGISTRATION (FLT_REGISTRATION_VERSION_0203), fltKernel.h.
    const_assert_eq!(offset_of!(FLT_REGISTRATION, Size), 0);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, Version), 2);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, Flags), 4);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, ContextRegistration), 8);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, OperationRegistration), 16);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, FilterUnloadCallback), 24);
    const_assert_eq!(offset_of!(FLT_REGISTRATION, InstanceSetupCallback), 32);
    const_assert_eq!(
        offset_of!(FLT_REGISTRATION, InstanceQueryTeardownCallback),
        40
    );
    const_assert_eq!(
        offset_of!(FLT_REGISTRATION, InstanceTeardownStartCallback),
        48
    );
    const_assert_eq!(
        offset_of!(FLT_REGISTRATION, InstanceTeardownCompleteCallback),
        56
    );
    const_assert_eq!(
        offset_of!(FLT_REGISTRATION, SectionNotificationCallback),
        104
    );
    const_assert_eq!(size_of::<FLT_REGISTRATION>(), 112);
    // FLT_OPERATION_REGISTRATION.
    const_assert_eq!(offset_of!(FLT_OPERATION_REGISTRATION, Flags), 4);
    const_assert_eq!(offset_of!(FLT_OPERATION_REGISTRATION, PreOperation), 8);
    const_assert_eq!(offset_of!(FLT_OPERATION_REGISTRATION, PostOperation), 16);
    const_assert_eq!(size_of::<FLT_OPERATION_REGISTRATION>(), 32);
    // FLT_CONTEXT_REGISTRATION.
    const_assert_eq!(
        offset_of!(FLT_CONTEXT_REGISTRATION, ContextCleanupCallback),
        8
    );
    const_assert_eq!(offset_of!(FLT_CONTEXT_REGISTRATION, Size), 16);
    const_assert_eq!(offset_of!(FLT_CONTEXT_REGISTRATION, PoolTag), 24);
    const_assert_eq!(size_of::<FLT_CONTEXT_REGISTRATION>(), 56);
    // FLT_VOLUME_PROPERTIES (fixed part): DeviceType, then FileSystemDriverName.
    const_assert_eq!(offset_of!(FLT_VOLUME_PROPERTIES, DeviceType), 0);
    const_assert_eq!(offset_of!(FLT_VOLUME_PROPERTIES, FileSystemDriverName), 24);
    // FLT_FILE_NAME_INFORMATION.
    const_assert_eq!(offset_of!(FLT_FILE_NAME_INFORMATION, Name), 8);
    const_assert_eq!(offset_of!(FLT_FILE_NAME_INFORMATION, Volume), 24);
    const_assert_eq!(offset_of!(FLT_FILE_NAME_INFORMATION, Share), 40);
    const_assert_eq!(offset_of!(FLT_FILE_NAME_INFORMATION, ParentDir), 104);
    // OBJECT_ATTRIBUTES (wdm.h / ntdef.h).
    const_assert_eq!(offset_of!(OBJECT_ATTRIBUTES, ObjectName), 16);
    const_assert_eq!(offset_of!(OBJECT_ATTRIBUTES, Attributes), 24);
    const_assert_eq!(size_of::<OBJECT_ATTRIBUTES>(), 48);
}

/// windows-sys's declarations of the members mirrored above, pinned: when this test
/// fails, windows-sys fixed its `FLT_PARAMETERS` layout and the mirrors may be replaced
/// by the bindings again (after checking them against the assertions above).
#[cfg(all(test, not(flushguard_kernel)))]
mod windows_sys_known_wrong {
    use core::mem::offset_of;

    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_PARAMETERS_4, FLT_PARAMETERS_6};

    #[test]
    fn windows_sys_flt_parameters_write_byte_offset_is_misplaced() {
        // fltKernel.h: +16 (Key is POINTER_ALIGNMENT); windows-sys 0.61: packed(4), +8.
        assert_eq!(offset_of!(FLT_PARAMETERS_4, ByteOffset), 8);
        assert_eq!(offset_of!(super::FltWriteParameters, ByteOffset), 16);
    }

    #[test]
    fn windows_sys_flt_parameters_set_information_class_is_misplaced() {
        assert_eq!(offset_of!(FLT_PARAMETERS_6, FileInformationClass), 4);
        assert_eq!(
            offset_of!(super::FltSetFileInformationParameters, FileInformationClass),
            8
        );
    }
}
