//! [`State`]: the driver-wide engine state shared by the callbacks and the port
//! handler — the policy in force (behind the [`crate::locks::PolicyLocks`]), the
//! statistics, the callback counters and the event ring — and SetPolicy.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use flushguard_protocol::events::{
    EventKind, EventRecord, EVENT_FLAG_PERSISTED, NO_RULE, REGISTRY_LOAD, REGISTRY_STORE,
};
use flushguard_protocol::stats::{CallbackCounter, FAILURE_STATUSES, STATUS_SLOTS};
use flushguard_protocol::{Capabilities, NtStatus, StatusFlags, StatusInfo};

use crate::callback_counters::CallbackCounters;
use crate::events::{EventRing, DEFAULT_EVENT_CAPACITY};
use crate::locks::{run_in, PolicyLocks, HOST_LOCKS};
use crate::matcher::CompiledPolicy;
use crate::path::InsufficientResources;
use crate::policy::FlushMethod;
use crate::stats::{Stats, StatsSnapshot};

/// Driver-wide state shared by callbacks and the port.
///
/// The active policy is an `Arc<CompiledPolicy>` behind a reader-writer lock held
/// only to clone or swap the `Arc`, inside the kernel locks of [`PolicyLocks`]
/// (an `EX_SPIN_LOCK` in the driver: IRQL <= DISPATCH_LEVEL, never preempted while
/// held); callbacks keep their clone (or a per-file
/// [`crate::matcher::CachedRule`]) for the operation. SetPolicy is serialized by
/// [`PolicyLocks::serialize`] (PASSIVE_LEVEL, registry I/O allowed).
pub struct State {
    pub(crate) policy: spin::RwLock<Arc<CompiledPolicy>>,
    /// Serializes SetPolicy (validation runs outside the policy lock); taken inside
    /// [`PolicyLocks::serialize`], so never contended in the driver.
    pub(crate) set_lock: spin::Mutex<()>,
    /// The kernel primitives around the locks above ([`HOST_LOCKS`] until
    /// [`State::set_locks`]).
    pub(crate) locks: &'static dyn PolicyLocks,
    pub(crate) next_generation: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) callback_counters: CallbackCounters,
    pub(crate) events: EventRing,
    pub(crate) clock: fn() -> u64,
    pub(crate) version: (u16, u16, u16),
    pub(crate) capabilities: AtomicU32,
    pub(crate) instances: AtomicU32,
    pub(crate) status_flags: AtomicU32,
}

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.policy().generation())
            .finish_non_exhaustive()
    }
}

/// Stores an accepted persisted policy blob: the driver writes the registry value
/// `<service key>\Parameters\Policy` (REG_BINARY, PASSIVE_LEVEL). Returns the
/// write's status on failure.
pub type PolicyStore<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), NtStatus>;

/// Why [`State::install`] refused a policy.
pub(crate) enum InstallError {
    /// Not a valid policy (nothing stored, nothing changed).
    Policy(crate::policy::PolicyError),
    /// Valid, but the store failed with this status (nothing changed).
    Store(NtStatus),
}

impl InstallError {
    pub(crate) fn ntstatus(&self) -> NtStatus {
        match self {
            InstallError::Policy(e) => e.ntstatus(),
            InstallError::Store(status) => *status,
        }
    }
}

impl State {
    /// Pass-through state. `clock` returns the system time in 100-ns units since
    /// 1601 (KeQuerySystemTimePrecise in the driver); `version` is the driver's
    /// (major, minor, patch).
    pub fn new(clock: fn() -> u64, version: (u16, u16, u16)) -> Self {
        Self::with_event_capacity(clock, version, DEFAULT_EVENT_CAPACITY)
    }

    /// As [`new`](Self::new) with a chosen event ring capacity.
    pub fn with_event_capacity(
        clock: fn() -> u64,
        version: (u16, u16, u16),
        capacity: usize,
    ) -> Self {
        Self::with_events(clock, version, EventRing::new(capacity))
    }

    /// As [`new`](Self::new) around an event ring the caller allocated (the driver
    /// uses [`EventRing::try_new`] so that DriverEntry can fail cleanly). Still
    /// allocates the pass-through policy (a few hundred bytes, `Arc::new`:
    /// infallible on stable Rust).
    pub fn with_events(clock: fn() -> u64, version: (u16, u16, u16), events: EventRing) -> Self {
        State {
            policy: spin::RwLock::new(Arc::new(CompiledPolicy::pass_through(0))),
            set_lock: spin::Mutex::new(()),
            locks: &HOST_LOCKS,
            next_generation: AtomicU64::new(1),
            stats: Stats::new(),
            callback_counters: CallbackCounters::new(),
            events,
            clock,
            version,
            capabilities: AtomicU32::new(0),
            instances: AtomicU32::new(0),
            status_flags: AtomicU32::new(0),
        }
    }

