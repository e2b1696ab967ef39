//! Decisions: a pure function from (action, operation view) to what the driver
//! must do and count. No I/O, no allocation, no locks; the driver's callbacks
//! translate Filter Manager structures into an [`OperationView`] and a
//! [`Decision`] back into FLT_PREOP_* returns and field edits.
//!
//! Pitfalls encoded here (DESIGN §1): paging I/O is never blocked and never
//! flushed; FlushGuard's own flushes (and the paging writes they cause) pass
//! through; no flush is issued while a top-level IRP is set or while the post-op
//! is draining; FLT_PREOP_SYNCHRONIZE only for synchronous operations.

use flushguard_protocol::nt::{
    FILE_DIRECTORY_FILE, FILE_WRITE_THROUGH, IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FLUSH_BUFFERS,
    IRP_MJ_WRITE, IRP_PAGING_IO, SL_WRITE_THROUGH,
};
use flushguard_protocol::stats::Counter;
use flushguard_protocol::{FlushFlags, NtStatus};

use crate::policy::{Action, FileProvider, FlushMethod, Mode};
use crate::stats::{Counters, Stats};

/// The I/O operation (IRP major function) of a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MajorFunction {
    /// `IRP_MJ_CREATE`.
    Create,
    /// `IRP_MJ_WRITE`.
    Write,
    /// `IRP_MJ_FLUSH_BUFFERS`.
    FlushBuffers,
    /// `IRP_MJ_CLEANUP`.
    Cleanup,
    /// Any other major function (decisions pass it through).
    Other(u8),
}

impl MajorFunction {
    /// From `Iopb->MajorFunction`.
    pub const fn from_irp_mj(mj: u8) -> Self {
        match mj {
            IRP_MJ_CREATE => MajorFunction::Create,
            IRP_MJ_WRITE => MajorFunction::Write,
            IRP_MJ_FLUSH_BUFFERS => MajorFunction::FlushBuffers,
            IRP_MJ_CLEANUP => MajorFunction::Cleanup,
            other => MajorFunction::Other(other),
        }
    }
}

/// Pre- or post-operation callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `PFLT_PRE_OPERATION_CALLBACK`.
    Pre,
    /// `PFLT_POST_OPERATION_CALLBACK`.
    Post,
}

/// What the driver knows at a callback. Plain data; build it with
/// [`OperationView::new`] and struct update syntax.
///
/// The normalized file name parts and the requestor's process image go into a
/// [`crate::matcher::FileKey`] for the rule lookup (once per file, cached per
/// policy generation); `decide` then needs only the looked-up action and this view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationView {
    /// Major function.
    pub major: MajorFunction,
    /// Pre or post.
    pub phase: Phase,
    /// `Irp->Flags` bits (`IRP_PAGING_IO`, `IRP_NOCACHE`, `IRP_SYNCHRONOUS_PAGING_IO`),
    /// 0 for fast I/O.
    pub irp_flags: u32,
    /// `Iopb->OperationFlags` (`SL_WRITE_THROUGH`, ...).
    pub operation_flags: u8,
    /// `Iopb->MinorFunction` (for IRP_MJ_FLUSH_BUFFERS: the IRP_MN_FLUSH_* type).
    pub minor_function: u8,
    /// `FLT_IS_FASTIO_OPERATION(Data)`.
    pub fast_io: bool,
    /// `FltIsOperationSynchronous(Data)`.
    pub synchronous: bool,
    /// `Data->RequestorMode == KernelMode`.
    pub requestor_mode_kernel: bool,
    /// `IoGetTopLevelIrp() != NULL` (a file system is already on the stack).
    pub top_level_irp: bool,
    /// This thread is inside a flush FlushGuard issued (own-flush marker).
    pub own_flush_in_progress: bool,
    /// Post-op: `FLTFL_POST_OPERATION_DRAINING` is set.
    pub draining: bool,
    /// `FileObject->Flags & FO_WRITE_THROUGH`.
    pub file_object_write_through: bool,
    /// The stream-handle context says the file was written since its last flush.
    pub written_since_flush: bool,
    /// Write: byte offset. Other operations: 0.
    pub offset: i64,
    /// Write: length in bytes. Other operations: 0.
    pub length: u32,
    /// Create: `Parameters.Create.Options & 0x00FFFFFF`.
    pub create_options: u32,
    /// Post-op: `Data->IoStatus.Status`. Pre-op: `None`.
    pub status: Option<NtStatus>,
    /// Post-op: `Data->IoStatus.Information` (bytes written for a write).
    pub information: u64,
    /// Provider behind the file.
    pub provider: FileProvider,
}

