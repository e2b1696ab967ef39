//! Raw Windows kernel constants the decisions read or set.
//!
//! C spellings are kept because these are the FFI-edge values. Every value is
//! cross-checked against `windows-sys` (generated from the WDK metadata) in tests.

/// `IRP_MJ_CREATE` (wdm.h, "IRP_MJ_CREATE" IFS page).
pub const IRP_MJ_CREATE: u8 = 0x00;
/// `IRP_MJ_WRITE` (wdm.h, "IRP_MJ_WRITE" IFS page).
pub const IRP_MJ_WRITE: u8 = 0x04;
/// `IRP_MJ_FLUSH_BUFFERS` (wdm.h, "IRP_MJ_FLUSH_BUFFERS" IFS page).
pub const IRP_MJ_FLUSH_BUFFERS: u8 = 0x09;
/// `IRP_MJ_SET_INFORMATION` (wdm.h, "IRP_MJ_SET_INFORMATION" IFS page).
pub const IRP_MJ_SET_INFORMATION: u8 = 0x06;
/// `IRP_MJ_FILE_SYSTEM_CONTROL` (wdm.h, "IRP_MJ_FILE_SYSTEM_CONTROL" IFS page).
pub const IRP_MJ_FILE_SYSTEM_CONTROL: u8 = 0x0D;
/// `IRP_MN_USER_FS_REQUEST`: the minor function of IRP_MJ_FILE_SYSTEM_CONTROL that
/// carries an `FSCTL_*` code from user mode or a kernel caller (wdm.h).
pub const IRP_MN_USER_FS_REQUEST: u8 = 0x00;
/// `FSCTL_SRV_COPYCHUNK` (MS-SMB2 2.2.31 "SMB2 IOCTL Request"): server-side copy into
/// the handle's file, what CopyFile uses within a share (source opened for read).
pub const FSCTL_SRV_COPYCHUNK: u32 = 0x0014_40F2;
/// `FSCTL_SRV_COPYCHUNK_WRITE` (MS-SMB2 2.2.31): server-side copy, source opened for
/// write.
pub const FSCTL_SRV_COPYCHUNK_WRITE: u32 = 0x0014_80F2;
/// `FSCTL_OFFLOAD_WRITE` (winioctl.h, "FSCTL_OFFLOAD_WRITE" IFS page): offloaded data
/// transfer (ODX) into the handle's file.
pub const FSCTL_OFFLOAD_WRITE: u32 = 0x0009_8268;
/// `FSCTL_DUPLICATE_EXTENTS_TO_FILE` (winioctl.h): block cloning into the handle's
/// file (ReFS; SMB3 servers pass it through).
pub const FSCTL_DUPLICATE_EXTENTS_TO_FILE: u32 = 0x0009_8344;
/// `FSCTL_DUPLICATE_EXTENTS_TO_FILE_EX` (winioctl.h): as above, with flags.
pub const FSCTL_DUPLICATE_EXTENTS_TO_FILE_EX: u32 = 0x0009_83E8;
/// The FSCTLs that change the data of the file they are sent to (issue 9 finding 2):
/// FlushGuard treats a successful one like a write.
pub const DATA_CHANGING_FSCTLS: [u32; 5] = [
    FSCTL_SRV_COPYCHUNK,
    FSCTL_SRV_COPYCHUNK_WRITE,
    FSCTL_OFFLOAD_WRITE,
    FSCTL_DUPLICATE_EXTENTS_TO_FILE,
    FSCTL_DUPLICATE_EXTENTS_TO_FILE_EX,
];
/// `FileAllocationInformation` (`FILE_INFORMATION_CLASS` 19, wdm.h): sets the
/// allocation size (may truncate the file).
pub const FILE_ALLOCATION_INFORMATION: u32 = 19;
/// `FileEndOfFileInformation` (`FILE_INFORMATION_CLASS` 20, wdm.h): sets the end of
/// file (extends or truncates).
pub const FILE_END_OF_FILE_INFORMATION: u32 = 20;
/// `IRP_MJ_CLEANUP` (wdm.h, "IRP_MJ_CLEANUP" IFS page).
pub const IRP_MJ_CLEANUP: u8 = 0x12;
/// `IRP_MJ_OPERATION_END` (fltKernel.h): terminates `FLT_OPERATION_REGISTRATION` arrays.
pub const IRP_MJ_OPERATION_END: u8 = 0x80;

