//! The minifilter's callback logic, generic over the Filter Manager.
//!
//! [`Filter`] holds everything the callbacks share (the engine
//! [`State`](crate::handler::State), the MUP provider table, the recursion guard, the
//! callback counters, the lifecycle phase)
//! and has one method per Filter Manager callback. The driver's `extern "system"`
//! callbacks only turn pointers into a [`FilterManager::Data`] and call these; the
//! host harness (`tests/`) and `flushctl replay` call the very same methods.
//!
//! Decisions (which rule, which mode, which flush) come from the engine
//! ([`crate::matcher`] lookup + [`crate::decision::decide`]); this module holds the
//! *sequencing* DESIGN.md §1 demands:
//! - flushes only at PASSIVE_LEVEL, never for paging I/O, never with a top-level
//!   IRP, never recursively (our own flush's re-entries pass through untouched);
//! - a flush is issued only (a) in a synchronized post-operation running in the
//!   thread that issued the operation (`FLT_PREOP_SYNCHRONIZE`, used only when
//!   `FltIsOperationSynchronous`), (b) in pre-cleanup, or (c) by FlushGuard's flush
//!   worker, to which an asynchronous write is pended (`FltQueueDeferredIoWorkItem`,
//!   `FLT_POSTOP_MORE_PROCESSING_REQUIRED`, completed after the flush with
//!   `FltCompletePendedPostOperation`; at most [`MAX_PENDED_WRITES`] at once).
//!   `FltDoCompletionProcessingWhenSafe` is not used: its DDI page excludes
//!   IRP_MJ_WRITE. Draining post-operations only clean up;
//! - `ZwFlushBuffersFileEx` only with special kernel APCs enabled
//!   (`KeAreAllApcsDisabled`), else the flush goes through `FltFlushBuffers(2)`;
//! - a completion context only with `FLT_PREOP_SUCCESS_WITH_CALLBACK` or
//!   `FLT_PREOP_SYNCHRONIZE`; `FltSetCallbackDataDirty` if and only if the operation
//!   was changed;
//! - every name, image name, context and handle released on every path; no lock is
//!   ever held (all shared state is atomics), so none is held across a flush;
//! - every failure counted, the user's I/O passed on unmodified (fail open);
//! - teardown: close the server port, then `FltUnregisterFilter` ([`Filter::unload`]).

mod context;
mod counters;
mod data_change;
mod fltmgr;
mod glue;
mod guard;
mod providers;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use flushguard_protocol::NtStatus;

pub use context::{
    CompletionContext, FlushOrder, StreamContext, WriteClass, DEFAULT_RULE_SLOT, EXEMPT_SLOT,
    UNCLASSIFIED_SLOT,
};
pub use counters::{CallbackCounters, Counter};
pub use fltmgr::{
    CallbackData, FilterManager, Irql, PostOpFlags, PostOpStatus, PreOpStatus, TopLevelIrp,
    FLTFL_POST_OPERATION_DRAINING,
};
pub use glue::FlushPlace;
pub use guard::{EnterError, OwnFlushSet, OwnFlushToken, OWN_FLUSH_SLOTS};
pub use providers::{
    ProviderTable, NFS_DEVICE, RDPDR_DEVICE, RERESOLVE_INTERVAL_US, SMB_DEVICE, WEBDAV_DEVICE,
};

use crate::decision::{Decision, MajorFunction, OperationView, Phase, PreOp as EnginePreOp};
use glue::PolicySnapshot;

/// Most asynchronous writes pended to the flush worker at once. Each holds its IRP
/// and, while it flushes, a system worker thread: past this bound a governed
/// asynchronous write completes without its flush (fail open, counted
/// `FlushWorkerFull`); the handle stays marked written, so the cleanup flush covers it.
pub const MAX_PENDED_WRITES: u32 = 256;

pub use flushguard_protocol::nt::{
    FILE_WRITE_THROUGH, IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FLUSH_BUFFERS, IRP_MJ_WRITE,
    IRP_PAGING_IO, SL_WRITE_THROUGH,
};
/// `FO_SYNCHRONOUS_IO` (0x2) in `FILE_OBJECT::Flags`: the I/O manager serializes I/O
/// on the file object with its file object lock, held for the whole system service.
/// Source: wdm.h, "FILE_OBJECT" DDI page.
pub const FO_SYNCHRONOUS_IO: u32 = 0x0000_0002;
/// `FO_CLEANUP_COMPLETE` (0x4000) in `FILE_OBJECT::Flags`: IRP_MJ_CLEANUP completed
/// (the last handle is closed). Source: wdm.h, "FILE_OBJECT" DDI page.
pub const FO_CLEANUP_COMPLETE: u32 = 0x0000_4000;
/// `STATUS_REPARSE` (0x104): a create that did not open a file object.
pub const STATUS_REPARSE: NtStatus = NtStatus(0x0000_0104);
/// `STATUS_OBJECT_NAME_NOT_FOUND` (0xC0000034): e.g. no `Parameters\Policy` value.
pub const STATUS_OBJECT_NAME_NOT_FOUND: NtStatus = NtStatus(0xC000_0034_u32 as i32);

/// A file classified under the policy in force.
struct Classified {
    slot: u32,
    action: crate::policy::Action,
    provider: crate::policy::FileProvider,
    provider_known: bool,
}

/// Result of a pre-operation callback.
///
/// Constructed only through [`PreOp::pass`], [`PreOp::with_callback`],
/// [`PreOp::synchronize`] and [`PreOp::disallow_fast_io`], so a completion context
/// exists only with `FLT_PREOP_SUCCESS_WITH_CALLBACK` or `FLT_PREOP_SYNCHRONIZE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreOp {
    status: PreOpStatus,
    completion: Option<CompletionContext>,
}