    /// Installs the kernel primitives around the policy locks (the Filter
    /// Manager's [`crate::callbacks::FilterManager::policy_locks`]); called once, before the
    /// state is shared.
    pub fn set_locks(&mut self, locks: &'static dyn PolicyLocks) {
        self.locks = locks;
    }

    /// The active policy (a cheap `Arc` clone under the policy lock, taken shared
    /// through [`PolicyLocks::read_shared`]). IRQL <= DISPATCH_LEVEL.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        let read = || self.policy.read().clone();
        run_in(|g| self.locks.read_shared(g), read).unwrap_or_else(read)
    }

    /// Runs `f` with SetPolicy serialized ([`PolicyLocks::serialize`], then the inner
    /// lock). `unrun` answers for a [`PolicyLocks`] implementation that never ran its
    /// closure (a broken contract: nothing changes). PASSIVE_LEVEL.
    pub(crate) fn serialized<T, E>(
        &self,
        unrun: E,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        run_in(
            |g| self.locks.serialize(g),
            || {
                let _g = self.set_lock.lock();
                f()
            },
        )
        .unwrap_or(Err(unrun))
    }

    /// Global statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The callback layer's per-cause counters ([`crate::callback_counters::Counter`]),
    /// reported by GetStats with `RequestFlags::CALLBACK_COUNTERS`.
    pub fn callback_counters(&self) -> &CallbackCounters {
        &self.callback_counters
    }

    /// The event ring.
    pub fn events(&self) -> &EventRing {
        &self.events
    }

    /// Sets the capabilities reported by GetVersion.
    pub fn set_capabilities(&self, caps: Capabilities) {
        self.capabilities.store(caps.bits(), Ordering::Relaxed);
    }

    /// Sets the attached-instance count reported by GetStatus.
    pub fn set_instances(&self, n: u32) {
        self.instances.store(n, Ordering::Relaxed);
    }

    /// Loads the registry policy value at DriverEntry. On error the state stays
    /// pass-through, a `RegistryPolicyRejected` event is recorded and the error
    /// returned: an invalid value's error, or `PolicyError::InsufficientResources`
    /// (event status `STATUS_INSUFFICIENT_RESOURCES`) when the pool could not hold
    /// the decoded or compiled policy (allocated fallibly, see
    /// [`arc_after_probe`] for the `Arc`).
    pub fn load_registry_policy(&self, blob: &[u8]) -> Result<u64, crate::policy::PolicyError> {
        let compiled = self.serialized(crate::policy::PolicyError::InsufficientResources, || {
            self.compile(blob).map(|c| self.activate(c, false))
        });
        match compiled {
            Ok(p) => {
                self.status_flags
                    .fetch_or(StatusFlags::FROM_REGISTRY.bits(), Ordering::Relaxed);
                Ok(p.generation())
            }
            Err(e) => {
                self.registry_rejected(e.ntstatus(), REGISTRY_LOAD);
                Err(e)
            }
        }
    }

    /// Records a `RegistryPolicyRejected` event (`value` = [`REGISTRY_LOAD`] or
    /// [`REGISTRY_STORE`]) with the generation in force.
    pub(crate) fn registry_rejected(&self, status: NtStatus, when: u64) {
        let gen = self.policy().generation();
        self.events.push(
            EventRecord::new(EventKind::RegistryPolicyRejected, status, gen, when),
            (self.clock)(),
        );
    }

    /// Validates and compiles a blob under the next generation (nothing changes).
    ///
    /// Errors: any [`CompiledPolicy::from_blob`] error, including
    /// `PolicyError::InsufficientResources` (every buffer of the decoded and
    /// compiled policy is allocated fallibly, and the `Arc` after a probe: see
    /// [`arc_after_probe`]).
    pub(crate) fn compile(
        &self,
        blob: &[u8],
    ) -> Result<Arc<CompiledPolicy>, crate::policy::PolicyError> {
        let generation = self.next_generation.load(Ordering::Relaxed);
        let compiled = CompiledPolicy::from_blob(blob, generation)?;
        Ok(arc_after_probe(compiled)?)
    }

    /// SetPolicy, all or nothing: validates and compiles `blob`; with `store`
    /// (a persisted SetPolicy whose caller stores it here) writes it; only then
    /// publishes it, bumps the generation and records `PolicyChanged`.
    ///
    /// A store failure changes nothing (policy, generation, status flags), records
    /// a `RegistryPolicyRejected` event with `value` = [`REGISTRY_STORE`] and counts
    /// `CallbackCounter::PolicyStoreFailed`. Concurrent SetPolicy requests are
    /// serialized ([`PolicyLocks::serialize`]: PASSIVE_LEVEL, so the registry store
    /// may run inside it), held across the store so the registry and the policy in
    /// force end in the same order; the policy lock is held only for the `Arc` swap
    /// (DISPATCH_LEVEL in the driver, never across registry I/O).
    pub(crate) fn install(
        &self,
        blob: &[u8],
        persist: bool,
        store: Option<PolicyStore<'_>>,
    ) -> Result<Arc<CompiledPolicy>, InstallError> {
        self.serialized(InstallError::Store(NtStatus::UNSUCCESSFUL), || {
            self.install_serialized(blob, persist, store)
        })
    }

    pub(crate) fn install_serialized(
        &self,
        blob: &[u8],
        persist: bool,
        store: Option<PolicyStore<'_>>,
    ) -> Result<Arc<CompiledPolicy>, InstallError> {
        let compiled = self.compile(blob).map_err(InstallError::Policy)?;
        if let Some(store) = store {
            if let Err(status) = store(compiled.blob()) {
                self.callback_counters
                    .bump(CallbackCounter::PolicyStoreFailed);
                self.registry_rejected(status, REGISTRY_STORE);
                return Err(InstallError::Store(status));
            }
        }
        Ok(self.activate(compiled, persist))
    }

    pub(crate) fn activate(
        &self,
        compiled: Arc<CompiledPolicy>,
        persist: bool,
    ) -> Arc<CompiledPolicy> {
        self.next_generation
            .store(compiled.generation() + 1, Ordering::Relaxed);
        let mut ev = EventRecord::new(
            EventKind::PolicyChanged,
            NtStatus::SUCCESS,
            compiled.generation(),
            compiled.rule_count() as u64,
        );
        if persist {
            ev.flags |= EVENT_FLAG_PERSISTED;
        }
        let mut flags = StatusFlags::POLICY_LOADED;
        flags.set(
            StatusFlags::ATTACH_LOCAL_VOLUMES,
            compiled.policy().attach_local_volumes,
        );
        self.status_flags.store(flags.bits(), Ordering::Relaxed);
        let swap = || core::mem::replace(&mut *self.policy.write(), compiled.clone());
        let old = run_in(|g| self.locks.write_exclusive(g), swap).unwrap_or_else(swap);
        // The previous policy is released outside the lock (its last reference may
        // free it).
        drop(old);
        self.events.push(ev, (self.clock)());
        compiled
    }

    /// Records a flush FlushGuard issued under rule `rule` of `policy`: counters,
    /// histogram and, on failure, a `FlushFailed` event with the file name tail. Call at
    /// PASSIVE_LEVEL.
    pub fn record_flush(
        &self,
        policy: &CompiledPolicy,
        rule: Option<u32>,
        method: FlushMethod,
        status: NtStatus,
        latency_us: u64,
        file_name: &str,
    ) {
        let decided = policy.generation() as u32;
        self.record_flush_decided(policy, decided, rule, method, status, latency_us, file_name);
    }

    /// [`State::record_flush`] for a flush decided under rule `rule` of the policy
    /// whose generation's low 32 bits are `decided` (what a stream context caches),
    /// recorded once the flush returned, when `policy` is the active one: a SetPolicy
    /// may have replaced the deciding policy meanwhile (a network flush can take
    /// seconds), and rule index `rule` of the new policy may be another rule. The
    /// rule's counters are then left alone (the deciding policy's counters are gone
    /// with it); the global counters, the histogram and the event are recorded as
    /// always, the event naming `rule` and the deciding generation (`decided`, which
    /// is the whole generation while fewer than 2^32 policies were applied).
    #[allow(clippy::too_many_arguments)]
    pub fn record_flush_decided(
        &self,
        policy: &CompiledPolicy,
        decided: u32,
        rule: Option<u32>,
        method: FlushMethod,
        status: NtStatus,
        latency_us: u64,
        file_name: &str,
    ) {
        let counters = policy.counters_decided(decided, rule);
        self.stats
            .record_flush(counters, method, status, latency_us);
        if !status.is_success() {
            let generation = if counters.is_some() {
                policy.generation()
            } else {
                u64::from(decided)
            };
            let mut ev = EventRecord::new(EventKind::FlushFailed, status, generation, latency_us);
            ev.method = method.code();
            ev.rule = rule.unwrap_or(NO_RULE);
            ev.set_name(file_name);
            self.events.push(ev, (self.clock)());
        }
    }

    pub(crate) fn status_info(&self) -> StatusInfo {
        let p = self.policy();
        let (next_event_seq, events_dropped) = self.events.state();
        StatusInfo {
            generation: p.generation(),
            rule_count: p.rule_count() as u32,
            flags: StatusFlags::from_bits_truncate(self.status_flags.load(Ordering::Relaxed)),
            instances: self.instances.load(Ordering::Relaxed),
            next_event_seq,
            events_dropped,
        }
    }

    /// A GetStats snapshot of per-rule counters `first..first+max`, with the
    /// callback-layer counters (`callbacks` is always `Some`; the handler drops
    /// them for a request without `RequestFlags::CALLBACK_COUNTERS`). Every buffer
    /// is allocated fallibly (the port handler runs in the driver).
    ///
    /// # Errors
    /// [`InsufficientResources`] when a buffer could not be allocated (GetStats
    /// then answers `STATUS_INSUFFICIENT_RESOURCES`; nothing changes).
    pub fn snapshot(
        &self,
        first_rule: u32,
        max_rules: u32,
    ) -> Result<StatsSnapshot, InsufficientResources> {
        let p = self.policy();
        let counts = self.stats.failures();
        let mut failures = [(NtStatus::SUCCESS, 0u64); STATUS_SLOTS];
        for (i, slot) in failures.iter_mut().enumerate() {
            *slot = (
                FAILURE_STATUSES
                    .get(i)
                    .copied()
                    .unwrap_or(NtStatus::SUCCESS),
                counts.get(i).copied().unwrap_or(0),
            );
        }
        Ok(StatsSnapshot {
            generation: p.generation(),
            total_rules: p.rule_count() as u32,
            first_rule,
            global: try_box(self.stats.global().snapshot())?,
            default_rule: try_box(p.counters(None).snapshot())?,
            latency: try_box(self.stats.latency())?,
            group_batch: try_box(self.stats.group_batch())?,
            group_wait: try_box(self.stats.group_wait())?,
            failures: try_box(failures)?,
            callbacks: Some(try_box(self.callback_counters.snapshot())?),
            rules: p.rule_counter_window(first_rule, max_rules)?,
        })
    }
}