impl OperationView {
    /// A view with everything else zero/false: synchronous, user mode, no
    /// top-level IRP, SMB provider.
    pub const fn new(major: MajorFunction, phase: Phase) -> Self {
        OperationView {
            major,
            phase,
            irp_flags: 0,
            operation_flags: 0,
            minor_function: 0,
            fast_io: false,
            synchronous: true,
            requestor_mode_kernel: false,
            top_level_irp: false,
            own_flush_in_progress: false,
            draining: false,
            file_object_write_through: false,
            written_since_flush: false,
            offset: 0,
            length: 0,
            create_options: 0,
            status: None,
            information: 0,
            provider: FileProvider::Smb,
        }
    }

    /// `irp_flags & IRP_PAGING_IO`.
    pub const fn is_paging_io(&self) -> bool {
        self.irp_flags & IRP_PAGING_IO != 0
    }
}

/// How the pre-operation callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PreOp {
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    #[default]
    SuccessNoCallback,
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK` (post-op may run at DISPATCH_LEVEL in any
    /// thread; a flush for it is left to FlushGuard's flush worker).
    SuccessWithCallback,
    /// `FLT_PREOP_SYNCHRONIZE` (only for synchronous operations: the post-op runs
    /// at PASSIVE_LEVEL in the issuing thread).
    Synchronize,
    /// `FLT_PREOP_DISALLOW_FASTIO` (fast I/O write on a governed file: the I/O
    /// manager reissues it as an IRP).
    DisallowFastIo,
}

/// When a flush is issued (the callbacks call it `FlushPlace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushPoint {
    /// In the post-write callback, after a successful write.
    AfterWrite,
    /// In the pre-cleanup callback.
    AtCleanup,
    /// In the post-write callback (or the flush worker), after a successful write,
    /// through the stream's group-commit coordinator: one flush covers every writer
    /// of the stream that registered before it started ([`crate::group_commit`]).
    GroupCommit(crate::group_commit::GroupOptions),
}

/// A flush FlushGuard issues. After a successful flush the driver clears the
/// stream-handle's written-since-flush mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRequest {
    /// FltFlushBuffers2 or ZwFlushBuffersFileEx.
    pub method: FlushMethod,
    /// Flush type (convert with `to_flt_flush_type` / `to_flush_flags_ex`).
    pub flags: FlushFlags,
    /// Where.
    pub point: FlushPoint,
}

/// A set of counters to increment by one (bit `i` = [`Counter`] with index `i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CountSet(u32);

impl CountSet {
    /// Adds `c`.
    pub fn insert(&mut self, c: Counter) {
        self.0 |= 1 << (c as u32);
    }

    /// True if `c` is in the set.
    pub const fn contains(&self, c: Counter) -> bool {
        self.0 & (1 << (c as u32)) != 0
    }

    /// The counters in index order.
    pub fn iter(&self) -> impl Iterator<Item = Counter> + '_ {
        Counter::ALL.into_iter().filter(|c| self.contains(*c))
    }
}