/// `IRP_MN_FLUSH_AND_PURGE`: minor function of IRP_MJ_FLUSH_BUFFERS (wdm.h).
pub const IRP_MN_FLUSH_AND_PURGE: u8 = 0x01;
/// `IRP_MN_FLUSH_DATA_ONLY`: minor function of IRP_MJ_FLUSH_BUFFERS (wdm.h).
pub const IRP_MN_FLUSH_DATA_ONLY: u8 = 0x02;
/// `IRP_MN_FLUSH_NO_SYNC`: minor function of IRP_MJ_FLUSH_BUFFERS (wdm.h).
pub const IRP_MN_FLUSH_NO_SYNC: u8 = 0x03;
/// `IRP_MN_FLUSH_DATA_SYNC_ONLY`: minor function of IRP_MJ_FLUSH_BUFFERS (wdm.h).
pub const IRP_MN_FLUSH_DATA_SYNC_ONLY: u8 = 0x04;

/// `SL_WRITE_THROUGH`: `IrpSp->Flags` / `Iopb->OperationFlags` bit on IRP_MJ_WRITE
/// asking the file system to write through ("IRP_MJ_WRITE" IFS page).
pub const SL_WRITE_THROUGH: u8 = 0x04;
/// `FILE_WRITE_THROUGH`: `Parameters.Create.Options` bit (ZwCreateFile page);
/// becomes `FO_WRITE_THROUGH` and the SMB2 CREATE option (MS-SMB2 §2.2.13).
pub const FILE_WRITE_THROUGH: u32 = 0x0000_0002;
/// `FILE_DIRECTORY_FILE`: create options bit for directories (ZwCreateFile page).
pub const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
/// `FO_WRITE_THROUGH`: `FILE_OBJECT.Flags` bit (wdm.h, "FILE_OBJECT" page).
pub const FO_WRITE_THROUGH: u32 = 0x0000_0010;
/// `IRP_NOCACHE`: `Irp->Flags` bit, non-cached I/O (wdm.h).
pub const IRP_NOCACHE: u32 = 0x0000_0001;
/// `IRP_PAGING_IO`: `Irp->Flags` bit, paging I/O from the lazy writer or the
/// mapped/modified page writer (wdm.h).
pub const IRP_PAGING_IO: u32 = 0x0000_0002;
/// `IRP_SYNCHRONOUS_API`: `Irp->Flags` bit (wdm.h).
pub const IRP_SYNCHRONOUS_API: u32 = 0x0000_0004;
/// `IRP_SYNCHRONOUS_PAGING_IO`: `Irp->Flags` bit (wdm.h).
pub const IRP_SYNCHRONOUS_PAGING_IO: u32 = 0x0000_0040;
/// `FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO` (fltKernel.h,
/// "FLT_OPERATION_REGISTRATION" page).
pub const FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO: u32 = 0x0000_0001;
/// `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`: `FLT_CALLBACK_DATA.Flags` bit
/// ("FLT_CALLBACK_DATA" page).
pub const FLTFL_CALLBACK_DATA_FAST_IO_OPERATION: u32 = 0x0000_0002;
/// `FLTFL_POST_OPERATION_DRAINING` ("PFLT_POST_OPERATION_CALLBACK" page).
pub const FLTFL_POST_OPERATION_DRAINING: u32 = 0x0000_0001;

