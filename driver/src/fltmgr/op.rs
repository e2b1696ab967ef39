//! [`KernelOp`]: the engine's `CallbackData` view of one operation, read from the
//! `FLT_CALLBACK_DATA` / `FLT_RELATED_OBJECTS` Filter Manager passed, through the
//! structure mirrors of [`crate::layout`].

use flushguard_engine::callbacks::CallbackData;
use flushguard_protocol::NtStatus;
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltGetVolumeProperties, FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLT_CALLBACK_DATA,
    FLT_RELATED_OBJECTS, FLT_VOLUME_PROPERTIES, PFLT_INSTANCE,
};
use windows_sys::Win32::System::Ioctl::FILE_DEVICE_NETWORK_FILE_SYSTEM;

use crate::layout::{
    FileObjectPrefix, FltCallbackData, FltIoParameterBlock, FltParameters, FltRelatedObjects,
};

/// `STATUS_BUFFER_OVERFLOW` (0x80000005): FltGetVolumeProperties filled the fixed part.
const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005_u32 as i32;
/// `KernelMode` (`KPROCESSOR_MODE` 0).
const KERNEL_MODE: i8 = 0;

/// One operation: the `FLT_CALLBACK_DATA` and `FLT_RELATED_OBJECTS` Filter Manager
/// passed to a callback. Valid only during that callback (or until the safe
/// post-operation callback of a deferred completion returns).
///
/// Every member is read through the mirrors of [`crate::layout`] (windows-sys's
/// `FLT_PARAMETERS` layout is wrong); only [`KernelOp::raw`] hands Filter Manager its
/// own pointer type back.
pub struct KernelOp {
    data: *mut FltCallbackData,
    /// `PFLT_INSTANCE` the operation runs on.
    instance: PFLT_INSTANCE,
    /// `PFILE_OBJECT` of the operation (may be NULL for some operations).
    file_object: *const FILE_OBJECT,
    /// `PFLT_VOLUME`, or 0 when not known (a pended operation in the flush worker).
    volume: isize,
}

impl KernelOp {
    /// Wraps the arguments of a Filter Manager callback.
    ///
    /// # Safety
    /// `data` and `objects` are the non-NULL pointers Filter Manager passed to the
    /// running callback; the value must not outlive that callback.
    pub unsafe fn new(data: *mut FLT_CALLBACK_DATA, objects: *const FLT_RELATED_OBJECTS) -> Self {
        let objects = objects.cast::<FltRelatedObjects>();
        // SAFETY: `objects` is the callback's FLT_RELATED_OBJECTS (caller's contract),
        // valid for the callback's duration; any IRQL.
        let instance = unsafe { (*objects).Instance };
        // SAFETY: as above.
        let file_object = unsafe { (*objects).FileObject };
        // SAFETY: as above.
        let volume = unsafe { (*objects).Volume };
        KernelOp {
            data: data.cast::<FltCallbackData>(),
            instance,
            file_object: file_object.cast_const().cast::<FILE_OBJECT>(),
            volume,
        }
    }

    /// Wraps a post-operation pended to the flush worker: the instance and file object
    /// come from `Iopb->TargetInstance` / `TargetFileObject` (FLT_RELATED_OBJECTS is
    /// not available there; Filter Manager keeps the instance referenced until the
    /// operation is completed); the volume is not known.
    ///
    /// # Safety
    /// `data` is the callback data of an operation pended to FlushGuard's worker queue
    /// (`crate::worker::push`) and not completed yet; the value must not outlive the
    /// `FltCompletePendedPostOperation` that ends it.
    pub unsafe fn pended(data: *mut FLT_CALLBACK_DATA) -> Self {
        let data = data.cast::<FltCallbackData>();
        // SAFETY: `data` is the live, pended operation's callback data (caller's
        // contract); its Iopb is valid until completion.
        let iopb = unsafe { (*data).Iopb };
        // SAFETY: as above; a plain read of a pointer-sized member.
        let instance = unsafe { (*iopb).TargetInstance };
        // SAFETY: as above.
        let file_object = unsafe { (*iopb).TargetFileObject };
        KernelOp {
            data,
            instance: instance as PFLT_INSTANCE,
            file_object: file_object.cast_const().cast::<FILE_OBJECT>(),
            volume: 0,
        }
    }

