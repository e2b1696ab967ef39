//! The one place where the callback layer meets the rest of the engine: policy
//! snapshots and lookups ([`crate::matcher`]), decisions ([`crate::decision`]),
//! statistics and events ([`crate::handler`]), and the MUP provider table.
//!
//! [`Verdict`] is the callback layer's reading of an engine `Decision`; the rules
//! behind it live in `decision.rs`, not here.

use alloc::sync::Arc;

use flushguard_protocol::{FlushFlags, NtStatus};

use super::context::{FlushOrder, DEFAULT_RULE_SLOT};
use super::counters::CallbackCounters;
use super::fltmgr::FilterManager;
use crate::decision::{self, FlushPoint, OperationView};
use crate::handler::State;
use crate::matcher::{CompiledPolicy, FileKey};
use crate::policy::{FileProvider, FlushMethod, Policy};

pub use crate::policy::Action;

/// Where a flush FlushGuard issues happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushPlace {
    /// After a successful IRP_MJ_WRITE (flush-after-write).
    AfterWrite,
    /// At IRP_MJ_CLEANUP (flush-on-close).
    AtCleanup,
}

/// The facts of one operation the engine decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpFacts {
    /// `IRP_MJ_*`.
    pub major: u8,
    /// `IRP_MN_*` (flush type for IRP_MJ_FLUSH_BUFFERS).
    pub minor: u8,
    /// `Iopb->IrpFlags`.
    pub irp_flags: u32,
    /// `Iopb->OperationFlags`.
    pub operation_flags: u8,
    /// Fast I/O.
    pub fast_io: bool,
    /// Kernel-mode requestor.
    pub requestor_kernel: bool,
    /// `IoGetTopLevelIrp() != NULL`.
    pub top_level_irp: bool,
    /// Create options (IRP_MJ_CREATE only, else 0).
    pub create_options: u32,
    /// The handle was written since its last flush.
    pub written_since_flush: bool,
}

/// What the engine decided for one operation, as the callbacks act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The rule's mode is not `pass`: the handle gets a context.
    pub governed: bool,
    /// Add `FILE_WRITE_THROUGH` to the create options.
    pub create_write_through: bool,
    /// Add `SL_WRITE_THROUGH` to the write.
    pub sl_write_through: bool,
    /// Return `FLT_PREOP_DISALLOW_FASTIO` for a fast I/O write.
    pub disallow_fast_io: bool,
    /// Issue a flush.
    pub flush: Option<(FlushOrder, FlushPlace)>,
    /// New `IRP_MN_FLUSH_*` minor function for an application flush.
    pub upgrade_minor: Option<u8>,
    /// Track writes/flushes on the handle (flush-on-close bookkeeping).
    pub record_write: bool,
    /// Audit mode: the decision was only counted.
    pub audit: bool,
}

/// A consistent view of the policy in force for one callback.
pub struct PolicySnapshot {
    policy: Arc<CompiledPolicy>,
}

impl PolicySnapshot {
    /// Low 32 bits of the policy generation.
    pub fn generation(&self) -> u32 {
        self.policy.generation() as u32
    }

    /// The rule governing a file: `(slot, action)`.
    pub fn lookup(&self, provider: FileProvider, name: &str, image: &str) -> (u32, Action) {
        let key = FileKey { provider, name, process_image: image };
        let rule = self.policy.lookup(&key);
        let slot = rule.index.map_or(DEFAULT_RULE_SLOT, |i| i as u32);
        (slot, rule.action.clone())
    }

    /// The action of rule `slot` in this policy.
    pub fn action(&self, slot: u32) -> Option<Action> {
        self.policy.action(if slot == DEFAULT_RULE_SLOT { None } else { Some(slot as usize) })
    }
}

/// The policy in force now.
pub fn snapshot(state: &State) -> PolicySnapshot {
    PolicySnapshot { policy: state.policy() }
}

