//! The simulated I/O manager + Filter Manager dispatch: issues operations to the
//! real [`Filter`] callbacks the way Windows would, and checks the callbacks'
//! return contract on every call.

use std::sync::Arc;

use flushguard_engine::callbacks::{
    CallbackData, CompletionContext, Filter, Irql, PolicySource, PostOpFlags, PostOpStatus, PreOp,
    PreOpStatus, FILE_WRITE_THROUGH, IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FLUSH_BUFFERS,
    IRP_MJ_WRITE, IRP_PAGING_IO, SL_WRITE_THROUGH,
};
use flushguard_protocol::nt::{IRP_MJ_FILE_SYSTEM_CONTROL, IRP_MJ_SET_INFORMATION};
use flushguard_protocol::NtStatus;

use flushguard_engine::callbacks::{Counter, TopLevelIrp, FO_SYNCHRONOUS_IO};

use crate::fake::{self, Fake, FakeData, FakeOptions, Pending, IRP_SYNCHRONOUS_PAGING_IO};

/// `FILE_SYNCHRONOUS_IO_ALERT` (0x10) | `FILE_SYNCHRONOUS_IO_NONALERT` (0x20).
pub const FILE_SYNCHRONOUS_IO_ANY: u32 = 0x30;

/// A monotonic fake system clock (100-ns units).
pub fn fake_clock() -> u64 {
    static NOW: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(133_000_000_000_000_000);
    NOW.fetch_add(10_000, std::sync::atomic::Ordering::Relaxed)
}

/// Calls the post-operation callback matching `data.major`.
pub fn dispatch_post(
    filter: &Filter<Fake>,
    data: &mut FakeData,
    ctx: Option<CompletionContext>,
    flags: PostOpFlags,
) -> PostOpStatus {
    crate::alloc_gate::engine(|| match data.major {
        IRP_MJ_CREATE => filter.post_create(data, ctx, flags),
        IRP_MJ_WRITE => filter.post_write(data, ctx, flags),
        IRP_MJ_FLUSH_BUFFERS => filter.post_flush(data, ctx, flags),
        IRP_MJ_FILE_SYSTEM_CONTROL | IRP_MJ_SET_INFORMATION => {
            filter.post_data_change(data, ctx, flags)
        }
        _ => PostOpStatus::FinishedProcessing,
    })
}

/// How a simulated write is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Cached IRP write.
    Cached,
    /// Non-cached IRP write (`IRP_NOCACHE`).
    NonCached,
    /// Asynchronous paging write (`IRP_PAGING_IO`): the mapped / modified page
    /// writer.
    Paging,
    /// Synchronous paging write (`IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO`) with a
    /// file system's IRP top-level: the cache write-back `CcFlushCache` issues inside
    /// a flush's dispatch (the flush's own when issued in the flushing thread).
    WriteBack,
    /// Synchronous paging write from the lazy writer (`FSRTL_CACHE_TOP_LEVEL_IRP`
    /// top-level).
    LazyWriter,
    /// Fast I/O write (reissued as an IRP when disallowed).
    FastIo,
}

impl WriteKind {
    /// `IRP_PAGING_IO` is set.
    pub const fn is_paging(self) -> bool {
        matches!(
            self,
            WriteKind::Paging | WriteKind::WriteBack | WriteKind::LazyWriter
        )
    }
}

/// One simulated write.
#[derive(Clone, Copy, Debug)]
pub struct WriteSpec {
    /// Kind.
    pub kind: WriteKind,
    /// `FltIsOperationSynchronous`.
    pub synchronous: bool,
    /// IRQL the post-operation runs at (capped at APC_LEVEL after SYNCHRONIZE).
    pub post_irql: Irql,
    /// A top-level IRP is set on the issuing thread.
    pub top_level: bool,
    /// Completion status.
    pub status: NtStatus,
    /// Keep the post-operation in flight (completed later or drained).
    pub complete_later: bool,
}

impl WriteSpec {
    /// An asynchronous write (`FltIsOperationSynchronous` false) whose post-operation
    /// runs at DISPATCH_LEVEL in the completing thread, as an I/O completion may.
    pub fn asynchronous() -> Self {
        WriteSpec {
            synchronous: false,
            post_irql: Irql::DISPATCH_LEVEL,
            ..WriteSpec::default()
        }
    }
}

