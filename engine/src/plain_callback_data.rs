//! [`PlainCallbackData`]: an operation as plain fields, for the Filter Managers that run
//! the callback logic outside the kernel (the host tests' fake Filter Manager in
//! `tests/src/fake.rs`, flushctl's simulated one for `replay` and `--offline`). Feature
//! `sim`; the driver reads the real `FLT_CALLBACK_DATA` instead.

use flushguard_protocol::nt::IRP_MJ_WRITE;
use flushguard_protocol::NtStatus;

use crate::callbacks::CallbackData;

/// One operation (`FLT_CALLBACK_DATA` + the related objects), as plain fields, plus
/// whatever else the Filter Manager that owns it keeps per operation (`extra`: `()` for
/// the tests' fake, the file name, image, provider and thread for flushctl's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainCallbackData<X = ()> {
    /// File object id (the owner's numbering).
    pub file: u64,
    /// `Iopb->MajorFunction` (`IRP_MJ_*`).
    pub major: u8,
    /// `Iopb->MinorFunction` (`IRP_MN_*`; the flush type for IRP_MJ_FLUSH_BUFFERS).
    pub minor: u8,
    /// `Iopb->IrpFlags` (`IRP_*`).
    pub irp_flags: u32,
    /// `Iopb->OperationFlags` (`SL_*`).
    pub operation_flags: u8,
    /// `FLT_IS_FASTIO_OPERATION`.
    pub fast_io: bool,
    /// `RequestorMode == KernelMode`.
    pub kernel: bool,
    /// `Parameters.Create.Options` (options in the low 24 bits, disposition above).
    pub create_options: u32,
    /// `Parameters.Write.ByteOffset`, in bytes.
    pub offset: i64,
    /// `Parameters.Write.Length`, in bytes.
    pub length: u32,
    /// `IoStatus.Status` (post-operation).
    pub status: NtStatus,
    /// `FltIsOperationSynchronous`.
    pub synchronous: bool,
    /// `FltSetCallbackDataDirty` was called.
    pub dirty: bool,
    /// `FileObject->Flags` (`FO_SYNCHRONOUS_IO` 0x2, `FO_WRITE_THROUGH` 0x10).
    pub fo_flags: u32,
    /// `Parameters.FileSystemControl.Common.FsControlCode` (IRP_MJ_FILE_SYSTEM_CONTROL).
    pub fs_control_code: u32,
    /// `Parameters.SetFileInformation.FileInformationClass` (IRP_MJ_SET_INFORMATION).
    pub file_information_class: u32,
    /// The owner's own per-operation data.
    pub extra: X,
}

impl<X> PlainCallbackData<X> {
    /// A bare, synchronous, successful operation from user mode on file object `file`,
    /// carrying `extra`.
    pub fn with_extra(file: u64, major: u8, extra: X) -> Self {
        PlainCallbackData {
            file,
            major,
            minor: 0,
            irp_flags: 0,
            operation_flags: 0,
            fast_io: false,
            kernel: false,
            create_options: 0,
            offset: 0,
            length: 0,
            status: NtStatus::SUCCESS,
            synchronous: true,
            dirty: false,
            fo_flags: 0,
            fs_control_code: 0,
            file_information_class: 0,
            extra,
        }
    }
}

impl<X: Default> PlainCallbackData<X> {
    /// [`PlainCallbackData::with_extra`] with the default `extra`.
    pub fn new(file: u64, major: u8) -> Self {
        Self::with_extra(file, major, X::default())
    }

    /// An IRP_MJ_WRITE of `length` bytes at `offset` with `irp_flags`.
    pub fn write(file: u64, irp_flags: u32, offset: i64, length: u32) -> Self {
        PlainCallbackData {
            irp_flags,
            offset,
            length,
            ..Self::new(file, IRP_MJ_WRITE)
        }
    }
}

impl<X> PlainCallbackData<X> {
    /// The fields a filter may change: (create options, operation flags, minor).
    pub fn changeable(&self) -> (u32, u8, u8) {
        (self.create_options, self.operation_flags, self.minor)
    }
}

impl<X: Default> Default for PlainCallbackData<X> {
    /// [`PlainCallbackData::new`] on file object 0 with major function 0.
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl<X> CallbackData for PlainCallbackData<X> {
    fn major_function(&self) -> u8 {
        self.major
    }
    fn minor_function(&self) -> u8 {
        self.minor
    }
    fn set_minor_function(&mut self, minor: u8) {
        self.minor = minor;
    }
    fn irp_flags(&self) -> u32 {
        self.irp_flags
    }
    fn operation_flags(&self) -> u8 {
        self.operation_flags
    }
    fn set_operation_flags(&mut self, flags: u8) {
        self.operation_flags = flags;
    }
    fn file_object_flags(&self) -> u32 {
        self.fo_flags
    }
    fn is_fast_io(&self) -> bool {
        self.fast_io
    }
    fn requestor_mode_kernel(&self) -> bool {
        self.kernel
    }
    fn create_options(&self) -> u32 {
        self.create_options
    }
    fn set_create_options(&mut self, options: u32) {
        self.create_options = options;
    }
    fn write_offset(&self) -> i64 {
        self.offset
    }
    fn write_length(&self) -> u32 {
        self.length
    }
    fn io_status(&self) -> NtStatus {
        self.status
    }
    fn fs_control_code(&self) -> u32 {
        self.fs_control_code
    }
    fn file_information_class(&self) -> u32 {
        self.file_information_class
    }
}
