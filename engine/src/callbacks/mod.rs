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
//!   worker, to which an asynchronous write is pended (threads of FlushGuard's own, not
//!   a system work queue, whose use the `FltQueueDeferredIoWorkItem` page forbids here;
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
//!   held across a flush or a wait (shared state is atomics, plus the policy lock and
//!   the group-commit coordinators' locks, each held for a few instructions);
//! - group-commit writers wait (PASSIVE_LEVEL, in the same two places a flush may
//!   run: the issuing thread of a synchronized write, or the flush worker) for a
//!   flush of their stream that started after their write completed
//!   ([`crate::group_commit`]);
//! - every failure counted, the user's I/O passed on unmodified (fail open);
//! - teardown: close the server port, then `FltUnregisterFilter` ([`Filter::unload`]).

mod cleanup;
mod context;
mod create;
mod data_change;
mod fltmgr;
mod flush;
mod group;
mod guard;
mod issue;
mod providers;
mod write;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use flushguard_protocol::NtStatus;

pub use crate::callback_counters::{CallbackCounters, Counter};
pub use context::{
    CompletionContext, FlushOrder, StreamContext, WriteClass, DEFAULT_RULE_SLOT, EXEMPT_SLOT,
    UNCLASSIFIED_SLOT,
};
pub use fltmgr::{
    CallbackData, FilterManager, Irql, PostOpFlags, PostOpStatus, PreOpStatus, TopLevelIrp,
    FLTFL_POST_OPERATION_DRAINING,
};
pub use guard::{EnterError, OwnFlushSet, OwnFlushToken, OWN_FLUSH_SLOTS};
pub use issue::FlushPlace;
pub use providers::{
    ProviderTable, NFS_DEVICE, RDPDR_DEVICE, RERESOLVE_INTERVAL_US, SMB_DEVICE, WEBDAV_DEVICE,
};

use crate::decision::{Decision, MajorFunction, OperationView, Phase, PreOp as EnginePreOp};
use crate::matcher::PolicySnapshot;

/// The rule a decision was taken under: its slot in the policy whose generation's low
/// 32 bits are `generation` (what a stream context caches, [`PolicySnapshot::generation`]).
/// Statistics recorded after a flush, which may outlast a SetPolicy, go to the slot's
/// per-rule counters only while that policy is still the active one
/// ([`crate::State::record_flush_decided`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecidedRule {
    /// Low 32 bits of the generation of the policy the decision was taken under.
    pub generation: u32,
    /// Rule slot in that policy ([`DEFAULT_RULE_SLOT`] for the default action).
    pub slot: u32,
}

impl DecidedRule {
    /// The rule's per-rule counters in `policy`; `None` when `policy` is not the one
    /// the decision was taken under.
    pub(crate) fn counters(
        self,
        policy: &crate::matcher::CompiledPolicy,
    ) -> Option<&crate::stats::Counters> {
        policy.counters_decided(self.generation, crate::matcher::slot_index(self.slot))
    }
}

/// Group-commit coordinators ([`crate::group_commit::GroupTable`]) allocated at load:
/// this many streams can have group-commit writers waiting at once; a writer of
/// another stream beyond that is flushed on its own (counted `GroupCommitUnbatched`).
pub const GROUP_COMMIT_STREAMS: usize = 64;

/// Most asynchronous writes pended to the flush worker at once. Each holds its IRP
/// and, while it flushes, one of FlushGuard's worker threads: past this bound a governed
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
    /// The group-commit coordinators; `None` if they could not be allocated at load
    /// (every group-commit write is then flushed on its own, counted).
    group: Option<crate::group_commit::GroupTable<F::CommitSync, group::GroupKey>>,
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
        let group =
            crate::group_commit::GroupTable::try_new(GROUP_COMMIT_STREAMS, || fm.new_commit_sync());
        Filter {
            group,
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
                // `RegistryPolicyRejected` with the read's status.
                let generation = self.state.policy().generation();
                self.state.events().push(
                    flushguard_protocol::events::EventRecord::new(
                        flushguard_protocol::events::EventKind::RegistryPolicyRejected,
                        status,
                        generation,
                        flushguard_protocol::events::REGISTRY_LOAD,
                    ),
                    self.fm.system_time(),
                );
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
        // A SetPolicy that asked to be persisted is written to `Parameters\Policy`
        // after validation and takes effect only if the write succeeded.
        let mut store = |blob: &[u8]| self.fm.write_policy_value(blob);
        crate::handler::handle_persisting(&self.state, request, reply, &mut store)
            .map(|o| o.reply_len)
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
        self.state
            .stats()
            .global()
            .add(flushguard_protocol::stats::Counter::FlushesSkipped, 1);
    }

    /// True when this thread is inside one of our flushes: the operation is our
    /// own I/O (flush re-entry, its paging writes, the cleanup of our handle).
    fn own_io(&self) -> bool {
        if self.own_flushes.contains(self.fm.current_thread_id()) {
            self.counters().bump(Counter::OwnIoPassedThrough);
            self.state
                .stats()
                .global()
                .add(flushguard_protocol::stats::Counter::OwnFlushesPassed, 1);
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
        Some(PolicySnapshot::new(self.state.policy()))
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
    /// `(rule, its action, decision)`, already recorded in the global and
    /// per-rule stats. `None` (pass through, counted where it is a failure) when the
    /// policy cannot be read here (above APC_LEVEL) or no rule governs the handle.
    /// The policy snapshot is dropped before returning: no flush runs under it.
    fn decide_pre(
        &self,
        data: &F::Data,
        ctx: &StreamContext,
    ) -> Option<(DecidedRule, crate::policy::Action, Decision)> {
        let policy = self.policy()?;
        let (slot, action) = self.governing_rule(data, ctx, &policy)?;
        let mut view = self.view(data, Phase::Pre);
        view.written_since_flush = ctx.written_since_flush();
        view.file_object_write_through |= ctx.audited_write_through();
        let d = crate::decision::decide(&action, &view);
        d.record(self.state.stats(), policy.counters(slot));
        let rule = DecidedRule {
            generation: policy.generation(),
            slot,
        };
        Some((rule, action, d))
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
}