    /// The raw callback data (for Filter Manager calls).
    pub fn raw(&self) -> *mut FLT_CALLBACK_DATA {
        self.data.cast::<FLT_CALLBACK_DATA>()
    }

    fn iopb(&self) -> *mut FltIoParameterBlock {
        // SAFETY: `data` is the callback's FLT_CALLBACK_DATA (KernelOp::new contract),
        // owned by Filter Manager for the callback's duration; any IRQL.
        unsafe { (*self.data).Iopb }
    }

    fn parameters(&self) -> FltParameters {
        let iopb = self.iopb();
        // SAFETY: `Iopb` of a live FLT_CALLBACK_DATA is a valid parameter block owned by
        // Filter Manager during the callback; FLT_PARAMETERS is plain data (Copy).
        unsafe { (*iopb).Parameters }
    }

    pub(super) fn instance(&self) -> PFLT_INSTANCE {
        self.instance
    }

    /// True when the operation's volume is a network file system (the MUP volume):
    /// `FltGetVolumeProperties(FltObjects->Volume)->DeviceType ==
    /// FILE_DEVICE_NETWORK_FILE_SYSTEM`. IRQL <= APC_LEVEL.
    pub(super) fn on_network_volume(&self) -> bool {
        let volume = self.volume;
        if volume == 0 {
            return false;
        }
        let mut properties = FLT_VOLUME_PROPERTIES::default();
        let mut returned = 0u32;
        // SAFETY: `volume` is the operation's volume (referenced by Filter Manager for
        // the callback); `properties` is a local of the stated size (the fixed part:
        // the names may not fit, reported as STATUS_BUFFER_OVERFLOW); IRQL <= APC_LEVEL.
        let raw = unsafe {
            FltGetVolumeProperties(
                volume,
                &mut properties,
                core::mem::size_of::<FLT_VOLUME_PROPERTIES>() as u32,
                &mut returned,
            )
        };
        (raw >= 0 || raw == STATUS_BUFFER_OVERFLOW)
            && properties.DeviceType == FILE_DEVICE_NETWORK_FILE_SYSTEM
    }

    pub(super) fn file_object(&self) -> *const FILE_OBJECT {
        self.file_object
    }

    /// `FILE_OBJECT::FsContext` of the operation's file object (0 without one): the
    /// stream's identity, only compared. Any IRQL.
    pub(super) fn fs_context(&self) -> usize {
        let file_object = self.file_object();
        if file_object.is_null() {
            return 0;
        }
        let file_object = file_object.cast::<FileObjectPrefix>();
        // SAFETY: the operation's file object (FLT_RELATED_OBJECTS, non-NULL), referenced
        // by the I/O in progress; `FsContext` (wdm.h offset 24, asserted in layout.rs) is
        // read at the callback's IRQL.
        unsafe { (*file_object).FsContext as usize }
    }
}