impl Default for WriteSpec {
    fn default() -> Self {
        WriteSpec {
            kind: WriteKind::Cached,
            synchronous: true,
            post_irql: Irql::PASSIVE_LEVEL,
            top_level: false,
            status: NtStatus::SUCCESS,
            complete_later: false,
        }
    }
}

/// A filter loaded on a fake Filter Manager.
pub struct Harness {
    /// The fake.
    pub fake: Fake,
    /// The filter under test.
    pub filter: Arc<Filter<Fake>>,
    /// What the filter loaded its policy from.
    pub source: PolicySource,
}

impl Harness {
    /// Loads a filter (DriverEntry) on a fresh fake.
    pub fn new(options: FakeOptions) -> Self {
        Harness::on(Fake::new(options))
    }

    /// [`Harness::new`] with the fake's call log on from the load on
    /// ([`Fake::log_calls`]).
    pub fn logging_calls(options: FakeOptions) -> Self {
        let fake = Fake::new(options);
        fake.log_calls();
        Harness::on(fake)
    }

    /// Loads a filter (DriverEntry) on `fake` (prepared by the caller, e.g. with a
    /// failure injected at load: [`Fake::inject`]).
    pub fn on(fake: Fake) -> Self {
        fake::set_irql(Irql::PASSIVE_LEVEL);
        let state = flushguard_engine::handler::State::new(fake_clock, (0, 1, 0));
        let (filter, source) = Filter::load(fake.clone(), state);
        let filter = Arc::new(filter);
        fake.attach(&filter);
        Harness {
            fake,
            filter,
            source,
        }
    }

    /// Records a violation unless `pre` obeys the pre-operation return contract for
    /// `before` -> `after` (see DESIGN §1).
    fn check_pre(&self, what: &str, pre: &PreOp, before: &FakeData, after: &FakeData) {
        let f = &self.fake;
        let with_ctx = matches!(
            pre.status(),
            PreOpStatus::SuccessWithCallback | PreOpStatus::Synchronize
        );
        if pre.completion_context().is_some() != with_ctx {
            f.violation(format!(
                "{what}: completion context with {:?}",
                pre.status()
            ));
        }
        if pre.status() == PreOpStatus::DisallowFastIo && !before.fast_io {
            f.violation(format!(
                "{what}: FLT_PREOP_DISALLOW_FASTIO on an IRP operation"
            ));
        }
        if pre.status() == PreOpStatus::Synchronize && (before.fast_io || !before.synchronous) {
            f.violation(format!(
                "{what}: FLT_PREOP_SYNCHRONIZE on an asynchronous operation"
            ));
        }
        let changed = before.changeable() != after.changeable();
        if changed != after.dirty {
            f.violation(format!(
                "{what}: changed={changed} but dirty={}",
                after.dirty
            ));
        }
        if before.irp_flags & IRP_PAGING_IO != 0 && pre.status() == PreOpStatus::DisallowFastIo {
            f.violation(format!("{what}: paging I/O blocked"));
        }
    }

    fn pre(
        &self,
        what: &str,
        data: &mut FakeData,
        irql: Irql,
        call: impl Fn(&Filter<Fake>, &mut FakeData) -> PreOp,
    ) -> PreOp {
        fake::set_irql(irql);
        let before = data.clone();
        let g = self.fake.enter_callback(what);
        let pre = crate::alloc_gate::engine(|| call(&self.filter, data));
        drop(g);
        self.check_pre(what, &pre, &before, data);
        data.dirty = false;
        pre
    }

    fn post(&self, what: &str, data: &mut FakeData, pre: &PreOp, irql: Irql, later: bool) {
        if !matches!(
            pre.status(),
            PreOpStatus::SuccessWithCallback | PreOpStatus::Synchronize
        ) {
            return;
        }
        let irql = if pre.status() == PreOpStatus::Synchronize {
            irql.min(Irql::APC_LEVEL)
        } else {
            irql
        };
        if later && pre.status() == PreOpStatus::SuccessWithCallback {
            self.fake.push_pending(Pending {
                data: data.clone(),
                ctx: pre.completion_context(),
                safe_callback: false,
            });
            return;
        }
        fake::set_irql(irql);
        let deferred_before = fake::deferred_by_this_thread();
        let g = self.fake.enter_callback(what);
        let status = dispatch_post(&self.filter, data, pre.completion_context(), PostOpFlags(0));
        drop(g);
        let deferred = fake::deferred_by_this_thread() > deferred_before;
        if (status == PostOpStatus::MoreProcessingRequired) != deferred {
            self.fake.violation(format!(
                "{what}: MORE_PROCESSING_REQUIRED iff work was deferred, got {status:?}"
            ));
        }
        fake::set_irql(Irql::PASSIVE_LEVEL);
    }