/// The memory layout of the allocation `Arc::new` makes: std's `ArcInner<T>`
/// (`#[repr(C)]`: strong count, weak count, value).
#[repr(C)]
struct ArcInnerLayout<T> {
    _strong: core::sync::atomic::AtomicUsize,
    _weak: core::sync::atomic::AtomicUsize,
    _value: T,
}

/// Bytes of the one allocation SetPolicy and the registry load still make
/// infallibly (`Arc::new` of the compiled policy, after [`arc_after_probe`]'s
/// probe): `size_of::<CompiledPolicy>()` plus two counters, independent of the
/// policy's size (320 bytes on x86_64 when this was written; the failing-allocator
/// test `tests/tests/alloc_failure.rs` prints it).
pub const POLICY_ARC_BYTES: usize = core::mem::size_of::<ArcInnerLayout<CompiledPolicy>>();

/// `Arc::new(value)`, preceded by a fallible allocation of the same layout
/// ([`POLICY_ARC_BYTES`] for a [`CompiledPolicy`]) that is freed just before.
///
/// Stable Rust has no fallible `Arc` constructor (`Arc::try_new` is unstable, and
/// `Arc::from(Box)` / `Arc::from(Vec)` allocate again, infallibly), and this crate
/// forbids `unsafe`. The probe runs after every other buffer of the compiled
/// policy is allocated (the peak), and turns the common case, a pool already too
/// small for the block, into `InsufficientResources` before anything changes. It is
/// not a reservation: what remains is a race, another thread taking the pool's last
/// `POLICY_ARC_BYTES` between the probe's free and `Arc::new` (back to back, a few
/// instructions apart). Then `Arc::new` fails and the driver's allocation-error
/// handler bug-checks: the one infallible allocation left in SetPolicy and the
/// registry load.
///
/// # Errors
/// [`InsufficientResources`] when the probe could not be allocated.
pub(crate) fn arc_after_probe<T>(value: T) -> Result<Arc<T>, InsufficientResources> {
    let mut probe: Vec<ArcInnerLayout<T>> = Vec::new();
    probe.try_reserve_exact(1)?;
    drop(probe);
    Ok(Arc::new(value))
}

/// `Box::new(array)` with a fallible allocation (`Box::try_new` is unstable): one
/// `try_reserve_exact` of `N` elements, boxed without reallocating.
///
/// # Errors
/// [`InsufficientResources`] when the allocation failed.
pub(crate) fn try_box<T: Copy, const N: usize>(
    array: [T; N],
) -> Result<Box<[T; N]>, InsufficientResources> {
    let mut v = Vec::new();
    v.try_reserve_exact(N)?;
    v.extend_from_slice(&array);
    v.into_boxed_slice()
        .try_into()
        .map_err(|_| InsufficientResources)
}
