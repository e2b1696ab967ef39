//! The harness's own `#[repr(C)]` declarations of the kernel structures it builds for
//! the driver or reads from it, from fltKernel.h / wdm.h / ntdef.h for AMD64.
//!
//! Declared here, independently of the driver's `driver/src/layout.rs` and of
//! windows-sys (whose `FLT_PARAMETERS` layout is wrong, microsoft/windows-rs #3525):
//! a harness that shared the driver's mistakes would prove nothing. Every offset the
//! harness uses is asserted below against the header (pointer = 8 bytes,
//! `POINTER_ALIGNMENT` = 8 on AMD64). `POINTER_ALIGNMENT` members are preceded by an
//! explicit `u32` padding member, so the offsets can be read off the source.
#![allow(non_snake_case)] // member names are the header's, for auditability.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;

/// `UNICODE_STRING` (ntdef.h): lengths in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnicodeString {
    /// Bytes in use (no terminator).
    pub Length: u16,
    /// Bytes allocated.
    pub MaximumLength: u16,
    /// UTF-16 code units.
    pub Buffer: *mut u16,
}

/// `OBJECT_ATTRIBUTES` (ntdef.h).
#[repr(C)]
pub struct ObjectAttributes {
    /// Size of the structure, bytes.
    pub Length: u32,
    /// Root directory handle.
    pub RootDirectory: *mut c_void,
    /// `PUNICODE_STRING` name.
    pub ObjectName: *const UnicodeString,
    /// `OBJ_*` flags.
    pub Attributes: u32,
    /// `PSECURITY_DESCRIPTOR`.
    pub SecurityDescriptor: *mut c_void,
    /// `PSECURITY_QUALITY_OF_SERVICE`.
    pub SecurityQualityOfService: *mut c_void,
}

/// `IO_STATUS_BLOCK` (wdm.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoStatusBlock {
    /// `Status` (the NTSTATUS member of the union with `Pointer`).
    pub Status: i32,
    /// High half of the union with `Pointer`.
    pub _pointer_high: u32,
    /// `Information`.
    pub Information: usize,
}

/// `DRIVER_OBJECT` (wdm.h); the harness only allocates it and names it.
#[repr(C)]
pub struct DriverObject {
    /// `IO_TYPE_DRIVER` (4).
    pub Type: i16,
    /// Size in bytes.
    pub Size: i16,
    /// `DeviceObject`.
    pub DeviceObject: *mut c_void,
    /// `Flags`.
    pub Flags: u32,
    /// `DriverStart`: the image base.
    pub DriverStart: *mut c_void,
    /// `DriverSize`: the image size in bytes.
    pub DriverSize: u32,
    /// `DriverSection`.
    pub DriverSection: *mut c_void,
    /// `DriverExtension`.
    pub DriverExtension: *mut c_void,
    /// `DriverName`.
    pub DriverName: UnicodeString,
    /// `HardwareDatabase`.
    pub HardwareDatabase: *mut UnicodeString,
    /// `FastIoDispatch`.
    pub FastIoDispatch: *mut c_void,
    /// `DriverInit`.
    pub DriverInit: *mut c_void,
    /// `DriverStartIo`.
    pub DriverStartIo: *mut c_void,
    /// `DriverUnload`.
    pub DriverUnload: *mut c_void,
    /// `MajorFunction[IRP_MJ_MAXIMUM_FUNCTION + 1]`.
    pub MajorFunction: [*mut c_void; 28],
}