impl PreOp {
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`, no completion context.
    pub const fn pass() -> Self {
        PreOp {
            status: PreOpStatus::SuccessNoCallback,
            completion: None,
        }
    }
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK` carrying `ctx`.
    pub const fn with_callback(ctx: CompletionContext) -> Self {
        PreOp {
            status: PreOpStatus::SuccessWithCallback,
            completion: Some(ctx),
        }
    }
    /// `FLT_PREOP_SYNCHRONIZE` carrying `ctx`.
    pub const fn synchronize(ctx: CompletionContext) -> Self {
        PreOp {
            status: PreOpStatus::Synchronize,
            completion: Some(ctx),
        }
    }
    /// `FLT_PREOP_DISALLOW_FASTIO`, no completion context.
    pub const fn disallow_fast_io() -> Self {
        PreOp {
            status: PreOpStatus::DisallowFastIo,
            completion: None,
        }
    }
    /// The `FLT_PREOP_CALLBACK_STATUS`.
    pub const fn status(&self) -> PreOpStatus {
        self.status
    }
    /// The completion context (`None` = NULL).
    pub const fn completion_context(&self) -> Option<CompletionContext> {
        self.completion
    }
}

/// Lifecycle phase of a [`Filter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LifecyclePhase {
    /// Registered and filtering.
    Running = 0,
    /// [`Filter::unload`] started: new pre-operations pass through.
    Unloading = 1,
    /// `FltUnregisterFilter` returned: no callback may run.
    Unregistered = 2,
}

/// Everything the callbacks share. One per loaded driver (a global in the driver,
/// a value in tests). All methods take `&self` and are safe to call concurrently.
pub struct Filter<F: FilterManager> {
    fm: F,
    state: crate::handler::State,
    providers: ProviderTable,
    own_flushes: OwnFlushSet,
    /// Asynchronous writes pended to the flush worker, not yet flushed.
    pended_writes: AtomicU32,
    phase: AtomicU8,
    instances: AtomicU32,
}

/// What [`Filter::load`] found in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// `Parameters\Policy` decoded and validated.
    Registry,
    /// No `Parameters\Policy` value: the pass-through policy.
    Absent,
    /// The value could not be read or was invalid: the pass-through policy, and an
    /// event recording the status.
    Invalid(NtStatus),
}

impl<F: FilterManager> Filter<F> {
    /// Builds the shared state at DriverEntry (PASSIVE_LEVEL) around a fresh engine
    /// `state` (pass-through): resolves the MUP provider ids and reports the
    /// capabilities. The policy stays pass-through until
    /// [`Filter::load_persisted_policy`]. (Two steps so the driver can build the value
    /// in place with a small stack frame.) Installs the Filter Manager's policy
    /// locks ([`FilterManager::policy_locks`]) in `state`.
    pub fn new(fm: F, mut state: crate::handler::State) -> Self {
        state.set_locks(fm.policy_locks());
        let providers = ProviderTable::resolve(&fm);
        let mut caps = flushguard_protocol::Capabilities::empty();
        caps.set(
            flushguard_protocol::Capabilities::FLT_FLUSH_BUFFERS2,
            fm.has_flt_flush_buffers2(),
        );
        state.set_capabilities(caps);
        Filter {
            fm,
            state,
            providers,
            instances: AtomicU32::new(0),
            own_flushes: OwnFlushSet::new(),
            pended_writes: AtomicU32::new(0),
            phase: AtomicU8::new(LifecyclePhase::Running as u8),
        }
    }

    /// Reads `Parameters\Policy` (REG_BINARY, wire encoding) and activates it
    /// (PASSIVE_LEVEL, DriverEntry). If the value is absent, unreadable or invalid the
    /// pass-through policy stays (an unreadable or invalid value records a
    /// `RegistryPolicyRejected` event). Never fails: a bad registry value must not
    /// stop the driver loading.
    pub fn load_persisted_policy(&self) -> PolicySource {
        let mut raw = Vec::new();
        match self.fm.read_policy_value(&mut raw) {
            Ok(()) => match self.state.load_registry_policy(&raw) {
                Ok(_) => PolicySource::Registry,
                Err(e) => PolicySource::Invalid(e.ntstatus()),
            },
            Err(status) if status == STATUS_OBJECT_NAME_NOT_FOUND => PolicySource::Absent,
            Err(status) => {
                glue::registry_unreadable(&self.fm, &self.state, status);
                PolicySource::Invalid(status)
            }
        }
    }

    /// [`Filter::new`] then [`Filter::load_persisted_policy`].
    pub fn load(fm: F, state: crate::handler::State) -> (Self, PolicySource) {
        let filter = Self::new(fm, state);
        let source = filter.load_persisted_policy();
        (filter, source)
    }

    /// The Filter Manager implementation.
    pub fn fm(&self) -> &F {
        &self.fm
    }
    /// The engine state (policy, stats, events) shared with the port handler.
    pub fn state(&self) -> &crate::handler::State {
        &self.state
    }
    /// The callback-layer counters (held by the engine state: GetStats reports
    /// them, ResetStats zeroes them).
    pub fn counters(&self) -> &CallbackCounters {
        self.state.callback_counters()
    }
    /// The recursion guard (threads inside one of our flushes).
    pub fn own_flushes(&self) -> &OwnFlushSet {
        &self.own_flushes
    }
    /// Current lifecycle phase.
    pub fn phase(&self) -> LifecyclePhase {
        match self.phase.load(Ordering::Acquire) {
            0 => LifecyclePhase::Running,
            1 => LifecyclePhase::Unloading,
            _ => LifecyclePhase::Unregistered,
        }
    }

    /// Handles one port message: the engine handler; a SetPolicy with the persist
    /// flag is all or nothing: validated, written to `Parameters\Policy`, and only
    /// then put in force ([`crate::handler::handle_persisting`]). PASSIVE_LEVEL.
    /// `request` and `reply` are kernel copies (the driver captured them under
    /// SEH). Returns the reply length in bytes.
    ///
    /// # Errors
    /// Every error of the engine handler (see [`crate::handler`]); a failed registry
    /// write returns that write's NTSTATUS and changes nothing (policy and
    /// generation stay; a `RegistryPolicyRejected` event with `value` =
    /// `REGISTRY_STORE` records it and `Counter::PolicyStoreFailed` counts it).
    pub fn handle_message(&self, request: &[u8], reply: &mut [u8]) -> Result<usize, NtStatus> {
        glue::handle_message(&self.fm, &self.state, request, reply)
    }

