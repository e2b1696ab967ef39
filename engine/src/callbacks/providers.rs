//! The MUP provider table: which redirector a file on `\Device\Mup` belongs to.
//!
//! Provider ids come from `FsRtlMupGetProviderIdFromName` (stable for the life of the
//! system once the redirector registered with MUP: DDI page
//! "FsRtlMupGetProviderIdFromName"). A redirector that registers after FlushGuard
//! loaded (WebDAV when the WebClient service starts, NFS installed later) is found by
//! resolving the missing names again when a MUP file has an id the table does not
//! know: at most once per [`RERESOLVE_INTERVAL_US`], counted (issue 9 finding 6).

use core::sync::atomic::{AtomicU64, Ordering};

use super::fltmgr::FilterManager;
use crate::callback_counters::{CallbackCounters, Counter};
use crate::policy::FileProvider;

/// SMB redirector device as registered with MUP.
pub const SMB_DEVICE: &str = "\\Device\\LanmanRedirector";
/// WebDAV redirector device.
pub const WEBDAV_DEVICE: &str = "\\Device\\WebDavRedirector";
/// NFS redirector device.
pub const NFS_DEVICE: &str = "\\Device\\Nfs";
/// Remote Desktop device redirector.
pub const RDPDR_DEVICE: &str = "\\Device\\RdpDr";

/// Shortest time between two attempts to resolve the missing redirectors again, in
/// microseconds (1 s): a burst of opens on an unknown redirector (a third-party one
/// that will never match) costs at most one round of MUP queries per second.
pub const RERESOLVE_INTERVAL_US: u64 = 1_000_000;

/// The redirectors a policy can name, in [`ProviderTable`] slot order.
const DEVICES: [(&str, FileProvider); 4] = [
    (SMB_DEVICE, FileProvider::Smb),
    (WEBDAV_DEVICE, FileProvider::WebDav),
    (NFS_DEVICE, FileProvider::Nfs),
    (RDPDR_DEVICE, FileProvider::Rdpdr),
];

/// A slot's value: 0 = not (yet) registered with MUP, else `RESOLVED | id`.
const RESOLVED: u64 = 1 << 32;

/// MUP provider ids of the redirectors a policy can name. Lock-free: each slot is
/// written once (unknown -> id), any IRQL for lookups.
#[derive(Debug, Default)]
pub struct ProviderTable {
    ids: [AtomicU64; 4],
    /// [`FilterManager::now_us`] of the last resolution attempt.
    last_attempt_us: AtomicU64,
}

impl ProviderTable {
    /// Resolves every known redirector (`FsRtlMupGetProviderIdFromName`); one that
    /// is not registered with MUP stays unknown until a later
    /// [`ProviderTable::classify`] finds it. PASSIVE_LEVEL.
    pub fn resolve<F: FilterManager>(fm: &F) -> Self {
        let table = ProviderTable::default();
        table.resolve_missing(fm);
        table.last_attempt_us.store(fm.now_us(), Ordering::Relaxed);
        table
    }

    /// Asks MUP for every redirector still unknown; true when one was found.
    fn resolve_missing<F: FilterManager>(&self, fm: &F) -> bool {
        let mut found = false;
        for (slot, (device, _)) in self.ids.iter().zip(DEVICES) {
            if slot.load(Ordering::Acquire) != 0 {
                continue;
            }
            if let Ok(id) = fm.mup_provider_id_from_name(device) {
                slot.store(RESOLVED | u64::from(id), Ordering::Release);
                found = true;
            }
        }
        found
    }

    /// The provider of a MUP provider id in the table as it stands (`None` = the file
    /// is not on MUP: `Local`; an id no known redirector has: `Other`).
    pub fn lookup(&self, id: Option<u32>) -> FileProvider {
        let Some(id) = id else {
            return FileProvider::Local;
        };
        self.ids
            .iter()
            .zip(DEVICES)
            .find(|(slot, _)| slot.load(Ordering::Acquire) == RESOLVED | u64::from(id))
            .map_or(FileProvider::Other, |(_, (_, provider))| provider)
    }

    /// True when every redirector a policy can name has been resolved.
    pub fn complete(&self) -> bool {
        self.ids.iter().all(|s| s.load(Ordering::Acquire) != 0)
    }

    /// The provider of a file from its MUP provider id, resolving the missing
    /// redirectors again on a miss (an id no resolved redirector has, while some are
    /// unresolved), at most once per [`RERESOLVE_INTERVAL_US`]: counts
    /// `ProviderReresolved` when a redirector was found, `ProviderReresolveThrottled`
    /// when a miss came too soon after the last attempt. PASSIVE_LEVEL (MUP queries).
    pub fn classify<F: FilterManager>(
        &self,
        fm: &F,
        counters: &CallbackCounters,
        id: Option<u32>,
    ) -> FileProvider {
        let provider = self.lookup(id);
        if provider != FileProvider::Other || self.complete() {
            return provider;
        }
        let now = fm.now_us();
        let last = self.last_attempt_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RERESOLVE_INTERVAL_US
            || self
                .last_attempt_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            counters.bump(Counter::ProviderReresolveThrottled);
            return provider;
        }
        if self.resolve_missing(fm) {
            counters.bump(Counter::ProviderReresolved);
        }
        self.lookup(id)
    }
}