/// `FLT_REGISTRATION` (fltKernel.h, `FLT_REGISTRATION_VERSION_0203`).
#[repr(C)]
pub struct FltRegistration {
    /// `sizeof(FLT_REGISTRATION)`.
    pub Size: u16,
    /// `FLT_REGISTRATION_VERSION`.
    pub Version: u16,
    /// `FLTFL_REGISTRATION_*`.
    pub Flags: u32,
    /// `const FLT_CONTEXT_REGISTRATION *`, terminated by `FLT_CONTEXT_END`.
    pub ContextRegistration: *const FltContextRegistration,
    /// `const FLT_OPERATION_REGISTRATION *`, terminated by `IRP_MJ_OPERATION_END`.
    pub OperationRegistration: *const FltOperationRegistration,
    /// `PFLT_FILTER_UNLOAD_CALLBACK`.
    pub FilterUnloadCallback: usize,
    /// `PFLT_INSTANCE_SETUP_CALLBACK`.
    pub InstanceSetupCallback: usize,
    /// `PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK`.
    pub InstanceQueryTeardownCallback: usize,
    /// `PFLT_INSTANCE_TEARDOWN_CALLBACK` (start).
    pub InstanceTeardownStartCallback: usize,
    /// `PFLT_INSTANCE_TEARDOWN_CALLBACK` (complete).
    pub InstanceTeardownCompleteCallback: usize,
    /// `PFLT_GENERATE_FILE_NAME`.
    pub GenerateFileNameCallback: usize,
    /// `PFLT_NORMALIZE_NAME_COMPONENT`.
    pub NormalizeNameComponentCallback: usize,
    /// `PFLT_NORMALIZE_CONTEXT_CLEANUP`.
    pub NormalizeContextCleanupCallback: usize,
    /// `PFLT_TRANSACTION_NOTIFICATION_CALLBACK`.
    pub TransactionNotificationCallback: usize,
    /// `PFLT_NORMALIZE_NAME_COMPONENT_EX`.
    pub NormalizeNameComponentExCallback: usize,
    /// `PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK`.
    pub SectionNotificationCallback: usize,
}

/// `FLT_OPERATION_REGISTRATION` (fltKernel.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltOperationRegistration {
    /// `IRP_MJ_*`, `IRP_MJ_OPERATION_END` (0x80) terminates the table.
    pub MajorFunction: u8,
    /// `FLTFL_OPERATION_REGISTRATION_*`.
    pub Flags: u32,
    /// `PFLT_PRE_OPERATION_CALLBACK` or NULL.
    pub PreOperation: usize,
    /// `PFLT_POST_OPERATION_CALLBACK` or NULL.
    pub PostOperation: usize,
    /// `Reserved1`.
    pub Reserved1: usize,
}

/// `FLT_CONTEXT_REGISTRATION` (fltKernel.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltContextRegistration {
    /// `FLT_*_CONTEXT`; `FLT_CONTEXT_END` (0xFFFF) terminates the table.
    pub ContextType: u16,
    /// `FLTFL_CONTEXT_REGISTRATION_*`.
    pub Flags: u16,
    /// `PFLT_CONTEXT_CLEANUP_CALLBACK`.
    pub ContextCleanupCallback: usize,
    /// Context size in bytes (or `FLT_VARIABLE_SIZED_CONTEXTS`).
    pub Size: usize,
    /// Pool tag.
    pub PoolTag: u32,
    /// `PFLT_CONTEXT_ALLOCATE_CALLBACK`.
    pub ContextAllocateCallback: usize,
    /// `PFLT_CONTEXT_FREE_CALLBACK`.
    pub ContextFreeCallback: usize,
    /// `Reserved1`.
    pub Reserved1: usize,
}

/// `FLT_CALLBACK_DATA` (fltKernel.h).
#[repr(C)]
pub struct FltCallbackData {
    /// `FLTFL_CALLBACK_DATA_*`.
    pub Flags: u32,
    /// `PETHREAD`.
    pub Thread: *mut c_void,
    /// `PFLT_IO_PARAMETER_BLOCK`.
    pub Iopb: *mut FltIoParameterBlock,
    /// `IoStatus`.
    pub IoStatus: IoStatusBlock,
    /// `TagData`.
    pub TagData: *mut c_void,
    /// `FilterContext[4]` (union with `QueueLinks`/`QueueContext`).
    pub FilterContext: [*mut c_void; 4],
    /// `KPROCESSOR_MODE RequestorMode`.
    pub RequestorMode: i8,
}