impl CallbackData for KernelOp {
    fn major_function(&self) -> u8 {
        let iopb = self.iopb();
        // SAFETY: `iopb` is the parameter block of the callback's FLT_CALLBACK_DATA
        // (KernelOp::new contract), owned by Filter Manager for the callback; read at
        // the callback's IRQL (<= DISPATCH_LEVEL).
        unsafe { (*iopb).MajorFunction }
    }
    fn minor_function(&self) -> u8 {
        let iopb = self.iopb();
        // SAFETY: `iopb` is the parameter block of the callback's FLT_CALLBACK_DATA
        // (KernelOp::new contract), owned by Filter Manager for the callback; read at
        // the callback's IRQL (<= DISPATCH_LEVEL).
        unsafe { (*iopb).MinorFunction }
    }
    fn set_minor_function(&mut self, minor: u8) {
        let iopb = self.iopb();
        // SAFETY: the parameter block of the running pre-flush (KernelOp::new contract),
        // owned by Filter Manager; a pre-operation may change it (then calls
        // FltSetCallbackDataDirty); IRQL <= APC_LEVEL.
        unsafe { (*iopb).MinorFunction = minor };
    }
    fn irp_flags(&self) -> u32 {
        let iopb = self.iopb();
        // SAFETY: `iopb` is the parameter block of the callback's FLT_CALLBACK_DATA
        // (KernelOp::new contract), owned by Filter Manager for the callback; read at
        // the callback's IRQL (<= DISPATCH_LEVEL).
        unsafe { (*iopb).IrpFlags }
    }
    fn operation_flags(&self) -> u8 {
        let iopb = self.iopb();
        // SAFETY: `iopb` is the parameter block of the callback's FLT_CALLBACK_DATA
        // (KernelOp::new contract), owned by Filter Manager for the callback; read at
        // the callback's IRQL (<= DISPATCH_LEVEL).
        unsafe { (*iopb).OperationFlags }
    }
    fn set_operation_flags(&mut self, flags: u8) {
        let iopb = self.iopb();
        // SAFETY: the parameter block of the running pre-write (KernelOp::new contract),
        // owned by Filter Manager; a pre-operation may change it (then calls
        // FltSetCallbackDataDirty); IRQL <= APC_LEVEL.
        unsafe { (*iopb).OperationFlags = flags };
    }
    fn file_object_flags(&self) -> u32 {
        let file_object = self.file_object();
        if file_object.is_null() {
            return 0;
        }
        let file_object = file_object.cast::<FileObjectPrefix>();
        // SAFETY: the operation's file object (FLT_RELATED_OBJECTS, non-NULL), referenced
        // by the I/O in progress; `Flags` (wdm.h offset 80, asserted in layout.rs) is read
        // at the callback's IRQL.
        unsafe { (*file_object).Flags }
    }
    fn is_fast_io(&self) -> bool {
        // SAFETY: the callback's FLT_CALLBACK_DATA (KernelOp::new contract), owned by
        // Filter Manager for the callback; any IRQL.
        let flags = unsafe { (*self.data).Flags };
        flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0
    }
    fn requestor_mode_kernel(&self) -> bool {
        // SAFETY: the callback's FLT_CALLBACK_DATA (KernelOp::new contract), owned by
        // Filter Manager for the callback; any IRQL.
        let mode = unsafe { (*self.data).RequestorMode };
        mode == KERNEL_MODE
    }
    fn create_options(&self) -> u32 {
        let parameters = self.parameters();
        // SAFETY: reading a union member of a local copy; the engine reads `Create`
        // only for IRP_MJ_CREATE, whose active member it is (plain u32, any bits valid).
        unsafe { parameters.Create.Options }
    }
    fn set_create_options(&mut self, options: u32) {
        let iopb = self.iopb();
        // SAFETY: the parameter block of the running pre-create (KernelOp::new
        // contract), owned by Filter Manager; only a place is computed; PASSIVE_LEVEL.
        let parameters = unsafe { &raw mut (*iopb).Parameters };
        // SAFETY: IRP_MJ_CREATE pre-operation (the only caller): `Create` is the active
        // member of the union; only a place is computed.
        let create = unsafe { &raw mut (*parameters).Create };
        // SAFETY: writes a u32 field of the live, active `Create` parameters; a
        // pre-operation may change them (then calls FltSetCallbackDataDirty).
        unsafe { (*create).Options = options };
    }
    fn write_offset(&self) -> i64 {
        let parameters = self.parameters();
        // SAFETY: reading a union member of a local copy; the engine reads `Write` only
        // for IRP_MJ_WRITE, whose active member it is (plain i64, any bits valid).
        unsafe { parameters.Write.ByteOffset }
    }
    fn write_length(&self) -> u32 {
        let parameters = self.parameters();
        // SAFETY: as in `write_offset` (plain u32).
        unsafe { parameters.Write.Length }
    }
    fn fs_control_code(&self) -> u32 {
        let parameters = self.parameters();
        // SAFETY: reading a union member of a local copy; the engine reads it only for
        // IRP_MJ_FILE_SYSTEM_CONTROL, whose active member it is (plain u32 at +16,
        // layout.rs).
        unsafe { parameters.FileSystemControl.FsControlCode }
    }
    fn file_information_class(&self) -> u32 {
        let parameters = self.parameters();
        // SAFETY: as above for IRP_MJ_SET_INFORMATION (plain enum value at +8).
        let class = unsafe { parameters.SetFileInformation.FileInformationClass };
        class as u32
    }
    fn io_status(&self) -> NtStatus {
        // SAFETY: live FLT_CALLBACK_DATA in a post-operation callback, where IoStatus
        // holds the completion status.
        let io_status = unsafe { (*self.data).IoStatus };
        NtStatus(io_status.Status)
    }
}