/// `FLT_FLUSH_TYPE_FLUSH_AND_PURGE` (FltFlushBuffers2 page, fltKernel.h).
pub const FLT_FLUSH_TYPE_FLUSH_AND_PURGE: u32 = 0x0000_0001;
/// `FLT_FLUSH_TYPE_FILE_DATA_ONLY` (FltFlushBuffers2 page).
pub const FLT_FLUSH_TYPE_FILE_DATA_ONLY: u32 = 0x0000_0002;
/// `FLT_FLUSH_TYPE_NO_SYNC` (FltFlushBuffers2 page).
pub const FLT_FLUSH_TYPE_NO_SYNC: u32 = 0x0000_0004;
/// `FLT_FLUSH_TYPE_DATA_SYNC_ONLY` (FltFlushBuffers2 page).
pub const FLT_FLUSH_TYPE_DATA_SYNC_ONLY: u32 = 0x0000_0008;

/// `FLUSH_FLAGS_FILE_DATA_ONLY` (ZwFlushBuffersFileEx / NtFlushBuffersFileEx page).
pub const FLUSH_FLAGS_FILE_DATA_ONLY: u32 = 0x0000_0001;
/// `FLUSH_FLAGS_NO_SYNC` (ZwFlushBuffersFileEx page).
pub const FLUSH_FLAGS_NO_SYNC: u32 = 0x0000_0002;
/// `FLUSH_FLAGS_FILE_DATA_SYNC_ONLY` (NtFlushBuffersFileEx page).
pub const FLUSH_FLAGS_FILE_DATA_SYNC_ONLY: u32 = 0x0000_0004;

#[cfg(test)]
mod tests {
    use super::*;

    /// `CTL_CODE(DeviceType, Function, Method, Access)` (winioctl.h).
    const fn ctl_code(device: u32, function: u32, method: u32, access: u32) -> u32 {
        (device << 16) | (access << 14) | (function << 2) | method
    }

    #[test]
    fn srv_copychunk_codes_follow_ctl_code() {
        // windows-sys has no FSCTL_SRV_COPYCHUNK*: recompute them from their
        // definition (FILE_DEVICE_NETWORK_FILE_SYSTEM 0x14, function 60,
        // METHOD_OUT_DIRECT 2, FILE_READ_ACCESS 1 / FILE_WRITE_ACCESS 2).
        assert_eq!(FSCTL_SRV_COPYCHUNK, ctl_code(0x14, 60, 2, 1));
        assert_eq!(FSCTL_SRV_COPYCHUNK_WRITE, ctl_code(0x14, 60, 2, 2));
        // FILE_DEVICE_FILE_SYSTEM 9, METHOD_BUFFERED, FILE_WRITE_ACCESS.
        assert_eq!(FSCTL_OFFLOAD_WRITE, ctl_code(9, 154, 0, 2));
    }
    use windows_sys::Wdk::Storage::FileSystem::Minifilters as M;
    use windows_sys::Wdk::System::SystemServices as S;

