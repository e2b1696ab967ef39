//! The in-process port (`--offline`): FlushGuard's own message handling
//! ([`Filter::handle_message`], the code the driver's MessageNotifyCallback runs) in
//! this process, over a simulated Filter Manager ([`SimFm`]).
//!
//! # State between invocations
//!
//! Each flushctl run is a new process, so the engine would start from scratch every
//! time. With a state file (`--state FILE` or `FLUSHCTL_STATE`), the in-process "driver"
//! keeps, as JSON:
//! - `loaded`: whether it is loaded (`flushctl --offline load` / `unload`);
//! - `registry_policy`: the `Parameters\Policy` REG_BINARY value (written by
//!   `policy apply --persist`, hex);
//! - `boot_policy`: that value as it was when the engine was last loaded (what its
//!   DriverEntry read);
//! - `journal`: the state-changing requests it accepted since it was loaded (SetPolicy,
//!   ResetStats; hex wire bytes, at most [`MAX_JOURNAL`]).
//!
//! Opening the port re-creates the driver exactly as it would be: [`Filter::load`] reads
//! `boot_policy` (as DriverEntry read the registry), then the journal is handled again in order,
//! so policy generations, the event ring and GetPolicy/GetStatus answers continue where
//! the last invocation left them. `unload` clears the journal (the registry value stays,
//! as on Windows). Without a state file every run starts from a freshly loaded engine
//! with the pass-through policy. The file is replaced atomically (write + rename).
//!
//! # Simulated failures (test hook)
//!
//! `--simulate` / `FLUSHCTL_SIMULATE` (hidden) makes this port fail at the point where
//! the Windows port fails, through the same classification code:
//! - `not-loaded`: `FilterConnectCommunicationPort` / `FilterUnload` HRESULT 0x80070002;
//! - `access-denied`: the port's security descriptor refuses a non-administrator
//!   (HRESULT 0x80070005); `FilterLoad` lacks SeLoadDriverPrivilege (0x80070522);
//! - `client-version=N`: this flushctl sends protocol version N in its connect context,
//!   and the driver's own connect check (`ConnectContext::decode`) refuses it.
//! - `registry-store-fails[=STATUS]`: the registry write of `Parameters\Policy`
//!   (`ZwSetValueKey` in the driver, [`SimFm::set_registry_write_failure`] here) fails
//!   with STATUS (hex `0xC000009A` or a name such as `INSUFFICIENT_RESOURCES`; default
//!   `STATUS_ACCESS_DENIED`). A persisted SetPolicy then fails with that status and
//!   changes nothing, and the engine records a `RegistryPolicyRejected` event
//!   (`value` = `REGISTRY_STORE`) and counts `policy_store_failed`, exactly as the
//!   driver does. Such a refused request is journaled with its status and refused
//!   again when the journal is handled again, so later invocations still see that
//!   event and counter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flushguard_engine::callbacks::{Filter, PolicySource};
use flushguard_engine::protocol::{
    Command, ConnectContext, DecodeError, NtStatus, RequestHeader, CONNECT_MAGIC, PROTOCOL_VERSION,
};
use flushguard_engine::State;
use serde::{Deserialize, Serialize};

use super::error::{classify_hresult, FltlibCall, PortError};
use super::transport::Port;
use crate::sim_fltmgr::SimFm;

/// Most journal entries kept; older SetPolicy entries are folded (see [`Journal`]).
pub const MAX_JOURNAL: usize = 1024;

/// A parsed `--simulate` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulation {
    /// The driver is not loaded.
    NotLoaded,
    /// The caller is not elevated.
    AccessDenied,
    /// flushctl sends this protocol version.
    ClientVersion(u32),
    /// Writing `Parameters\Policy` fails with this status.
    RegistryStoreFails(NtStatus),
}

/// Parses an NTSTATUS given as hex (`0xC0000022`) or by name (`ACCESS_DENIED`,
/// `STATUS_ACCESS_DENIED`); only failure statuses (`NT_SUCCESS` false) are accepted.
fn parse_failure_status(s: &str) -> Option<NtStatus> {
    let status = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => NtStatus::from_bits(u32::from_str_radix(hex, 16).ok()?),
        None => {
            let name = s.strip_prefix("STATUS_").unwrap_or(s);
            *NtStatus::ALL_NAMED
                .iter()
                .find(|st| st.name().is_some_and(|n| n.eq_ignore_ascii_case(name)))?
        }
    };
    (!status.is_success()).then_some(status)
}