/// `FLT_PARAMETERS.Create` (fltKernel.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltCreateParameters {
    /// `PIO_SECURITY_CONTEXT`.
    pub SecurityContext: *mut c_void,
    /// `ULONG Options` (`POINTER_ALIGNMENT`).
    pub Options: u32,
    /// Padding before the next `POINTER_ALIGNMENT` member.
    pub _align1: u32,
    /// `USHORT FileAttributes` (`POINTER_ALIGNMENT`).
    pub FileAttributes: u16,
    /// `USHORT ShareAccess`.
    pub ShareAccess: u16,
    /// Padding.
    pub _align2: u32,
    /// `ULONG EaLength` (`POINTER_ALIGNMENT`).
    pub EaLength: u32,
    /// Padding.
    pub _align3: u32,
    /// `PVOID EaBuffer`.
    pub EaBuffer: *mut c_void,
    /// `LARGE_INTEGER AllocationSize`.
    pub AllocationSize: i64,
}

/// `FLT_PARAMETERS.Write` (fltKernel.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FltWriteParameters {
    /// `ULONG Length`.
    pub Length: u32,
    /// Padding before the `POINTER_ALIGNMENT` member.
    pub _align1: u32,
    /// `ULONG POINTER_ALIGNMENT Key`.
    pub Key: u32,
    /// Padding.
    pub _align2: u32,
    /// `LARGE_INTEGER ByteOffset`.
    pub ByteOffset: i64,
    /// `PVOID WriteBuffer`.
    pub WriteBuffer: *mut c_void,
    /// `PMDL MdlAddress`.
    pub MdlAddress: *mut c_void,
}

/// `FLT_PARAMETERS` (fltKernel.h), the members the scenarios use.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FltParameters {
    /// IRP_MJ_CREATE.
    pub Create: FltCreateParameters,
    /// IRP_MJ_WRITE.
    pub Write: FltWriteParameters,
    /// `Others` (Argument1..Argument6): the union's size.
    pub Others: [u64; 6],
}

/// `FLT_IO_PARAMETER_BLOCK` (fltKernel.h).
#[repr(C)]
pub struct FltIoParameterBlock {
    /// `IRP_*` flags.
    pub IrpFlags: u32,
    /// `IRP_MJ_*`.
    pub MajorFunction: u8,
    /// `IRP_MN_*`.
    pub MinorFunction: u8,
    /// `SL_*`.
    pub OperationFlags: u8,
    /// `Reserved`.
    pub Reserved: u8,
    /// `PFILE_OBJECT`.
    pub TargetFileObject: *mut FileObject,
    /// `PFLT_INSTANCE`.
    pub TargetInstance: *mut c_void,
    /// `FLT_PARAMETERS`.
    pub Parameters: FltParameters,
}

/// `FLT_RELATED_OBJECTS` (fltKernel.h).
#[repr(C)]
pub struct FltRelatedObjects {
    /// `sizeof(FLT_RELATED_OBJECTS)`.
    pub Size: u16,
    /// `TransactionContext`.
    pub TransactionContext: u16,
    /// `PFLT_FILTER`.
    pub Filter: *mut c_void,
    /// `PFLT_VOLUME`.
    pub Volume: *mut c_void,
    /// `PFLT_INSTANCE`.
    pub Instance: *mut c_void,
    /// `PFILE_OBJECT`.
    pub FileObject: *mut FileObject,
    /// `PKTRANSACTION`.
    pub Transaction: *mut c_void,
}