    #[test]
    fn values_match_windows_metadata() {
        assert_eq!(IRP_MJ_CREATE as u32, S::IRP_MJ_CREATE);
        assert_eq!(IRP_MJ_WRITE as u32, S::IRP_MJ_WRITE);
        assert_eq!(IRP_MJ_FLUSH_BUFFERS as u32, S::IRP_MJ_FLUSH_BUFFERS);
        assert_eq!(IRP_MJ_CLEANUP as u32, S::IRP_MJ_CLEANUP);
        assert_eq!(IRP_MJ_SET_INFORMATION as u32, S::IRP_MJ_SET_INFORMATION);
        assert_eq!(
            IRP_MJ_FILE_SYSTEM_CONTROL as u32,
            S::IRP_MJ_FILE_SYSTEM_CONTROL
        );
        assert_eq!(IRP_MN_USER_FS_REQUEST as u32, S::IRP_MN_USER_FS_REQUEST);
        use windows_sys::Win32::System::Ioctl as I;
        assert_eq!(FSCTL_OFFLOAD_WRITE, I::FSCTL_OFFLOAD_WRITE);
        assert_eq!(
            FSCTL_DUPLICATE_EXTENTS_TO_FILE,
            I::FSCTL_DUPLICATE_EXTENTS_TO_FILE
        );
        assert_eq!(
            FSCTL_DUPLICATE_EXTENTS_TO_FILE_EX,
            I::FSCTL_DUPLICATE_EXTENTS_TO_FILE_EX
        );
        use windows_sys::Wdk::Storage::FileSystem as W;
        assert_eq!(
            FILE_ALLOCATION_INFORMATION as i32,
            W::FileAllocationInformation
        );
        assert_eq!(
            FILE_END_OF_FILE_INFORMATION as i32,
            W::FileEndOfFileInformation
        );
        assert_eq!(IRP_MJ_OPERATION_END as u32, M::IRP_MJ_OPERATION_END as u32);
        assert_eq!(IRP_MN_FLUSH_AND_PURGE as u32, S::IRP_MN_FLUSH_AND_PURGE);
        assert_eq!(IRP_MN_FLUSH_DATA_ONLY as u32, S::IRP_MN_FLUSH_DATA_ONLY);
        assert_eq!(IRP_MN_FLUSH_NO_SYNC as u32, S::IRP_MN_FLUSH_NO_SYNC);
        assert_eq!(
            IRP_MN_FLUSH_DATA_SYNC_ONLY as u32,
            S::IRP_MN_FLUSH_DATA_SYNC_ONLY
        );
        assert_eq!(SL_WRITE_THROUGH as u32, S::SL_WRITE_THROUGH);
        assert_eq!(
            FILE_WRITE_THROUGH,
            windows_sys::Wdk::Storage::FileSystem::FILE_WRITE_THROUGH
        );
        assert_eq!(
            FILE_DIRECTORY_FILE,
            windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE
        );
        assert_eq!(FO_WRITE_THROUGH, S::FO_WRITE_THROUGH);
        assert_eq!(IRP_NOCACHE, S::IRP_NOCACHE);
        assert_eq!(IRP_PAGING_IO, S::IRP_PAGING_IO);
        assert_eq!(IRP_SYNCHRONOUS_API, S::IRP_SYNCHRONOUS_API);
        assert_eq!(IRP_SYNCHRONOUS_PAGING_IO, S::IRP_SYNCHRONOUS_PAGING_IO);
        assert_eq!(
            FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO,
            M::FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO
        );
        assert_eq!(
            FLTFL_CALLBACK_DATA_FAST_IO_OPERATION,
            M::FLTFL_CALLBACK_DATA_FAST_IO_OPERATION
        );
        assert_eq!(
            FLTFL_POST_OPERATION_DRAINING,
            M::FLTFL_POST_OPERATION_DRAINING
        );
        assert_eq!(
            FLT_FLUSH_TYPE_FLUSH_AND_PURGE,
            M::FLT_FLUSH_TYPE_FLUSH_AND_PURGE
        );
        assert_eq!(
            FLT_FLUSH_TYPE_FILE_DATA_ONLY,
            M::FLT_FLUSH_TYPE_FILE_DATA_ONLY
        );
        assert_eq!(FLT_FLUSH_TYPE_NO_SYNC, M::FLT_FLUSH_TYPE_NO_SYNC);
        assert_eq!(
            FLT_FLUSH_TYPE_DATA_SYNC_ONLY,
            M::FLT_FLUSH_TYPE_DATA_SYNC_ONLY
        );
        assert_eq!(
            FLUSH_FLAGS_FILE_DATA_ONLY,
            windows_sys::Win32::System::SystemServices::FLUSH_FLAGS_FILE_DATA_ONLY
        );
        assert_eq!(
            FLUSH_FLAGS_NO_SYNC,
            windows_sys::Win32::System::SystemServices::FLUSH_FLAGS_NO_SYNC
        );
        assert_eq!(
            FLUSH_FLAGS_FILE_DATA_SYNC_ONLY,
            windows_sys::Win32::System::SystemServices::FLUSH_FLAGS_FILE_DATA_SYNC_ONLY
        );
    }
}