    /// FilterUnload: marks the filter unloading, closes the server port (so no
    /// client can start a message), then `FltUnregisterFilter` (drains outstanding
    /// operations; draining post-operations only clean up). The caller frees its
    /// globals after this returns. PASSIVE_LEVEL.
    pub fn unload(&self) {
        self.phase
            .store(LifecyclePhase::Unloading as u8, Ordering::Release);
        self.fm.close_server_port();
        self.fm.unregister_filter();
        self.phase
            .store(LifecyclePhase::Unregistered as u8, Ordering::Release);
    }

    /// InstanceSetup (PASSIVE_LEVEL): whether to attach to a volume. Network file
    /// systems (`FILE_DEVICE_NETWORK_FILE_SYSTEM`: MUP) always; other volumes only
    /// when the policy in force sets `attach_local_volumes` (testing). Counts the
    /// instance for GetStatus when attaching.
    pub fn instance_setup(&self, network_file_system: bool) -> bool {
        let attach = network_file_system || self.policy().is_some_and(|p| p.attach_local_volumes());
        if attach {
            let n = self.instances.fetch_add(1, Ordering::AcqRel) + 1;
            self.state.set_instances(n);
        }
        attach
    }

    /// InstanceTeardownComplete (PASSIVE_LEVEL): one attached instance is gone.
    pub fn instance_teardown(&self) {
        let n = self
            .instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .map_or(0, |old| old.saturating_sub(1));
        self.state.set_instances(n);
    }

    fn running(&self) -> bool {
        if self.phase() == LifecyclePhase::Running {
            true
        } else {
            self.counters().bump(Counter::CallbackDuringUnload);
            false
        }
    }

    /// Counts a flush that was due but not issued, by cause, and in the engine's
    /// `flushes_skipped` counter (GetStats).
    fn skip(&self, cause: Counter) {
        self.counters().bump(cause);
        glue::count_flush_skipped(&self.state);
    }

    /// True when this thread is inside one of our flushes: the operation is our
    /// own I/O (flush re-entry, its paging writes, the cleanup of our handle).
    fn own_io(&self) -> bool {
        if self.own_flushes.contains(self.fm.current_thread_id()) {
            self.counters().bump(Counter::OwnIoPassedThrough);
            glue::count_own_flush_passed(&self.state);
            true
        } else {
            false
        }
    }

    /// The policy in force, or `None` above APC_LEVEL. The policy lock itself works up
    /// to DISPATCH_LEVEL ([`crate::locks::PolicyLocks`]), but a rule lookup may need a
    /// name query (PASSIVE_LEVEL): the callbacks only ask at IRQL <= APC_LEVEL, and
    /// `None` above is counted (`PolicyAboveApcLevel`, never expected).
    fn policy(&self) -> Option<PolicySnapshot> {
        if self.fm.current_irql() > Irql::APC_LEVEL {
            self.counters().bump(Counter::PolicyAboveApcLevel);
            return None;
        }
        Some(glue::snapshot(&self.state))
    }

    /// The engine's view of an operation at `phase`.
    fn view(&self, data: &F::Data, phase: Phase) -> OperationView {
        let major = data.major_function();
        let mut v = OperationView::new(MajorFunction::from_irp_mj(major), phase);
        v.irp_flags = data.irp_flags();
        v.operation_flags = data.operation_flags();
        v.minor_function = data.minor_function();
        v.fast_io = data.is_fast_io();
        v.requestor_mode_kernel = data.requestor_mode_kernel();
        v.file_object_write_through =
            data.file_object_flags() & flushguard_protocol::nt::FO_WRITE_THROUGH != 0;
        // A top-level IRP matters on the thread that would flush; a post-operation
        // above PASSIVE_LEVEL runs in an arbitrary thread and defers to a worker.
        let irql = self.fm.current_irql();
        v.top_level_irp = irql == Irql::PASSIVE_LEVEL && self.fm.top_level_irp_set();
        match major {
            IRP_MJ_CREATE => v.create_options = data.create_options() & 0x00FF_FFFF,
            IRP_MJ_WRITE => {
                v.offset = data.write_offset();
                v.length = data.write_length();
                if phase == Phase::Pre {
                    v.synchronous = !v.fast_io && self.fm.is_operation_synchronous(data);
                }
            }
            _ => {}
        }
        if phase == Phase::Post {
            v.status = Some(data.io_status());
        }
        v
    }