/// `FILE_OBJECT` (wdm.h), complete.
#[repr(C)]
pub struct FileObject {
    /// `IO_TYPE_FILE` (5).
    pub Type: i16,
    /// `sizeof(FILE_OBJECT)`.
    pub Size: i16,
    /// `DeviceObject`, `Vpb`.
    pub Pointers: [*mut c_void; 2],
    /// `FsContext`: the file system's stream control block, the same for every file
    /// object of one stream (FlushGuard's group-commit stream key).
    pub FsContext: *mut c_void,
    /// `FsContext2`, `SectionObjectPointer`, `PrivateCacheMap`.
    pub Pointers2: [*mut c_void; 3],
    /// `FinalStatus`.
    pub FinalStatus: i32,
    /// `RelatedFileObject`.
    pub RelatedFileObject: *mut c_void,
    /// `LockOperation` .. `SharedDelete` (eight BOOLEANs).
    pub Booleans: [u8; 8],
    /// `FO_*` flags.
    pub Flags: u32,
    /// `FileName`.
    pub FileName: UnicodeString,
    /// `CurrentByteOffset`.
    pub CurrentByteOffset: i64,
    /// `Waiters`.
    pub Waiters: u32,
    /// `Busy`.
    pub Busy: u32,
    /// `LastLock`.
    pub LastLock: *mut c_void,
    /// `Lock` and `Event` (two KEVENTs, 24 bytes each).
    pub Events: [u64; 6],
    /// `CompletionContext`.
    pub CompletionContext: *mut c_void,
    /// `IrpListLock` (KSPIN_LOCK).
    pub IrpListLock: usize,
    /// `IrpList` (LIST_ENTRY).
    pub IrpList: [*mut c_void; 2],
    /// `FileObjectExtension`.
    pub FileObjectExtension: *mut c_void,
}

/// `FLT_VOLUME_PROPERTIES` (fltKernel.h), fixed part.
#[repr(C)]
pub struct FltVolumeProperties {
    /// `FILE_DEVICE_*`.
    pub DeviceType: u32,
    /// `DeviceCharacteristics`.
    pub DeviceCharacteristics: u32,
    /// `DeviceObjectFlags`.
    pub DeviceObjectFlags: u32,
    /// `AlignmentRequirement`.
    pub AlignmentRequirement: u32,
    /// `SectorSize`.
    pub SectorSize: u16,
    /// `Flags`.
    pub Flags: u16,
    /// `FileSystemDriverName`.
    pub FileSystemDriverName: UnicodeString,
    /// `FileSystemDeviceName`.
    pub FileSystemDeviceName: UnicodeString,
    /// `RealDeviceName`.
    pub RealDeviceName: UnicodeString,
}

/// `FLT_FILE_NAME_INFORMATION` (fltKernel.h).
#[repr(C)]
pub struct FltFileNameInformation {
    /// `sizeof(FLT_FILE_NAME_INFORMATION)`.
    pub Size: u16,
    /// `FLT_FILE_NAME_PARSED_FLAGS`.
    pub NamesParsed: u16,
    /// `FLT_FILE_NAME_OPTIONS` format.
    pub Format: u32,
    /// `Name`.
    pub Name: UnicodeString,
    /// `Volume`.
    pub Volume: UnicodeString,
    /// `Share`.
    pub Share: UnicodeString,
    /// `Extension`.
    pub Extension: UnicodeString,
    /// `Stream`.
    pub Stream: UnicodeString,
    /// `FinalComponent`.
    pub FinalComponent: UnicodeString,
    /// `ParentDir`.
    pub ParentDir: UnicodeString,
}

/// `FSRTL_MUP_PROVIDER_INFO_LEVEL_1` (ntifs.h).
#[repr(C)]
pub struct MupProviderInfoLevel1 {
    /// `ProviderId`.
    pub ProviderId: u32,
}

/// `KEY_VALUE_PARTIAL_INFORMATION` (wdm.h): header size in bytes before `Data`.
pub const KEY_VALUE_PARTIAL_INFORMATION_HEADER: usize = 12;

const_assert_eq!(size_of::<UnicodeString>(), 16);
const_assert_eq!(offset_of!(UnicodeString, MaximumLength), 2);
const_assert_eq!(offset_of!(UnicodeString, Buffer), 8);

const_assert_eq!(offset_of!(ObjectAttributes, RootDirectory), 8);
const_assert_eq!(offset_of!(ObjectAttributes, ObjectName), 16);
const_assert_eq!(offset_of!(ObjectAttributes, Attributes), 24);
const_assert_eq!(offset_of!(ObjectAttributes, SecurityDescriptor), 32);
const_assert_eq!(offset_of!(ObjectAttributes, SecurityQualityOfService), 40);
const_assert_eq!(size_of::<ObjectAttributes>(), 48);