/// What to do at one callback and what to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    /// Pre-op return value (ignored in post-ops).
    pub pre_op: PreOp,
    /// IRP_MJ_CREATE: OR `FILE_WRITE_THROUGH` into `Parameters.Create.Options` and
    /// call `FltSetCallbackDataDirty`.
    pub set_create_write_through: bool,
    /// IRP_MJ_WRITE: OR `SL_WRITE_THROUGH` into `Iopb->OperationFlags` and call
    /// `FltSetCallbackDataDirty`.
    pub set_sl_write_through: bool,
    /// Return `FLT_PREOP_DISALLOW_FASTIO` (mirrors `pre_op`).
    pub disallow_fast_io: bool,
    /// A flush to issue at this callback (PASSIVE_LEVEL, no locks held, marked as
    /// FlushGuard's own).
    pub flush: Option<FlushRequest>,
    /// IRP_MJ_FLUSH_BUFFERS: set `Iopb->MinorFunction` to this type's
    /// `to_flush_minor()` and call `FltSetCallbackDataDirty`.
    pub upgrade_flush: Option<FlushFlags>,
    /// Set the stream-handle's written-since-flush mark.
    pub mark_written_since_flush: bool,
    /// Clear the mark (an application flush succeeded; in audit: the flush the
    /// audited mode would issue here, taken as done).
    pub clear_written_since_flush: bool,
    /// The rule is in audit mode: nothing above changes I/O.
    pub audit_only: bool,
    /// Counters to increment by one.
    pub counts: CountSet,
    /// Bytes to add to [`Counter::BytesGoverned`].
    pub bytes_governed: u64,
}

impl Decision {
    fn count(&mut self, c: Counter) {
        self.counts.insert(c);
    }

    /// Applies the decision's counts to `stats` and the rule's counters.
    pub fn record(&self, stats: &Stats, rule: &Counters) {
        for c in self.counts.iter() {
            stats.add(rule, c, 1);
        }
        if self.bytes_governed != 0 {
            stats.add(rule, Counter::BytesGoverned, self.bytes_governed);
        }
    }
}

/// Decides what to do for one callback under `action`.
///
/// Pure and total: never panics, never allocates, takes no lock; O(1). Callable
/// at any IRQL, including post-operation callbacks at DISPATCH_LEVEL.
pub fn decide(action: &Action, view: &OperationView) -> Decision {
    let mut d = enforce(action, action.effective_mode(), view);
    if action.mode == Mode::Audit {
        audit(&mut d);
    }
    d
}

/// Turns an enforcing decision into its audit counterpart: count, change no I/O.
///
/// Audit predicts: on the same operations its `audit_would_*` counters equal what the
/// audited mode does when it enforces (issue 10 defect 4). So
/// - a write the enforcing mode would synchronize is synchronized (only a synchronous
///   operation, whose issuing thread waits for it anyway): its post-write then runs in
///   that thread at IRQL <= APC_LEVEL, where the enforcing mode decides its flush and
///   where the rule's counters can be reached (an unsynchronized post-write at
///   DISPATCH_LEVEL on a local volume could neither flush nor count);
/// - a would-be flush counts as done for the written-since-flush bookkeeping
///   (`clear_written_since_flush`), as the enforcing mode's flush would clear the
///   mark: the close after a flushed write is not counted a second time.
fn audit(d: &mut Decision) {
    let mut out = Decision {
        audit_only: true,
        ..Decision::default()
    };
    for c in d.counts.iter() {
        match c {
            Counter::WriteThroughForced => out.count(Counter::AuditWouldWriteThrough),
            Counter::AppFlushesUpgraded => out.count(Counter::AuditWouldUpgrade),
            Counter::FastIoDisallowed => {}
            other => out.count(other),
        }
    }
    if d.flush.is_some() {
        out.count(Counter::AuditWouldFlush);
        out.clear_written_since_flush = true;
    }
    out.bytes_governed = d.bytes_governed;
    // Bookkeeping only (no I/O change): lets flush-at-cleanup audits count.
    out.mark_written_since_flush = d.mark_written_since_flush;
    out.clear_written_since_flush |= d.clear_written_since_flush;
    // A post-op callback changes no I/O; FLT_PREOP_SYNCHRONIZE (never without
    // `synchronous`) changes only the thread our own post-op runs in.
    if matches!(d.pre_op, PreOp::Synchronize | PreOp::SuccessWithCallback) {
        out.pre_op = d.pre_op;
    }
    *d = out;
}