    /// Looks up the rule governing the operation's file: normalized name, MUP
    /// provider, requestor image. PASSIVE_LEVEL only. `None` when the name cannot be
    /// had or a buffer for the name, the image or the parsed name cannot be
    /// allocated (counted `NameQueryFailed` / `AllocationFailed`; the operation
    /// passes through), and when the file is never governed (a named pipe /
    /// mailslot share, [`crate::matcher::Exemption`]: counted `IpcShareExempt`; the
    /// pre-create then passes the create through without a post-create, so the
    /// handle never gets a [`StreamContext`] and every later operation on it passes
    /// through under any policy). Every allocation is fallible. Releases every
    /// reference it took.
    ///
    /// Before a create completes the file object is not open and MUP cannot name its
    /// redirector (`FsRtlMupGetProviderInfoFromFileObject` fails): with
    /// `provider_expected == false` MUP is not asked and the provider is reported
    /// unknown (`FileProvider::Other`; only provider-agnostic rules match).
    fn classify(
        &self,
        data: &F::Data,
        policy: &PolicySnapshot,
        provider_expected: bool,
    ) -> Option<Classified> {
        let fm = &self.fm;
        let name_info = match fm.get_file_name_information(data) {
            Ok(n) => n,
            Err(_) => {
                self.counters().bump(Counter::NameQueryFailed);
                return None;
            }
        };
        let name = crate::path::try_string_from_utf16_lossy(fm.file_name(&name_info));
        fm.release_file_name_information(name_info);
        let Ok(name) = name else {
            self.counters().bump(Counter::AllocationFailed);
            return None;
        };

        // Before the create completed MUP cannot name the redirector: not asked.
        let (provider, provider_known) = if !provider_expected {
            (crate::policy::FileProvider::Other, false)
        } else {
            match fm.mup_provider_id_of_file(data) {
                Ok(id) => (self.providers.classify(fm, self.counters(), id), true),
                Err(_) => {
                    self.counters().bump(Counter::ProviderQueryFailed);
                    (crate::policy::FileProvider::Other, false)
                }
            }
        };
        // Matching with a partial (empty) image could pick another rule: an
        // allocation failure passes the operation through instead.
        let image = match fm.process_image_name(data) {
            Ok(image) => {
                let s = crate::path::try_string_from_utf16_lossy(fm.image_name(&image));
                fm.release_process_image_name(image);
                s
            }
            Err(_) => {
                self.counters().bump(Counter::ProcessQueryFailed);
                Ok(String::new())
            }
        };
        let Ok(image) = image else {
            self.counters().bump(Counter::AllocationFailed);
            return None;
        };
        let Ok((slot, action)) = policy.lookup(provider, &name, &image) else {
            self.counters().bump(Counter::AllocationFailed);
            return None;
        };
        if slot == EXEMPT_SLOT {
            // A named pipe / mailslot share: never governed, no context attached.
            self.counters().bump(Counter::IpcShareExempt);
            return None;
        }
        Some(Classified {
            slot,
            action,
            provider,
            provider_known,
        })
    }

    /// Runs a pre-operation on a governed handle: passes through when filtering has
    /// stopped, for FlushGuard's own I/O, or when the handle has no FlushGuard
    /// context; otherwise calls `governed` with the context and releases it on every
    /// path.
    fn with_handle_context(
        &self,
        data: &mut F::Data,
        governed: impl FnOnce(&Self, &mut F::Data, &StreamContext) -> PreOp,
    ) -> PreOp {
        if !self.running() || self.own_io() {
            return PreOp::pass();
        }
        let Some(ctx) = self.handle_context(data) else {
            return PreOp::pass();
        };
        let result = governed(self, data, &ctx);
        self.fm.release_context(ctx);
        result
    }

    /// The engine's decision for a pre-operation on a handle with context `ctx`:
    /// `(rule slot, its action, decision)`, already recorded in the global and
    /// per-rule stats. `None` (pass through, counted where it is a failure) when the
    /// policy cannot be read here (above APC_LEVEL) or no rule governs the handle.
    /// The policy snapshot is dropped before returning: no flush runs under it.
    fn decide_pre(
        &self,
        data: &F::Data,
        ctx: &StreamContext,
    ) -> Option<(u32, crate::policy::Action, Decision)> {
        let policy = self.policy()?;
        let (slot, action) = self.governing_rule(data, ctx, &policy)?;
        let mut view = self.view(data, Phase::Pre);
        view.written_since_flush = ctx.written_since_flush();
        view.file_object_write_through |= ctx.audited_write_through();
        let d = crate::decision::decide(&action, &view);
        d.record(glue::stats(&self.state), policy.counters(slot));
        Some((slot, action, d))
    }

    /// The rule governing a handle's context: `(slot, action)`, refreshing a rule
    /// cached under an older policy when that is possible here (PASSIVE_LEVEL, not
    /// paging or fast I/O); `None` (pass through, counted) otherwise.
    fn governing_rule(
        &self,
        data: &F::Data,
        ctx: &StreamContext,
        policy: &PolicySnapshot,
    ) -> Option<(u32, crate::policy::Action)> {
        let (generation, slot) = ctx.rule();
        if generation == policy.generation() {
            return policy.action(slot).map(|a| (slot, a));
        }
        // A name query needs PASSIVE_LEVEL, no paging I/O and no file system above us
        // on this thread (top-level IRP): it may enter the file system.
        let paging = data.irp_flags() & IRP_PAGING_IO != 0;
        if paging
            || data.is_fast_io()
            || self.fm.current_irql() != Irql::PASSIVE_LEVEL
            || self.fm.top_level_irp_set()
        {
            self.counters().bump(Counter::StaleRulePassedThrough);
            return None;
        }
        let Classified { slot, action, .. } = self.classify(data, policy, true)?;
        ctx.set_rule(policy.generation(), slot);
        self.counters().bump(Counter::RuleRefreshed);
        Some((slot, action))
    }

    /// Fetches the handle's context; `None` when the handle is not governed or the
    /// lookup failed (counted).
    fn handle_context(&self, data: &F::Data) -> Option<F::Context> {
        match self.fm.get_stream_handle_context(data) {
            Ok(c) => c,
            Err(_) => {
                self.counters().bump(Counter::ContextFailed);
                None
            }
        }
    }

    // ---- IRP_MJ_CREATE ---------------------------------------------------

