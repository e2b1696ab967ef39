//! The one place where the callback layer meets the rest of the engine: policy
//! snapshots and lookups ([`crate::matcher`]), flush orders from a
//! [`Decision`], statistics and events ([`crate::handler::State`]) and the port
//! handler.

use alloc::string::String;
use alloc::sync::Arc;

use flushguard_protocol::events::{EventKind, EventRecord};
use flushguard_protocol::stats::Counter as StatsCounter;
use flushguard_protocol::NtStatus;

use super::context::{FlushOrder, DEFAULT_RULE_SLOT, EXEMPT_SLOT};
use super::fltmgr::FilterManager;
use crate::decision::{Decision, FlushPoint};
use crate::handler::State;
use crate::matcher::{CompiledPolicy, Exemption, FileKey};
use crate::path::{try_string_from_utf16_lossy, FileName, InsufficientResources, NameError};
use crate::policy::{Action, FileProvider, FlushMethod};
use crate::stats::{Counters, Stats};

/// Where a flush FlushGuard issues happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushPlace {
    /// After a successful IRP_MJ_WRITE (flush-after-write).
    AfterWrite,
    /// At IRP_MJ_CLEANUP (flush-on-close).
    AtCleanup,
}

/// A consistent view of the policy in force for one callback (an `Arc` clone;
/// no lock is held while it is used).
pub struct PolicySnapshot {
    policy: Arc<CompiledPolicy>,
}

fn index(slot: u32) -> Option<u32> {
    (slot != DEFAULT_RULE_SLOT).then_some(slot)
}

impl PolicySnapshot {
    /// Low 32 bits of the policy generation (what a [`super::StreamContext`] stores).
    pub fn generation(&self) -> u32 {
        self.policy.generation() as u32
    }

    /// The rule governing a file: `(slot, action)`. `name` is the normalized name; a
    /// name that does not parse matches only rules without share/path/extension.
    /// A file FlushGuard never governs ([`Exemption`]: `\\server\PIPE`,
    /// `\\server\MAILSLOT`, `\\server\IPC$`, also when the rest of the name does
    /// not parse) gets `(EXEMPT_SLOT, Action::PASS)` whatever the policy says.
    ///
    /// # Errors
    /// [`InsufficientResources`] when the parsed name's buffers could not be
    /// allocated: no rule is chosen (the caller passes the operation through).
    pub fn lookup(
        &self,
        provider: FileProvider,
        name: &str,
        image: &str,
    ) -> Result<(u32, Action), InsufficientResources> {
        let parsed = match FileName::parse(name) {
            Ok(n) => Some(n),
            Err(NameError::Invalid(_)) => {
                if Exemption::of_unparsed(name)?.is_some() {
                    return Ok((EXEMPT_SLOT, Action::PASS));
                }
                None
            }
            Err(NameError::InsufficientResources) => return Err(InsufficientResources),
        };
        let key = FileKey {
            provider,
            name: parsed.as_ref(),
            process_image: image,
        };
        let rule = self.policy.lookup(&key);
        if rule.exempt.is_some() {
            return Ok((EXEMPT_SLOT, Action::PASS));
        }
        Ok((rule.index.unwrap_or(DEFAULT_RULE_SLOT), rule.action))
    }

    /// The action of rule `slot` in this policy (`None` for an index past the end;
    /// always `pass` for [`EXEMPT_SLOT`]).
    pub fn action(&self, slot: u32) -> Option<Action> {
        if slot == EXEMPT_SLOT {
            return Some(Action::PASS);
        }
        match index(slot) {
            None => Some(self.policy.policy().default_action),
            Some(i) => self.policy.policy().rules.get(i as usize).map(|r| r.action),
        }
    }

    /// What the policy can do ([`crate::matcher::Reach`]): whether a create must be
    /// classified at all, before the file is open, or only after.
    pub fn reach(&self) -> crate::matcher::Reach {
        self.policy.reach()
    }

    /// The policy asks to attach to local volumes too.
    pub fn attach_local_volumes(&self) -> bool {
        self.policy.policy().attach_local_volumes
    }

    /// The per-rule counters of `slot`.
    pub fn counters(&self, slot: u32) -> &Counters {
        self.policy.counters(index(slot))
    }
}

/// The policy in force now.
pub fn snapshot(state: &State) -> PolicySnapshot {
    PolicySnapshot {
        policy: state.policy(),
    }
}

/// The engine's global statistics.
pub fn stats(state: &State) -> &Stats {
    state.stats()
}

/// Counts one of our own flushes (or its paging writes / cleanup) passed through.
pub fn count_own_flush_passed(state: &State) {
    state
        .stats()
        .global()
        .add(StatsCounter::OwnFlushesPassed, 1);
}

/// Counts a flush that was due but not issued (engine `flushes_skipped`).
pub fn count_flush_skipped(state: &State) {
    state.stats().global().add(StatsCounter::FlushesSkipped, 1);
}

/// The flush a decision orders, if any.
pub fn flush_order(d: &Decision) -> Option<(FlushOrder, FlushPlace)> {
    d.flush.map(|f| {
        (
            FlushOrder {
                native: f.method == FlushMethod::Native,
                flags: f.flags,
            },
            match f.point {
                FlushPoint::AfterWrite => FlushPlace::AfterWrite,
                FlushPoint::AtCleanup => FlushPlace::AtCleanup,
            },
        )
    })
}

/// Records one flush FlushGuard issued (counters, latency in µs, and on failure a
/// `FlushFailed` event naming the file). PASSIVE_LEVEL: a failure queries the
/// file name (released before returning). If the name's buffer cannot be allocated
/// the event is recorded without a name and `CallbackCounter::AllocationFailed`
/// counted.
pub fn record_flush<F: FilterManager>(
    state: &State,
    fm: &F,
    slot: u32,
    native: bool,
    status: NtStatus,
    elapsed_us: u64,
    data: &F::Data,
) {
    let method = if native {
        FlushMethod::Native
    } else {
        FlushMethod::Filter
    };
    let mut name = String::new();
    if !status.is_success() {
        if let Ok(info) = fm.get_file_name_information(data) {
            match try_string_from_utf16_lossy(fm.file_name(&info)) {
                Ok(n) => name = n,
                Err(InsufficientResources) => state
                    .callback_counters()
                    .bump(flushguard_protocol::stats::CallbackCounter::AllocationFailed),
            }
            fm.release_file_name_information(info);
        }
    }
    state.record_flush(
        &state.policy(),
        index(slot),
        method,
        status,
        elapsed_us,
        &name,
    );
}

/// Records that `Parameters\Policy` could not be read at DriverEntry
/// (`RegistryPolicyRejected` with the read's status).
pub fn registry_unreadable<F: FilterManager>(fm: &F, state: &State, status: NtStatus) {
    let generation = state.policy().generation();
    state.events().push(
        EventRecord::new(
            EventKind::RegistryPolicyRejected,
            status,
            generation,
            flushguard_protocol::events::REGISTRY_LOAD,
        ),
        fm.system_time(),
    );
}

/// Runs the engine handler; a SetPolicy that asked to be persisted is written to
/// `Parameters\Policy` after validation and takes effect only if the write
/// succeeded ([`crate::handler::handle_persisting`]).
pub fn handle_message<F: FilterManager>(
    fm: &F,
    state: &State,
    request: &[u8],
    reply: &mut [u8],
) -> Result<usize, NtStatus> {
    let mut store = |blob: &[u8]| fm.write_policy_value(blob);
    crate::handler::handle_persisting(state, request, reply, &mut store).map(|o| o.reply_len)
}