    /// IRP_MJ_CREATE of a new file object; `None` if the Filter Manager no longer
    /// sends operations (unloading) or the create failed.
    pub fn open(
        &self,
        name: &str,
        provider: Option<u32>,
        process: &str,
        options: u32,
        status: NtStatus,
    ) -> Option<u64> {
        let _op = self.fake.begin_operation()?;
        let file = self.fake.new_file(
            name,
            provider,
            process,
            options & FILE_SYNCHRONOUS_IO_ANY != 0,
        );
        let mut data = FakeData::new(file, IRP_MJ_CREATE);
        data.create_options = options;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre("pre-create", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_create(d)
        });
        data.status = status;
        let write_through = data.create_options & FILE_WRITE_THROUGH != 0;
        self.fake.with_file(file, |f| {
            f.opened = status.is_success();
            f.write_through = write_through;
        });
        self.post("post-create", &mut data, &pre, Irql::PASSIVE_LEVEL, false);
        if status.is_success() {
            Some(file)
        } else {
            self.fake.close_file(file);
            None
        }
    }

    /// Create options the file system saw for the last [`Harness::open_seen`] call.
    pub fn open_seen(
        &self,
        name: &str,
        provider: Option<u32>,
        process: &str,
        options: u32,
    ) -> (Option<u64>, u32) {
        let Some(_op) = self.fake.begin_operation() else {
            return (None, 0);
        };
        let file = self.fake.new_file(
            name,
            provider,
            process,
            options & FILE_SYNCHRONOUS_IO_ANY != 0,
        );
        let mut data = FakeData::new(file, IRP_MJ_CREATE);
        data.create_options = options;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre("pre-create", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_create(d)
        });
        let seen = data.create_options;
        data.status = NtStatus::SUCCESS;
        self.fake.with_file(file, |f| {
            f.opened = true;
            f.write_through = seen & FILE_WRITE_THROUGH != 0;
        });
        self.post("post-create", &mut data, &pre, Irql::PASSIVE_LEVEL, false);
        (Some(file), seen)
    }

    /// One write through the handle `file`. Returns the operation flags the file
    /// system saw (`None` if nothing reached it).
    pub fn write(&self, file: u64, spec: WriteSpec) -> Option<u8> {
        let _op = self.fake.begin_operation()?;
        let irp_flags = match spec.kind {
            WriteKind::Cached | WriteKind::FastIo => 0,
            WriteKind::NonCached => 0x1,
            WriteKind::Paging => IRP_PAGING_IO | 0x1,
            WriteKind::WriteBack | WriteKind::LazyWriter => {
                IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO | 0x1
            }
        };
        let mut data = FakeData::write(file, irp_flags, 0, 512);
        data.fast_io = spec.kind == WriteKind::FastIo;
        data.synchronous = spec.synchronous;
        data.fo_flags = self.fake.fo_flags(file) & flushguard_protocol::nt::FO_WRITE_THROUGH;
        let mut spec = spec;
        let sync_fo = !spec.kind.is_paging() && self.fake.fo_flags(file) & FO_SYNCHRONOUS_IO != 0;
        if sync_fo {
            // The I/O manager serializes the whole service under the file object lock
            // and waits for completion: the write is synchronous.
            data.fo_flags |= FO_SYNCHRONOUS_IO;
            data.synchronous = true;
            spec.complete_later = false;
        }
        fake::set_top_level_irp(match spec.kind {
            WriteKind::LazyWriter => TopLevelIrp::Cache,
            WriteKind::Paging => TopLevelIrp::ModWrite,
            WriteKind::WriteBack => TopLevelIrp::FileSystem,
            _ if spec.top_level => TopLevelIrp::FileSystem,
            _ => TopLevelIrp::None,
        });
        let pre_irql = if spec.kind.is_paging() {
            Irql::APC_LEVEL
        } else {
            Irql::PASSIVE_LEVEL
        };
        let mut pre = self.pre("pre-write", &mut data, pre_irql, |f, d| f.pre_write(d));
        if pre.status() == PreOpStatus::DisallowFastIo {
            // The I/O manager reissues the write as an IRP.
            data.fast_io = false;
            data.dirty = false;
            pre = self.pre(
                "pre-write (reissued IRP)",
                &mut data,
                Irql::PASSIVE_LEVEL,
                |f, d| f.pre_write(d),
            );
        }
        let seen = data.operation_flags;
        self.fake.with_file(file, |f| {
            f.writes += 1;
            if seen & SL_WRITE_THROUGH != 0 {
                f.write_through_writes += 1;
            }
        });
        fake::set_last_write_done(fake::tick());
        data.status = spec.status;
        self.post(
            "post-write",
            &mut data,
            &pre,
            spec.post_irql,
            spec.complete_later,
        );
        fake::set_top_level(false);
        Some(seen)
    }

    /// An IRP_MJ_FILE_SYSTEM_CONTROL (`IRP_MN_USER_FS_REQUEST`) with FSCTL `code` on
    /// `file`, completing with `status` (the post-operation at PASSIVE_LEVEL in this
    /// thread when synchronous, else at `DISPATCH_LEVEL`). Returns the pre-operation's
    /// status (`None` if the Filter Manager no longer calls the filter).
    pub fn fs_control(
        &self,
        file: u64,
        code: u32,
        synchronous: bool,
        status: NtStatus,
    ) -> Option<PreOpStatus> {
        let _op = self.fake.begin_operation()?;
        let mut data = FakeData::new(file, IRP_MJ_FILE_SYSTEM_CONTROL);
        data.fs_control_code = code;
        data.synchronous = synchronous;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre("pre-fs-control", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_fs_control(d)
        });
        data.status = status;
        let irql = if synchronous {
            Irql::PASSIVE_LEVEL
        } else {
            Irql::DISPATCH_LEVEL
        };
        self.post("post-fs-control", &mut data, &pre, irql, false);
        Some(pre.status())
    }

    /// An IRP_MJ_SET_INFORMATION of `class` (`FILE_INFORMATION_CLASS`) on `file`,
    /// completing with `status`. Returns the pre-operation's status.
    pub fn set_information(&self, file: u64, class: u32, status: NtStatus) -> Option<PreOpStatus> {
        let _op = self.fake.begin_operation()?;
        let mut data = FakeData::new(file, IRP_MJ_SET_INFORMATION);
        data.file_information_class = class;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre(
            "pre-set-information",
            &mut data,
            Irql::PASSIVE_LEVEL,
            |f, d| f.pre_set_information(d),
        );
        data.status = status;
        self.post(
            "post-set-information",
            &mut data,
            &pre,
            Irql::PASSIVE_LEVEL,
            false,
        );
        Some(pre.status())
    }

    /// An application IRP_MJ_FLUSH_BUFFERS with `minor` (`IRP_MN_FLUSH_*`). Returns
    /// the minor function the file system saw.
    pub fn flush(&self, file: u64, minor: u8, status: NtStatus) -> Option<u8> {
        let _op = self.fake.begin_operation()?;
        let mut data = FakeData::new(file, IRP_MJ_FLUSH_BUFFERS);
        data.minor = minor;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre("pre-flush", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_flush(d)
        });
        let seen = data.minor;
        data.status = status;
        self.post("post-flush", &mut data, &pre, Irql::PASSIVE_LEVEL, false);
        Some(seen)
    }

    /// An application IRP_MJ_FLUSH_BUFFERS that is still in progress while `inside`
    /// runs: the pre-flush, then `inside` (the flush's cache write-back — use
    /// [`WriteKind::WriteBack`] writes — or any other I/O that completes while the
    /// flush is under way), then the post-flush with `status`. Returns the minor
    /// function the file system saw.
    pub fn flush_around(
        &self,
        file: u64,
        minor: u8,
        status: NtStatus,
        inside: impl FnOnce(),
    ) -> Option<u8> {
        let _op = self.fake.begin_operation()?;
        let mut data = FakeData::new(file, IRP_MJ_FLUSH_BUFFERS);
        data.minor = minor;
        data.fo_flags = self.fake.fo_flags(file);
        let pre = self.pre("pre-flush", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_flush(d)
        });
        let seen = data.minor;
        inside();
        data.status = status;
        self.post("post-flush", &mut data, &pre, Irql::PASSIVE_LEVEL, false);
        Some(seen)
    }

    /// Closes the user handle: IRP_MJ_CLEANUP, then the file object goes away.
    pub fn close(&self, file: u64) {
        self.cleanup(file);
        self.fake.close_file(file);
    }

    /// Closes the last user handle (IRP_MJ_CLEANUP) while I/O still references the
    /// file object, which stays until [`Fake::close_file`] (IRP_MJ_CLOSE).
    pub fn cleanup(&self, file: u64) {
        let Some(_op) = self.fake.begin_operation() else {
            return;
        };
        let mut data = FakeData::new(file, IRP_MJ_CLEANUP);
        data.fo_flags = self.fake.fo_flags(file);
        self.pre("pre-cleanup", &mut data, Irql::PASSIVE_LEVEL, |f, d| {
            f.pre_cleanup(d)
        });
        self.fake.with_file(file, |f| {
            f.user_handle_open = false;
            f.cleanups += 1;
        });
        if self.fake.with_file(file, |f| f.cleanups).unwrap_or(0) > 1 {
            self.fake
                .violation("more than one IRP_MJ_CLEANUP for one file object");
        }
    }

    /// Completes the oldest in-flight post-operation, or runs the flush worker for the
    /// oldest pended write (a worker thread at PASSIVE_LEVEL). False if none.
    pub fn complete_one(&self, irql: Irql) -> bool {
        let Some(_op) = self.fake.begin_operation() else {
            return false;
        };
        let Some(mut p) = self.fake.pop_pending() else {
            return false;
        };
        // FileObject->Flags are read live: the handle may have closed meanwhile.
        p.data.fo_flags = self.fake.fo_flags(p.data.file);
        if p.safe_callback {
            self.fake.run_flush_worker(&self.filter, &mut p);
        } else {
            fake::set_irql(irql);
            let g = self.fake.enter_callback("post-operation (completed later)");
            dispatch_post(&self.filter, &mut p.data, p.ctx, PostOpFlags(0));
            drop(g);
            fake::set_irql(Irql::PASSIVE_LEVEL);
        }
        true
    }

    /// Runs every pending item.
    pub fn complete_all(&self) {
        while self.complete_one(Irql::DISPATCH_LEVEL) {}
    }

    /// One port message from a connected client, while the server port is open
    /// (clients connected before the close keep sending until unregister).
    pub fn message(&self, request: &[u8], reply: &mut [u8]) -> Option<Result<usize, NtStatus>> {
        let _op = self.fake.begin_operation()?;
        fake::set_irql(Irql::PASSIVE_LEVEL);
        let g = self.fake.enter_callback("message notify");
        let r = self.filter.handle_message(request, reply);
        drop(g);
        Some(r)
    }

    /// FilterUnload.
    pub fn unload(&self) {
        fake::set_irql(Irql::PASSIVE_LEVEL);
        self.filter.unload();
    }

    /// Panics with every recorded violation and every reference still held.
    pub fn assert_clean(&self) {
        let v = self.fake.violations();
        assert!(
            v.is_empty(),
            "Filter Manager rule violations:\n  {}",
            v.join("\n  ")
        );
        let o = self.fake.outstanding();
        assert!(o.is_empty(), "references still held: {o:?}");
        assert!(
            self.filter.own_flushes().is_empty(),
            "recursion guard not cleared"
        );
        let above_apc = self.filter.counters().get(Counter::PolicyAboveApcLevel);
        assert_eq!(
            above_apc, 0,
            "the policy spin lock was needed above APC_LEVEL"
        );
    }

    /// The data `CallbackData` view of a fresh operation (for direct calls).
    pub fn data(&self, file: u64, major: u8) -> FakeData {
        let d = FakeData::new(file, major);
        debug_assert_eq!(d.major_function(), major);
        d
    }
}