    /// Pre-create (PASSIVE_LEVEL): looks up the rule; a write-through rule adds
    /// `FILE_WRITE_THROUGH` to `Parameters.Create.Options` (+ dirty). A handle under a
    /// rule whose mode is not `pass`, or whose redirector is not known yet, gets a
    /// post-create.
    ///
    /// The MUP provider is known only once the file object is open, so a rule that
    /// names a provider cannot add `FILE_WRITE_THROUGH` at create time on a network
    /// volume: it governs the handle from post-create on (`SL_WRITE_THROUGH` on every
    /// write). Provider-agnostic rules apply at create time too.
    pub fn pre_create(&self, data: &mut F::Data) -> PreOp {
        if !self.running() || self.own_io() || self.fm.current_irql() != Irql::PASSIVE_LEVEL {
            return PreOp::pass();
        }
        let Some(policy) = self.policy() else {
            return PreOp::pass();
        };
        let reach = policy.reach();
        if !reach.governs {
            // Nothing in the policy acts on any file: no name, image or provider
            // query, no post-create, no context (issue 9 finding 5).
            return PreOp::pass();
        }
        if !reach.at_create {
            // No rule can act before the file object is open: the post-create
            // classifies the file, once, with the provider known.
            return PreOp::with_callback(CompletionContext::Create {
                generation: policy.generation(),
                slot: UNCLASSIFIED_SLOT,
            });
        }
        let Some(c) = self.classify(data, &policy, false) else {
            return PreOp::pass();
        };
        let mut view = self.view(data, Phase::Pre);
        view.provider = c.provider;
        let d = crate::decision::decide(&c.action, &view);
        d.record(glue::stats(&self.state), policy.counters(c.slot));
        if d.set_create_write_through {
            data.set_create_options(data.create_options() | FILE_WRITE_THROUGH);
            self.fm.set_callback_data_dirty(data);
            self.counters().bump(Counter::CreateWriteThroughSet);
        }
        if c.action.mode == crate::policy::Mode::Pass && c.provider_known {
            PreOp::pass()
        } else {
            PreOp::with_callback(CompletionContext::Create {
                generation: policy.generation(),
                slot: c.slot,
            })
        }
    }