const_assert_eq!(offset_of!(IoStatusBlock, Information), 8);
const_assert_eq!(size_of::<IoStatusBlock>(), 16);

const_assert_eq!(offset_of!(DriverObject, DeviceObject), 8);
const_assert_eq!(offset_of!(DriverObject, Flags), 16);
const_assert_eq!(offset_of!(DriverObject, DriverStart), 24);
const_assert_eq!(offset_of!(DriverObject, DriverSize), 32);
const_assert_eq!(offset_of!(DriverObject, DriverName), 56);
const_assert_eq!(offset_of!(DriverObject, DriverUnload), 104);
const_assert_eq!(offset_of!(DriverObject, MajorFunction), 112);
const_assert_eq!(size_of::<DriverObject>(), 336);

const_assert_eq!(offset_of!(FltRegistration, Version), 2);
const_assert_eq!(offset_of!(FltRegistration, Flags), 4);
const_assert_eq!(offset_of!(FltRegistration, ContextRegistration), 8);
const_assert_eq!(offset_of!(FltRegistration, OperationRegistration), 16);
const_assert_eq!(offset_of!(FltRegistration, FilterUnloadCallback), 24);
const_assert_eq!(offset_of!(FltRegistration, InstanceSetupCallback), 32);
const_assert_eq!(
    offset_of!(FltRegistration, InstanceQueryTeardownCallback),
    40
);
const_assert_eq!(
    offset_of!(FltRegistration, InstanceTeardownStartCallback),
    48
);
const_assert_eq!(
    offset_of!(FltRegistration, InstanceTeardownCompleteCallback),
    56
);
const_assert_eq!(offset_of!(FltRegistration, GenerateFileNameCallback), 64);
const_assert_eq!(
    offset_of!(FltRegistration, SectionNotificationCallback),
    104
);
const_assert_eq!(size_of::<FltRegistration>(), 112);

const_assert_eq!(offset_of!(FltOperationRegistration, Flags), 4);
const_assert_eq!(offset_of!(FltOperationRegistration, PreOperation), 8);
const_assert_eq!(offset_of!(FltOperationRegistration, PostOperation), 16);
const_assert_eq!(size_of::<FltOperationRegistration>(), 32);

const_assert_eq!(offset_of!(FltContextRegistration, Flags), 2);
const_assert_eq!(
    offset_of!(FltContextRegistration, ContextCleanupCallback),
    8
);
const_assert_eq!(offset_of!(FltContextRegistration, Size), 16);
const_assert_eq!(offset_of!(FltContextRegistration, PoolTag), 24);
const_assert_eq!(
    offset_of!(FltContextRegistration, ContextAllocateCallback),
    32
);
const_assert_eq!(offset_of!(FltContextRegistration, ContextFreeCallback), 40);
const_assert_eq!(size_of::<FltContextRegistration>(), 56);

const_assert_eq!(offset_of!(FltCallbackData, Thread), 8);
const_assert_eq!(offset_of!(FltCallbackData, Iopb), 16);
const_assert_eq!(offset_of!(FltCallbackData, IoStatus), 24);
const_assert_eq!(offset_of!(FltCallbackData, TagData), 40);
const_assert_eq!(offset_of!(FltCallbackData, FilterContext), 48);
const_assert_eq!(offset_of!(FltCallbackData, RequestorMode), 80);
const_assert_eq!(size_of::<FltCallbackData>(), 88);

const_assert_eq!(offset_of!(FltIoParameterBlock, MajorFunction), 4);
const_assert_eq!(offset_of!(FltIoParameterBlock, MinorFunction), 5);
const_assert_eq!(offset_of!(FltIoParameterBlock, OperationFlags), 6);
const_assert_eq!(offset_of!(FltIoParameterBlock, TargetFileObject), 8);
const_assert_eq!(offset_of!(FltIoParameterBlock, TargetInstance), 16);
const_assert_eq!(offset_of!(FltIoParameterBlock, Parameters), 24);
const_assert_eq!(size_of::<FltIoParameterBlock>(), 72);
const_assert_eq!(size_of::<FltParameters>(), 48);