/// Asks the engine what to do.
pub fn decide(action: &Action, facts: &OpFacts) -> Verdict {
    let view = OperationView {
        major_function: facts.major,
        minor_function: facts.minor,
        irp_flags: facts.irp_flags,
        operation_flags: facts.operation_flags,
        fast_io: facts.fast_io,
        requestor_mode_kernel: facts.requestor_kernel,
        top_level_irp: facts.top_level_irp,
        create_options: facts.create_options,
        written_since_flush: facts.written_since_flush,
        ..OperationView::default()
    };
    let d = decision::decide(action, &view);
    Verdict {
        governed: d.governed,
        create_write_through: d.set_create_write_through,
        sl_write_through: d.set_sl_write_through,
        disallow_fast_io: d.disallow_fast_io,
        flush: d.flush.map(|f| {
            (
                FlushOrder { native: f.method == FlushMethod::Native, flags: f.flags },
                match f.point {
                    FlushPoint::AfterWrite => FlushPlace::AfterWrite,
                    FlushPoint::AtCleanup => FlushPlace::AtCleanup,
                },
            )
        }),
        upgrade_minor: d.upgrade_flush.map(FlushFlags::to_flush_minor),
        record_write: d.mark_written_since_flush,
        audit: d.audit_only,
    }
}

/// Records one flush FlushGuard issued: outcome and latency in microseconds.
pub fn record_flush(state: &State, result: Result<(), NtStatus>, elapsed_us: u64) {
    state.stats().record_flush(result, elapsed_us);
}

/// `FLT_FLUSH_TYPE_*` for a flush type.
pub fn flt_flush_type(flags: FlushFlags) -> u32 {
    flags.to_flt_flush_type()
}

/// `FLUSH_FLAGS_*` for a flush type; `None` when there is no equivalent (purge).
pub fn flush_flags_ex(flags: FlushFlags) -> Option<u32> {
    flags.to_flush_flags_ex().ok()
}

/// Engine state from a `Parameters\Policy` value.
pub fn state_from_registry(raw: &[u8]) -> Result<State, NtStatus> {
    let policy = Policy::decode(raw).map_err(|e| e.ntstatus())?;
    State::new(policy).map_err(|e| e.ntstatus())
}

/// Engine state with the pass-through policy; `why` is recorded as an event.
pub fn pass_through_state(why: Option<NtStatus>) -> State {
    let state = State::pass_through();
    if let Some(status) = why {
        state.events().registry_policy_invalid(status);
    }
    state
}

/// Runs the engine handler; persists an accepted SetPolicy that asked for it.
pub fn handle_message<F: FilterManager>(
    fm: &F,
    state: &State,
    _counters: &CallbackCounters,
    request: &[u8],
    reply: &mut [u8],
) -> Result<usize, NtStatus> {
    let outcome = crate::handler::handle(state, request, reply)?;
    if let Some(blob) = outcome.persist {
        if let Err(status) = fm.write_policy_value(&blob) {
            state.events().registry_write_failed(status);
            return Err(status);
        }
    }
    Ok(outcome.reply_len)
}

/// MUP provider ids of the redirectors policy can name, resolved once at load.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProviderTable {
    smb: Option<u32>,
    webdav: Option<u32>,
    nfs: Option<u32>,
    rdpdr: Option<u32>,
}

/// Redirector device names as registered with MUP.
pub const SMB_DEVICE: &str = "\\Device\\LanmanRedirector";
/// WebDAV redirector device.
pub const WEBDAV_DEVICE: &str = "\\Device\\WebDavRedirector";
/// NFS redirector device.
pub const NFS_DEVICE: &str = "\\Device\\Nfs";
/// Remote Desktop device redirector.
pub const RDPDR_DEVICE: &str = "\\Device\\RdpDr";

impl ProviderTable {
    /// Resolves every known redirector (`FsRtlMupGetProviderIdFromName`); a
    /// redirector that is not registered stays unknown.
    pub fn resolve<F: FilterManager>(fm: &F) -> Self {
        ProviderTable {
            smb: fm.mup_provider_id_from_name(SMB_DEVICE).ok(),
            webdav: fm.mup_provider_id_from_name(WEBDAV_DEVICE).ok(),
            nfs: fm.mup_provider_id_from_name(NFS_DEVICE).ok(),
            rdpdr: fm.mup_provider_id_from_name(RDPDR_DEVICE).ok(),
        }
    }

    /// The provider of a file from its MUP provider id (`None` = not on MUP).
    pub fn classify(&self, id: Option<u32>) -> FileProvider {
        match id {
            None => FileProvider::Local,
            Some(id) if Some(id) == self.smb => FileProvider::Smb,
            Some(id) if Some(id) == self.webdav => FileProvider::WebDav,
            Some(id) if Some(id) == self.nfs => FileProvider::Nfs,
            Some(id) if Some(id) == self.rdpdr => FileProvider::Rdpdr,
            Some(_) => FileProvider::Other,
        }
    }
}