impl Simulation {
    /// Parses `not-loaded`, `access-denied`, `client-version=N` or
    /// `registry-store-fails[=STATUS]`.
    ///
    /// # Errors
    /// A message naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parsed = match s {
            "not-loaded" => Some(Self::NotLoaded),
            "access-denied" => Some(Self::AccessDenied),
            "registry-store-fails" => Some(Self::RegistryStoreFails(NtStatus::ACCESS_DENIED)),
            _ => {
                if let Some(v) = s.strip_prefix("client-version=") {
                    v.parse().ok().map(Self::ClientVersion)
                } else if let Some(v) = s.strip_prefix("registry-store-fails=") {
                    parse_failure_status(v).map(Self::RegistryStoreFails)
                } else {
                    None
                }
            }
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown --simulate value `{s}` (not-loaded, access-denied, client-version=N, \
                 registry-store-fails[=STATUS], STATUS a failure NTSTATUS in hex or by name)"
            )
        })
    }

    fn parse_opt(s: Option<&str>) -> Result<Option<Self>, PortError> {
        s.map(Self::parse)
            .transpose()
            .map_err(|detail| PortError::State {
                path: "--simulate".into(),
                detail,
            })
    }
}

/// The persisted state (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    /// Format tag, [`FORMAT`].
    format: String,
    loaded: bool,
    registry_policy: Option<String>,
    #[serde(default)]
    boot_policy: Option<String>,
    journal: Vec<JournalEntry>,
}

/// One accepted state-changing request and when it was handled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JournalEntry {
    /// 100-ns units since 1601 (the event time it produced).
    time: u64,
    /// The request's wire bytes, hex.
    request: String,
    /// Set when the request failed because the registry write was made to fail
    /// (`--simulate registry-store-fails`): that NTSTATUS. Handling the entry again
    /// makes the write fail the same way and expects the same status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store_failed: Option<u32>,
}

const FORMAT: &str = "flushctl-offline-state/1";

impl Default for StateFile {
    fn default() -> Self {
        StateFile {
            format: FORMAT.into(),
            loaded: true,
            registry_policy: None,
            boot_policy: None,
            journal: Vec::new(),
        }
    }
}