    /// Post-create (PASSIVE_LEVEL): on success looks the rule up (again, if the
    /// pre-create did and a rule names a provider) now that the file object is open
    /// (the MUP provider is known) and, unless it is `pass`,
    /// attaches a [`StreamContext`] caching the rule and the policy generation. If
    /// that lookup fails the pre-create's rule is kept. Draining: nothing to clean up.
    pub fn post_create(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Create { generation, slot }) = ctx else {
            return PostOpStatus::FinishedProcessing;
        };
        if flags.draining() {
            return PostOpStatus::FinishedProcessing;
        }
        let status = data.io_status();
        if !status.is_success() || status == STATUS_REPARSE {
            return PostOpStatus::FinishedProcessing;
        }
        let Some(policy) = self.policy() else {
            return PostOpStatus::FinishedProcessing;
        };
        let classified = slot != UNCLASSIFIED_SLOT && generation == policy.generation();
        // Audit: the pre-create's rule would have opened the file write-through (so
        // the audited mode would force nothing on its writes).
        let audited_write_through = classified
            && policy.action(slot).is_some_and(|a| {
                crate::decision::decide(&a, &self.view(data, Phase::Pre))
                    .counts
                    .contains(flushguard_protocol::stats::Counter::AuditWouldWriteThrough)
            });
        let (generation, slot, action) = if classified && !policy.reach().provider_specific {
            // The pre-create's lookup cannot change now that the provider is known
            // (no rule names one): one name query per create.
            (generation, slot, policy.action(slot))
        } else {
            match self.classify(data, &policy, true) {
                Some(c) => (policy.generation(), c.slot, Some(c.action)),
                None if classified => (generation, slot, policy.action(slot)),
                None => return PostOpStatus::FinishedProcessing,
            }
        };
        drop(policy);
        if action.is_none_or(|a| a.mode == crate::policy::Mode::Pass) {
            return PostOpStatus::FinishedProcessing;
        }
        let context = match self.fm.allocate_stream_handle_context(
            StreamContext::new(generation, slot).with_audited_write_through(audited_write_through),
        ) {
            Ok(c) => c,
            Err(_) => {
                self.counters().bump(Counter::ContextFailed);
                return PostOpStatus::FinishedProcessing;
            }
        };
        match self.fm.set_stream_handle_context(data, &context) {
            Ok(()) => self.counters().bump(Counter::ContextAttached),
            Err(_) => self.counters().bump(Counter::ContextFailed),
        }
        self.fm.release_context(context);
        PostOpStatus::FinishedProcessing
    }

    // ---- IRP_MJ_WRITE ----------------------------------------------------

    /// Pre-write (IRQL <= APC_LEVEL; IRP, fast I/O and paging I/O): applies the
    /// engine's decision: `SL_WRITE_THROUGH` (+ dirty), `FLT_PREOP_DISALLOW_FASTIO`,
    /// or a post-write for the flush / written-since-flush bookkeeping
    /// (`FLT_PREOP_SYNCHRONIZE` only when `FltIsOperationSynchronous`).
    pub fn pre_write(&self, data: &mut F::Data) -> PreOp {
        self.with_handle_context(data, Self::pre_write_governed)
    }

    fn pre_write_governed(&self, data: &mut F::Data, ctx: &StreamContext) -> PreOp {
        let Some((_, action, d)) = self.decide_pre(data, ctx) else {
            return PreOp::pass();
        };
        if d.pre_op == EnginePreOp::DisallowFastIo && data.is_fast_io() {
            self.counters().bump(Counter::FastIoDisallowed);
            return PreOp::disallow_fast_io();
        }
        if d.set_sl_write_through && data.operation_flags() & SL_WRITE_THROUGH == 0 {
            data.set_operation_flags(data.operation_flags() | SL_WRITE_THROUGH);
            self.fm.set_callback_data_dirty(data);
            self.counters().bump(Counter::WriteThroughSet);
        }
        let wants_post = matches!(
            d.pre_op,
            EnginePreOp::Synchronize | EnginePreOp::SuccessWithCallback
        );
        if !wants_post && !d.mark_written_since_flush {
            return PreOp::pass();
        }
        // The post-write records the write only once it succeeded (its data is then
        // in the cache) and, when the engine asked for a post-write, asks it again
        // with the completion status (the rule's flush travels along as a marker).
        // A native-method rule's flush runs in the flush worker on FlushGuard's own
        // handle: its writes are pended there, never synchronized.
        let synchronize = d.pre_op == EnginePreOp::Synchronize
            && !data.is_fast_io()
            && action.method != crate::policy::FlushMethod::Native
            && self.fm.is_operation_synchronous(data);
        // Classed here, in the issuing thread: only the flushing thread's own cache
        // write-back may count as covered by that flush (WriteClass).
        let write_back = d.mark_written_since_flush
            && WriteClass::classify(
                data.irp_flags(),
                self.fm.top_level_irp(),
                ctx.flush_in_progress_by(self.fm.current_thread_id()),
            ) == WriteClass::WriteBack;
        let completion = CompletionContext::Write {
            record_write: d.mark_written_since_flush,
            write_back,
            flush: wants_post.then_some(FlushOrder {
                native: action.method == crate::policy::FlushMethod::Native,
                flags: action.flags,
            }),
            synchronized: synchronize,
            audit: action.mode == crate::policy::Mode::Audit,
        };
        if synchronize {
            self.counters().bump(Counter::WriteSynchronized);
            PreOp::synchronize(completion)
        } else {
            PreOp::with_callback(completion)
        }
    }

    /// Post-write (any IRQL <= DISPATCH_LEVEL, arbitrary thread; <= APC_LEVEL in the
    /// originating thread after `FLT_PREOP_SYNCHRONIZE`). Draining: clean up only
    /// (nothing is held). On success records the write (context atomics only: no
    /// policy lock above APC_LEVEL); when the pre-write asked for a flush decision:
    ///
    /// - a synchronized write (the issuing thread, before its system service
    ///   returns) is flushed here, inline (flush placement rule (a), DESIGN §1);
    /// - an asynchronous write is pended to FlushGuard's flush worker
    ///   ([`FilterManager::queue_deferred_flush`]: `FltQueueDeferredIoWorkItem`,
    ///   `FLT_POSTOP_MORE_PROCESSING_REQUIRED`), which flushes at PASSIVE_LEVEL and
    ///   only then lets the write complete to the application (rule (c)). Never
    ///   flushed inline in the completing thread, never through
    ///   `FltDoCompletionProcessingWhenSafe` (its DDI page excludes IRP_MJ_WRITE).
    ///   When the worker cannot take it (fast I/O, posting refused, or
    ///   [`MAX_PENDED_WRITES`] in flight) the write completes at once and the flush is
    ///   skipped, counted; the handle stays marked written for the cleanup flush.
    pub fn post_write(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Write {
            record_write,
            write_back,
            flush,
            synchronized,
            audit,
        }) = ctx
        else {
            return PostOpStatus::FinishedProcessing;
        };
        if flags.draining() {
            if flush.is_some() {
                self.skip(Counter::FlushSkippedDraining);
            }
            return PostOpStatus::FinishedProcessing;
        }
        if !data.io_status().is_success() {
            self.counters().bump(Counter::WriteFailed);
            return PostOpStatus::FinishedProcessing;
        }
        if record_write {
            if let Some(c) = self.handle_context(data) {
                // The flushing thread's own write-back is covered by its flush if it
                // completes first; every other write only by a later flush.
                c.record_write(if write_back {
                    WriteClass::WriteBack
                } else {
                    WriteClass::User
                });
                self.fm.release_context(c);
            }
        }
        let Some(order) = flush else {
            return PostOpStatus::FinishedProcessing;
        };
        let decision = CompletionContext::Write {
            record_write: false,
            write_back: false,
            flush: Some(order),
            synchronized,
            audit,
        };
        // An audit rule only counts what the audited mode would do, here, whatever the
        // IRQL (counters and context atomics; the policy lock works up to
        // DISPATCH_LEVEL): its writes are never held for the flush worker.
        if audit {
            // Where the enforcing mode would flush: in the issuing thread of a
            // synchronized write at PASSIVE_LEVEL, or in the flush worker for an
            // asynchronous IRP write it could pend (no top-level IRP).
            let enforcing_would_flush = if synchronized {
                self.fm.current_irql() == Irql::PASSIVE_LEVEL
            } else {
                !data.is_fast_io() && !self.fm.top_level_irp_set()
            };
            if enforcing_would_flush {
                self.audit_after_write(data);
            }
            return PostOpStatus::FinishedProcessing;
        }
        if synchronized && self.fm.current_irql() <= Irql::APC_LEVEL {
            self.flush_after_write(data, Some(decision));
            return PostOpStatus::FinishedProcessing;
        }
        if data.is_fast_io() {
            self.skip(Counter::FlushSkippedNotDeferrable);
            return PostOpStatus::FinishedProcessing;
        }
        if self.pended_writes.fetch_add(1, Ordering::AcqRel) >= MAX_PENDED_WRITES {
            self.pended_writes.fetch_sub(1, Ordering::AcqRel);
            self.counters().bump(Counter::FlushWorkerFull);
            self.skip(Counter::FlushSkippedNotDeferrable);
            return PostOpStatus::FinishedProcessing;
        }
        if self.fm.queue_deferred_flush(data, decision) {
            self.counters().bump(Counter::FlushDeferred);
            PostOpStatus::MoreProcessingRequired
        } else {
            self.pended_writes.fetch_sub(1, Ordering::AcqRel);
            self.skip(Counter::FlushSkippedNotDeferrable);
            PostOpStatus::FinishedProcessing
        }
    }

    /// FlushGuard's flush worker (PASSIVE_LEVEL, a system worker thread with no
    /// top-level IRP): flushes the asynchronous write [`Filter::post_write`] pended
    /// with `ctx`, as the engine decides with its completion status. The caller then
    /// completes the pended post-operation (`FltCompletePendedPostOperation`), so the
    /// application sees its write complete only after the flush (or a counted failure;
    /// the write's own status is never changed). Call exactly once per pended write.
    pub fn flush_pended_write(&self, data: &mut F::Data, ctx: Option<CompletionContext>) {
        self.flush_after_write(data, ctx);
        self.pended_writes.fetch_sub(1, Ordering::AcqRel);
    }

    /// Asynchronous writes pended to the flush worker and not yet flushed.
    pub fn pended_writes(&self) -> u32 {
        self.pended_writes.load(Ordering::Acquire)
    }

    /// Audit after a successful write (IRQL <= DISPATCH_LEVEL): counts what the
    /// audited mode would do after it (`audit_would_flush`) and takes that flush as
    /// done for the written-since-flush bookkeeping; issues nothing.
    fn audit_after_write(&self, data: &mut F::Data) {
        let Some(context) = self.handle_context(data) else {
            return;
        };
        let (generation, slot) = context.rule();
        let written = context.written_since_flush();
        self.fm.release_context(context);
        let policy = glue::snapshot(&self.state);
        if generation != policy.generation() {
            self.counters().bump(Counter::StaleRulePassedThrough);
            return;
        }
        let Some(action) = policy.action(slot) else {
            return;
        };
        let mut view = self.view(data, Phase::Post);
        view.written_since_flush = written;
        let d = crate::decision::decide(&action, &view);
        d.record(glue::stats(&self.state), policy.counters(slot));
        drop(policy);
        self.taken_as_flushed(data, &d);
    }

    /// The flush after a successful write: at PASSIVE_LEVEL asks the engine
    /// (post-write phase, with the completion status) and issues the flush it orders;
    /// above PASSIVE_LEVEL counts the flush skipped.
    fn flush_after_write(&self, data: &mut F::Data, ctx: Option<CompletionContext>) {
        let Some(CompletionContext::Write {
            flush: Some(_),
            synchronized,
            ..
        }) = ctx
        else {
            return;
        };
        if self.fm.current_irql() != Irql::PASSIVE_LEVEL {
            self.skip(Counter::FlushSkippedIrql);
            return;
        }
        let Some(context) = self.handle_context(data) else {
            return;
        };
        let (generation, slot) = context.rule();
        let written = context.written_since_flush();
        self.fm.release_context(context);
        let Some(policy) = self.policy() else {
            return;
        };
        // A rule cached under an older policy is not re-looked-up after the write: the
        // changed policy applies from the next operation on.
        if generation != policy.generation() {
            self.counters().bump(Counter::StaleRulePassedThrough);
            return;
        }
        let Some(action) = policy.action(slot) else {
            return;
        };
        let mut view = self.view(data, Phase::Post);
        view.written_since_flush = written;
        let d = crate::decision::decide(&action, &view);
        d.record(glue::stats(&self.state), policy.counters(slot));
        drop(policy);
        if let Some((order, place)) = glue::flush_order(&d) {
            self.flush_now(data, order, place, slot, synchronized);
        }
        self.taken_as_flushed(data, &d);
    }

    // ---- IRP_MJ_FLUSH_BUFFERS ---------------------------------------------

    /// Pre-flush (IRQL <= APC_LEVEL): our own flushes pass through untouched; an
    /// application flush on a governed handle may be upgraded (`Iopb->MinorFunction`
    /// = `IRP_MN_FLUSH_*`, + dirty) and, under a flushing rule, gets a post-flush
    /// that records it.
    pub fn pre_flush(&self, data: &mut F::Data) -> PreOp {
        self.with_handle_context(data, Self::pre_flush_governed)
    }

    fn pre_flush_governed(&self, data: &mut F::Data, ctx: &StreamContext) -> PreOp {
        let Some((_, _, d)) = self.decide_pre(data, ctx) else {
            return PreOp::pass();
        };
        if let Some(target) = d.upgrade_flush {
            let minor = target.to_flush_minor();
            if data.minor_function() != minor {
                data.set_minor_function(minor);
                self.fm.set_callback_data_dirty(data);
                self.counters().bump(Counter::AppFlushUpgraded);
            }
        }
        if matches!(
            d.pre_op,
            EnginePreOp::SuccessWithCallback | EnginePreOp::Synchronize
        ) {
            // This thread's synchronous paging writes until the post-flush are the
            // flush's own write-back (WriteClass::WriteBack).
            ctx.begin_flush(self.fm.current_thread_id());
            PreOp::with_callback(CompletionContext::Flush {
                observed_write_seq: ctx.write_seq(),
            })
        } else {
            PreOp::pass()
        }
    }

    /// Post-flush (<= DISPATCH_LEVEL): a successful application flush on a handle
    /// under a flushing rule (the pre-flush asked for this callback) covers the user
    /// writes completed before it began and the write-back (synchronous paging)
    /// writes completed by now, its own write-back included
    /// ([`StreamContext::record_flush`]). Context atomics only (no policy lock).
    /// Draining or failed: covers nothing, nothing to clean up.
    pub fn post_flush(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Flush { observed_write_seq }) = ctx else {
            return PostOpStatus::FinishedProcessing;
        };
        let Some(c) = self.handle_context(data) else {
            return PostOpStatus::FinishedProcessing;
        };
        c.end_flush();
        if !flags.draining() && data.io_status().is_success() {
            c.record_flush(observed_write_seq);
        }
        self.fm.release_context(c);
        PostOpStatus::FinishedProcessing
    }

    // ---- IRP_MJ_CLEANUP -----------------------------------------------------

    /// Pre-cleanup (PASSIVE_LEVEL): flush-on-close for a handle written since its
    /// last flush. Always `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    pub fn pre_cleanup(&self, data: &mut F::Data) -> PreOp {
        if !self.running() || self.own_io() {
            return PreOp::pass();
        }
        let Some(ctx) = self.handle_context(data) else {
            return PreOp::pass();
        };
        // The context and the policy snapshot are given back before the flush.
        let decided = self.decide_pre(data, &ctx);
        self.fm.release_context(ctx);
        if let Some((_, _, d)) = &decided {
            self.taken_as_flushed(data, d);
        }
        if let Some((slot, order)) =
            decided.and_then(|(slot, _, d)| glue::flush_order(&d).map(|o| (slot, o)))
        {
            if self.fm.current_irql() != Irql::PASSIVE_LEVEL {
                self.skip(Counter::FlushSkippedIrql);
            } else {
                self.flush_now(data, order.0, order.1, slot, false);
            }
        }
        PreOp::pass()
    }

    // ---- issuing a flush ------------------------------------------------------

    /// Audit: the flush the audited mode would issue here counts as done for the
    /// handle's written-since-flush bookkeeping (`Decision::clear_written_since_flush`),
    /// as [`Filter::flush_now`] records a successful flush. Context atomics only.
    fn taken_as_flushed(&self, data: &F::Data, d: &Decision) {
        if !d.clear_written_since_flush {
            return;
        }
        if let Some(c) = self.handle_context(data) {
            c.record_flush(c.write_seq());
            self.fm.release_context(c);
        }
    }

    /// Issues one flush for the operation's file object at PASSIVE_LEVEL, holding no
    /// lock and no context reference, with this thread marked in the recursion
    /// guard. Records it (latency, failures by status) in the engine stats and an
    /// event on failure; never fails the user's operation.
    fn flush_now(
        &self,
        data: &F::Data,
        order: FlushOrder,
        place: FlushPlace,
        slot: u32,
        issuing_thread: bool,
    ) {
        let fm = &self.fm;
        if fm.current_irql() != Irql::PASSIVE_LEVEL {
            self.skip(Counter::FlushSkippedIrql);
            return;
        }
        if fm.top_level_irp_set() {
            self.skip(Counter::FlushSkippedTopLevelIrp);
            return;
        }
        if data.irp_flags() & IRP_PAGING_IO != 0 {
            self.skip(Counter::FlushSkippedPagingIo);
            return;
        }
        // A full guard does not skip the flush (no durability promise may depend on a
        // fixed-size table): it runs unguarded through the filter method, which sends
        // the flush below this instance, so nothing re-enters our pre-flush.
        let token = match self.own_flushes.enter(fm.current_thread_id()) {
            Ok(token) => Some(token),
            Err(EnterError::Recursion) => {
                self.skip(Counter::FlushSkippedRecursion);
                return;
            }
            Err(EnterError::Full) => {
                self.counters().bump(Counter::OwnFlushUnguarded);
                None
            }
        };
        let observed = self.handle_context(data).map(|c| {
            let seq = c.write_seq();
            fm.release_context(c);
            seq
        });
        // The native method (ZwFlushBuffersFileEx) runs only in FlushGuard's flush
        // worker (a write pended after it completed: not the issuing thread), on a
        // handle FlushGuard opens by name for this flush and closes right after
        // (FilterManager::open_flush_handle): never a handle to the application's file
        // object, so closing it can never send a second IRP_MJ_CLEANUP for it, and no
        // application file object lock is involved. Not at cleanup (the filter method
        // runs there), never with all APCs disabled (ZwFlushBuffersFileEx's completion
        // is a special kernel APC), never without the recursion guard (its
        // re-entrant pre-flush would not be recognised as ours). Otherwise the flush
        // goes to the instances below through FltFlushBuffers(2), counted
        // NativeFlushViaFilter.
        let native = order.native
            && token.is_some()
            && place == FlushPlace::AfterWrite
            && !issuing_thread
            && !fm.all_apcs_disabled();
        if order.native && !native {
            self.counters().bump(Counter::NativeFlushViaFilter);
        }
        let started = fm.now_us();
        let result = self.issue(data, native, order.flags);
        let elapsed = fm.now_us().saturating_sub(started);
        let status = match result {
            Ok(()) => NtStatus::SUCCESS,
            Err(s) => s,
        };
        glue::record_flush(&self.state, fm, slot, native, status, elapsed, data);
        match result {
            Ok(()) => {
                self.counters().bump(Counter::FlushOk);
                // Covers the user writes completed before the flush began and the
                // write-back completed by now: in this thread the flush's own paging
                // writes passed through unrecorded (recursion guard; an unguarded flush's
                // paging writes may be recorded, which only leaves the handle marked
                // written: one more flush at cleanup, never a missed one); written back by
                // another thread, they completed before the flush call returned.
                if let Some(seq) = observed {
                    if let Some(c) = self.handle_context(data) {
                        c.record_flush(seq);
                        fm.release_context(c);
                    }
                }
            }
            Err(status) => self.counters().bump(match status.class() {
                flushguard_protocol::StatusClass::NotFlushedRetryable => {
                    Counter::FlushFailedRetryable
                }
                flushguard_protocol::StatusClass::NotFlushedPermanent
                | flushguard_protocol::StatusClass::Flushed => Counter::FlushFailedPermanent,
            }),
        }
    }

    fn issue(
        &self,
        data: &F::Data,
        native: bool,
        flags: flushguard_protocol::FlushFlags,
    ) -> Result<(), NtStatus> {
        let fm = &self.fm;
        if !native {
            return if fm.has_flt_flush_buffers2() {
                fm.flt_flush_buffers2(data, flags.to_flt_flush_type())
            } else {
                if flags.to_flt_flush_type() != 0 {
                    self.counters().bump(Counter::FlushTypeWidened);
                }
                fm.flt_flush_buffers(data)
            };
        }
        let Ok(flags) = flags.to_flush_flags_ex() else {
            self.counters().bump(Counter::FlushFlagsUnsupported);
            return Err(NtStatus::INVALID_PARAMETER_MIX);
        };
        let name = match fm.get_file_name_information(data) {
            Ok(n) => n,
            Err(status) => {
                self.counters().bump(Counter::NameQueryFailed);
                return Err(status);
            }
        };
        let handle = fm.open_flush_handle(data, fm.file_name(&name));
        fm.release_file_name_information(name);
        let handle = match handle {
            Ok(h) => h,
            Err(status) => {
                self.counters().bump(Counter::HandleOpenFailed);
                return Err(status);
            }
        };
        let result = fm.zw_flush_buffers_file_ex(&handle, flags);
        if fm.close_kernel_handle(handle).is_err() {
            self.counters().bump(Counter::HandleCloseFailed);
        }
        result
    }
}