const_assert_eq!(offset_of!(FltCreateParameters, Options), 8);
const_assert_eq!(offset_of!(FltCreateParameters, FileAttributes), 16);
const_assert_eq!(offset_of!(FltCreateParameters, ShareAccess), 18);
const_assert_eq!(offset_of!(FltCreateParameters, EaLength), 24);
const_assert_eq!(offset_of!(FltCreateParameters, EaBuffer), 32);
const_assert_eq!(offset_of!(FltCreateParameters, AllocationSize), 40);

const_assert_eq!(offset_of!(FltWriteParameters, Key), 8);
const_assert_eq!(offset_of!(FltWriteParameters, ByteOffset), 16);
const_assert_eq!(offset_of!(FltWriteParameters, WriteBuffer), 24);
const_assert_eq!(offset_of!(FltWriteParameters, MdlAddress), 32);

const_assert_eq!(offset_of!(FltRelatedObjects, TransactionContext), 2);
const_assert_eq!(offset_of!(FltRelatedObjects, Filter), 8);
const_assert_eq!(offset_of!(FltRelatedObjects, Volume), 16);
const_assert_eq!(offset_of!(FltRelatedObjects, Instance), 24);
const_assert_eq!(offset_of!(FltRelatedObjects, FileObject), 32);
const_assert_eq!(offset_of!(FltRelatedObjects, Transaction), 40);
const_assert_eq!(size_of::<FltRelatedObjects>(), 48);

const_assert_eq!(offset_of!(FileObject, Pointers), 8);
const_assert_eq!(offset_of!(FileObject, FsContext), 24);
const_assert_eq!(offset_of!(FileObject, Pointers2), 32);
const_assert_eq!(offset_of!(FileObject, FinalStatus), 56);
const_assert_eq!(offset_of!(FileObject, RelatedFileObject), 64);
const_assert_eq!(offset_of!(FileObject, Booleans), 72);
const_assert_eq!(offset_of!(FileObject, Flags), 80);
const_assert_eq!(offset_of!(FileObject, FileName), 88);
const_assert_eq!(offset_of!(FileObject, CurrentByteOffset), 104);
const_assert_eq!(offset_of!(FileObject, LastLock), 120);
const_assert_eq!(offset_of!(FileObject, Events), 128);
const_assert_eq!(offset_of!(FileObject, CompletionContext), 176);
const_assert_eq!(offset_of!(FileObject, IrpList), 192);
const_assert_eq!(offset_of!(FileObject, FileObjectExtension), 208);
const_assert_eq!(size_of::<FileObject>(), 216);

const_assert_eq!(offset_of!(FltVolumeProperties, SectorSize), 16);
const_assert_eq!(offset_of!(FltVolumeProperties, Flags), 18);
const_assert_eq!(offset_of!(FltVolumeProperties, FileSystemDriverName), 24);
const_assert_eq!(offset_of!(FltVolumeProperties, FileSystemDeviceName), 40);
const_assert_eq!(offset_of!(FltVolumeProperties, RealDeviceName), 56);
const_assert_eq!(size_of::<FltVolumeProperties>(), 72);

const_assert_eq!(offset_of!(FltFileNameInformation, Format), 4);
const_assert_eq!(offset_of!(FltFileNameInformation, Name), 8);
const_assert_eq!(offset_of!(FltFileNameInformation, Volume), 24);
const_assert_eq!(offset_of!(FltFileNameInformation, Share), 40);
const_assert_eq!(offset_of!(FltFileNameInformation, Extension), 56);
const_assert_eq!(offset_of!(FltFileNameInformation, Stream), 72);
const_assert_eq!(offset_of!(FltFileNameInformation, FinalComponent), 88);
const_assert_eq!(offset_of!(FltFileNameInformation, ParentDir), 104);
const_assert_eq!(size_of::<FltFileNameInformation>(), 120);