fn enforce(action: &Action, mode: Mode, v: &OperationView) -> Decision {
    let mut d = Decision::default();
    let flushing = mode.is_flushing();
    match (v.major, v.phase) {
        (MajorFunction::Create, Phase::Pre)
            if mode == Mode::WriteThrough
                && v.create_options & FILE_DIRECTORY_FILE == 0
                && v.create_options & FILE_WRITE_THROUGH == 0 =>
        {
            d.set_create_write_through = true;
            d.count(Counter::WriteThroughForced);
        }
        (MajorFunction::Write, Phase::Pre) => {
            if v.own_flush_in_progress {
                d.count(Counter::OwnFlushesPassed);
                return d;
            }
            if v.is_paging_io() {
                d.count(Counter::PagingIoPassed);
                if action.count_paging_io {
                    d.count(Counter::WritesSeen);
                    if mode != Mode::Pass {
                        d.bytes_governed = u64::from(v.length);
                    }
                }
                if flushing {
                    d.mark_written_since_flush = true;
                }
                return d;
            }
            if mode == Mode::Pass {
                d.count(Counter::WritesSeen);
                return d;
            }
            if v.fast_io {
                d.pre_op = PreOp::DisallowFastIo;
                d.disallow_fast_io = true;
                d.count(Counter::FastIoDisallowed);
                return d;
            }
            d.count(Counter::WritesSeen);
            d.count(Counter::WritesGoverned);
            d.bytes_governed = u64::from(v.length);
            match mode {
                Mode::WriteThrough => {
                    if v.operation_flags & SL_WRITE_THROUGH == 0 {
                        d.set_sl_write_through = true;
                        if !v.file_object_write_through {
                            d.count(Counter::WriteThroughForced);
                        }
                    }
                }
                Mode::FlushAfterWrite | Mode::GroupCommit => {
                    d.mark_written_since_flush = true;
                    d.pre_op = if v.synchronous {
                        PreOp::Synchronize
                    } else {
                        PreOp::SuccessWithCallback
                    };
                }
                Mode::FlushOnClose => d.mark_written_since_flush = true,
                Mode::Pass | Mode::Audit => {}
            }
        }
        (MajorFunction::Write, Phase::Post) => {
            if !mode.flushes_after_write()
                || v.is_paging_io()
                || v.own_flush_in_progress
                || v.fast_io
            {
                return d;
            }
            if !v.status.is_some_and(NtStatus::is_success) {
                return d;
            }
            if v.draining || v.top_level_irp {
                // Left to the cleanup flush (the mark stays set).
                d.count(Counter::FlushesSkipped);
                return d;
            }
            d.flush = Some(FlushRequest {
                method: action.method,
                flags: action.flags,
                point: match (mode, action.group) {
                    (Mode::GroupCommit, Some(g)) => FlushPoint::GroupCommit(g),
                    _ => FlushPoint::AfterWrite,
                },
            });
        }
        (MajorFunction::FlushBuffers, Phase::Pre) => {
            if v.own_flush_in_progress {
                d.count(Counter::OwnFlushesPassed);
                return d;
            }
            d.count(Counter::AppFlushesSeen);
            // An undefined minor function is left alone (and covers nothing).
            let requested = FlushFlags::from_flush_minor(v.minor_function).ok();
            if let (Some(target), Some(current)) = (action.upgrade_app_flush, requested) {
                let joined = current.join(target);
                if joined != current {
                    d.upgrade_flush = Some(joined);
                    d.count(Counter::AppFlushesUpgraded);
                }
            }
            // The post-flush of a successful application flush clears the written-
            // since-flush mark, but only if that flush (as upgraded) is at least as
            // strong as the rule's own flush type: a NO_SYNC or FILE_DATA_ONLY flush
            // writes the cache back without asking the storage to make it durable, so
            // under a `full` rule the close flush is still due.
            let effective = d.upgrade_flush.or(requested);
            if flushing && effective.is_some_and(|e| e.covers(action.flags)) {
                d.pre_op = PreOp::SuccessWithCallback;
            }
        }
        (MajorFunction::FlushBuffers, Phase::Post)
            if flushing
                && !v.own_flush_in_progress
                && v.status.is_some_and(NtStatus::is_success)
                && !v.draining =>
        {
            d.clear_written_since_flush = true;
        }
        (MajorFunction::Cleanup, Phase::Pre) if flushing && v.written_since_flush => {
            if v.own_flush_in_progress || v.top_level_irp {
                d.count(Counter::FlushesSkipped);
            } else {
                d.flush = Some(FlushRequest {
                    method: action.method,
                    flags: action.flags,
                    point: FlushPoint::AtCleanup,
                });
            }
        }
        _ => {}
    }
    d
}