fn state_err(path: &Path, detail: impl Into<String>) -> PortError {
    PortError::State {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn read_state(path: Option<&Path>) -> Result<StateFile, PortError> {
    let Some(path) = path else {
        return Ok(StateFile::default());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s: StateFile = serde_json::from_str(&text)
                .map_err(|e| state_err(path, format!("not a flushctl state file: {e}")))?;
            if s.format != FORMAT {
                return Err(state_err(
                    path,
                    format!("format `{}`, expected `{FORMAT}`", s.format),
                ));
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(state_err(path, e.to_string())),
    }
}

fn write_state(path: &Path, s: &StateFile) -> Result<(), PortError> {
    let text = serde_json::to_string_pretty(s).map_err(|e| state_err(path, e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text + "\n").map_err(|e| state_err(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| state_err(path, e.to_string()))
}

fn decode_hex(path: &Path, what: &str, s: &str) -> Result<Vec<u8>, PortError> {
    hex::decode(s).map_err(|e| state_err(path, format!("{what}: {e}")))
}

/// While the journal is handled again, the engine's clock reads the recorded time of the
/// entry being handled (0 = the real clock), so events keep their original times.
static CLOCK_OVERRIDE: AtomicU64 = AtomicU64::new(0);

/// The engine's clock: 100-ns units since 1601-01-01 UTC (the driver's
/// `KeQuerySystemTime`), or the journal time being replayed.
fn engine_clock() -> u64 {
    match CLOCK_OVERRIDE.load(Ordering::Relaxed) {
        0 => system_time_100ns(),
        t => t,
    }
}

/// 100-ns units since 1601-01-01 UTC.
fn system_time_100ns() -> u64 {
    const EPOCH_DIFF_SECS: u64 = 11_644_473_600;
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() + EPOCH_DIFF_SECS) * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

fn driver_version() -> (u16, u16, u16) {
    let p = |s: &str| s.parse().unwrap_or(0);
    (
        p(env!("CARGO_PKG_VERSION_MAJOR")),
        p(env!("CARGO_PKG_VERSION_MINOR")),
        p(env!("CARGO_PKG_VERSION_PATCH")),
    )
}

/// A fresh in-process driver loaded with `registry_policy` (as DriverEntry would),
/// and what it made of that value.
pub fn new_filter(registry_policy: Option<Vec<u8>>) -> (Filter<SimFm>, PolicySource) {
    let state = State::new(engine_clock, driver_version());
    Filter::load(SimFm::new(registry_policy), state)
}

/// The in-process port.
pub struct InProcessPort {
    filter: Filter<SimFm>,
    path: Option<PathBuf>,
    file: StateFile,
}

impl std::fmt::Debug for InProcessPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessPort")
            .field("path", &self.path)
            .finish()
    }
}

impl InProcessPort {
    /// Loads the state and "connects": runs the driver's connect check on this
    /// flushctl's [`ConnectContext`].
    ///
    /// # Errors
    /// [`PortError::NotLoaded`] when the offline driver was unloaded,
    /// [`PortError::VersionMismatch`] when the connect check refuses the context,
    /// [`PortError::AccessDenied`] / [`PortError::NotLoaded`] as simulated,
    /// [`PortError::State`] for an unreadable state file.
    pub fn open(state: Option<&Path>, simulate: Option<&str>) -> Result<Self, PortError> {
        let sim = Simulation::parse_opt(simulate)?;
        let mut ctx = ConnectContext::current();
        match sim {
            Some(Simulation::NotLoaded) => {
                return Err(classify_hresult(
                    FltlibCall::Connect,
                    0x8007_0002,
                    ctx.version,
                ))
            }
            Some(Simulation::AccessDenied) => {
                return Err(classify_hresult(
                    FltlibCall::Connect,
                    0x8007_0005,
                    ctx.version,
                ))
            }
            Some(Simulation::ClientVersion(v)) => ctx.version = v,
            Some(Simulation::RegistryStoreFails(_)) | None => {}
        }
        let file = read_state(state)?;
        if !file.loaded {
            return Err(PortError::NotLoaded {
                detail: format!(
                    "the --offline engine of state file {} is unloaded; `flushctl --offline load` \
                     loads it",
                    state.map_or_else(String::new, |p| p.display().to_string())
                ),
            });
        }
        // The driver's ConnectNotifyCallback check, on the bytes we would send.
        debug_assert_eq!(ctx.magic, CONNECT_MAGIC);
        match ConnectContext::decode(&ctx.encode()) {
            Ok(_) => {}
            Err(DecodeError::UnknownVersion { expected, got }) => {
                return Err(PortError::VersionMismatch {
                    client: got,
                    driver: Some(expected),
                })
            }
            Err(e) => {
                return Err(PortError::Os {
                    call: "FilterConnectCommunicationPort",
                    detail: format!("connect context refused: {e} ({})", e.ntstatus()),
                })
            }
        }
        let path = state.map(Path::to_path_buf);
        let p = path.as_deref().unwrap_or(Path::new("(none)"));
        let boot = file
            .boot_policy
            .as_deref()
            .map(|h| decode_hex(p, "boot_policy", h))
            .transpose()?;
        let (filter, _) = new_filter(boot);
        // The registry value may have changed since boot (a persisted SetPolicy).
        if let Some(current) = file
            .registry_policy
            .as_deref()
            .map(|h| decode_hex(p, "registry_policy", h))
            .transpose()?
        {
            use flushguard_engine::callbacks::FilterManager;
            let _ = filter.fm().write_policy_value(&current);
        }
        for (i, entry) in file.journal.iter().enumerate() {
            let request = decode_hex(p, "journal", &entry.request)?;
            let mut reply = vec![0u8; 4096];
            let store_failed = entry.store_failed.map(NtStatus::from_bits);
            filter.fm().set_registry_write_failure(store_failed);
            CLOCK_OVERRIDE.store(entry.time.max(1), Ordering::Relaxed);
            let res = filter.handle_message(&request, &mut reply);
            CLOCK_OVERRIDE.store(0, Ordering::Relaxed);
            filter.fm().set_registry_write_failure(None);
            match (res, store_failed) {
                (Ok(_), None) => {}
                (Err(got), Some(want)) if got == want => {}
                (Ok(_), Some(want)) => {
                    return Err(state_err(
                        p,
                        format!("journal entry {i} no longer fails with {want}"),
                    ))
                }
                (Err(status), _) => {
                    return Err(state_err(
                        p,
                        format!("journal entry {i} is no longer accepted ({status})"),
                    ))
                }
            }
        }
        if let Some(Simulation::RegistryStoreFails(status)) = sim {
            filter.fm().set_registry_write_failure(Some(status));
        }
        Ok(Self { filter, path, file })
    }

    /// The engine behind the port (for replay with the offline driver's policy).
    pub fn filter(&self) -> &Filter<SimFm> {
        &self.filter
    }

    /// Journals `request` if it changed state (with a state file): an accepted
    /// SetPolicy or ResetStats, or (`store_failed`) a persisted SetPolicy refused
    /// because the simulated registry write failed with that status.
    fn journal(&mut self, request: &[u8], store_failed: Option<NtStatus>) -> Result<(), PortError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let command = RequestHeader::decode(request).map(|(h, _)| h.command);
        match command {
            Ok(Command::SetPolicy) | Ok(Command::ResetStats) => {
                self.file.journal.push(JournalEntry {
                    time: system_time_100ns(),
                    request: hex::encode(request),
                    store_failed: store_failed.map(NtStatus::to_bits),
                });
                if self.file.journal.len() > MAX_JOURNAL {
                    // Keep the newest entries; generations restart lower, which a
                    // reloaded driver does too.
                    let excess = self.file.journal.len() - MAX_JOURNAL;
                    self.file.journal.drain(..excess);
                }
            }
            _ => {}
        }
        self.file.registry_policy = self.filter.fm().registry_policy().map(hex::encode);
        write_state(&path, &self.file)
    }
}

impl Port for InProcessPort {
    fn send(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, PortError> {
        let refused_before = self.filter.fm().registry_writes_refused();
        match self.filter.handle_message(request, reply) {
            Ok(n) => {
                self.journal(request, None)?;
                Ok(n)
            }
            Err(status) => {
                if self.filter.fm().registry_writes_refused() != refused_before {
                    // The simulated registry fault refused it: the engine recorded an
                    // event and counted it, which later invocations must see too.
                    self.journal(request, Some(status))?;
                }
                Err(PortError::Driver {
                    command: "request",
                    status,
                })
            }
        }
    }

    fn describe(&self) -> &'static str {
        "in-process engine"
    }
}

/// `flushctl --offline load` / `unload`: sets the loaded flag of the state file.
///
/// # Errors
/// [`PortError::NotLoaded`] when unloading an unloaded engine (as `FilterUnload`
/// answers), the simulated failures, [`PortError::State`].
pub fn set_loaded(
    state: Option<&Path>,
    simulate: Option<&str>,
    loaded: bool,
) -> Result<(), PortError> {
    let call = if loaded {
        FltlibCall::Load
    } else {
        FltlibCall::Unload
    };
    match Simulation::parse_opt(simulate)? {
        Some(Simulation::AccessDenied) => {
            return Err(classify_hresult(call, 0x8007_0522, PROTOCOL_VERSION))
        }
        Some(Simulation::NotLoaded) if !loaded => {
            return Err(classify_hresult(call, 0x8007_0002, PROTOCOL_VERSION))
        }
        _ => {}
    }
    let mut file = read_state(state)?;
    if !loaded && !file.loaded {
        return Err(PortError::NotLoaded {
            detail: "the --offline engine is already unloaded".into(),
        });
    }
    if loaded && file.loaded && state.is_some() {
        // FilterLoad of a running filter: ERROR_SERVICE_ALREADY_RUNNING.
        return Err(PortError::Os {
            call: "FilterLoad",
            detail: "the --offline engine is already loaded (HRESULT 0x80070420)".into(),
        });
    }
    file.loaded = loaded;
    file.journal.clear();
    if loaded {
        // DriverEntry reads the registry value as it is now.
        file.boot_policy = file.registry_policy.clone();
    }
    match state {
        Some(p) => write_state(p, &file),
        None => Ok(()),
    }
}
