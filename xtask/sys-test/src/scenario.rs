//! The scenarios, one description for two backends: [`crate::binary`] runs them
//! against the loaded flushguard.sys, [`crate::compare`] against the engine on the
//! host fake Filter Manager, and the two outcomes are compared.
//!
//! Every scenario starts with DriverEntry (policy from `Parameters\Policy`, if the
//! scenario has one) and instance setup (the MUP volume attaches, a local NTFS volume
//! does not), runs its [`Step`]s on one file `\\srv\share\data\a.db` over SMB, and ends
//! with FilterUnload and the leak report.

use flushguard_engine::policy::{FlushMethod, GroupOptions, Mode, ProviderSelector};
use flushguard_protocol::FlushFlags;

/// The requestor image (as the host scenarios use).
pub const PROCESS: &str = "\\Device\\HarddiskVolume2\\Apps\\app.exe";
/// The governed file (as the host scenarios use).
pub const SHARE_FILE: &str = "\\Device\\Mup\\srv\\share\\data\\a.db";
/// DriverEntry's RegistryPath.
pub const SERVICE_KEY: &str =
    "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\FlushGuard";
/// MUP provider id of SMB (`\Device\LanmanRedirector`).
pub const PROVIDER_SMB: u32 = 0x10;
/// Create options: `FILE_OPEN_IF` disposition, `FILE_SYNCHRONOUS_IO_NONALERT`,
/// `FILE_NON_DIRECTORY_FILE`.
pub const CREATE_OPTIONS: u32 = (3 << 24) | 0x20 | 0x40;
/// As [`CREATE_OPTIONS`] without `FILE_SYNCHRONOUS_IO_NONALERT` (asynchronous I/O).
pub const CREATE_OPTIONS_ASYNC: u32 = (3 << 24) | 0x40;
/// Bytes per scenario write (as the host harness writes).
pub const WRITE_LENGTH: u32 = 512;

/// How a write is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A cached IRP write from the application (synchronous unless the scenario's file
    /// is asynchronous).
    Cached,
    /// A synchronous IRP write (`FltIsOperationSynchronous` TRUE, post-operation in the
    /// issuing thread) even on a file opened for asynchronous I/O: the case where the
    /// native flush (`ZwFlushBuffersFileEx` on the driver's own handle) may be used.
    Synchronous,
    /// A fast I/O write (`FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`); reissued as an IRP
    /// if the driver disallows fast I/O.
    FastIo,
    /// An asynchronous paging write of the mapped page writer (`IRP_PAGING_IO |
    /// IRP_NOCACHE`, `FSRTL_MOD_WRITE_TOP_LEVEL_IRP`, pre-operation at APC_LEVEL).
    Paging,
}

/// One step of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// IRP_MJ_CREATE of the file (pre at PASSIVE_LEVEL, succeeds, post at PASSIVE).
    Open,
    /// IRP_MJ_WRITE of [`WRITE_LENGTH`] bytes at offset 0.
    Write(WriteKind),
    /// A cached IRP_MJ_WRITE ([`WriteKind::Cached`]) whose pended post-operation is
    /// left outstanding: the driver's system threads get no turn after it (binary), no
    /// pended work runs (host fake), until FilterUnload, where `FltUnregisterFilter`
    /// waits for it.
    WriteLeftPended,
    /// Application IRP_MJ_FLUSH_BUFFERS with this `IRP_MN_FLUSH_*` minor function.
    Flush(u8),
    /// IRP_MJ_CLEANUP (the last user handle closes).
    Cleanup,
    /// IRP_MJ_CLOSE: the file object goes, with Filter Manager's context references.
    Close,
    /// flushctl connects to `\FlushGuardPort` (binary only: the fake has no port).
    Connect,
    /// GetVersion request; the reply must decode with a success status.
    GetVersion,
    /// The malformed requests of [`bad_requests`]: each must be rejected with the same
    /// status the engine gives on the host fake, and no reply.
    BadRequests,
    /// Port-level abuse only the driver's port code sees (binary only): empty and
    /// oversized input, NULL or misaligned output, a kernel-address input, too small an
    /// output, bad connect contexts, one connection over `MaxConnections`. Each must be
    /// rejected with its documented status and change nothing.
    PortAbuse,
    /// SetPolicy (persisted) with a one-rule policy of this mode.
    SetPolicy(Mode),
    /// flushctl disconnects (binary only).
    Disconnect,
}

/// The usual life of one governed file, and the port.
pub const FILE_LIFE: &[Step] = &[
    Step::Open,
    Step::Write(WriteKind::Cached),
    Step::Flush(0),
    Step::Cleanup,
    Step::Close,
    Step::Connect,
    Step::GetVersion,
    Step::BadRequests,
    Step::Disconnect,
];

/// Malformed requests (DESIGN section 4) derived from a valid GetVersion request:
/// `(what, bytes)`.
pub fn bad_requests() -> Vec<(&'static str, Vec<u8>)> {
    let valid = flushguard_tests::port_request_get_version();
    let with = |at: usize, bytes: &[u8]| {
        let mut r = valid.clone();
        r[at..at + bytes.len()].copy_from_slice(bytes);
        r
    };
    vec![
        ("truncated to 3 bytes", valid[..3].to_vec()),
        (
            "unknown protocol version",
            with(0, &(u32::MAX).to_le_bytes()),
        ),
        ("unknown command", with(4, &0x7FFFu16.to_le_bytes())),
        ("undefined flag bit", with(6, &0x8000u16.to_le_bytes())),
        (
            "declared length != buffer length",
            with(8, &17u32.to_le_bytes()),
        ),
        ("non-zero reserved field", with(12, &1u32.to_le_bytes())),
        ("trailing byte", {
            let mut r = with(8, &((valid.len() + 1) as u32).to_le_bytes());
            r.push(0);
            r
        }),
    ]
}

/// One scenario.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Name on the command line and in the summary.
    pub name: &'static str,
    /// The governed rule's mode in `Parameters\Policy` (`None`: no persisted policy).
    pub mode: Option<Mode>,
    /// Flush method of the rule.
    pub method: FlushMethod,
    /// `FltGetRoutineAddress("FltFlushBuffers2")` resolves.
    pub has_flush2: bool,
    /// `MmGetSystemRoutineAddress("ExAllocatePool2")` resolves (else the driver's pool
    /// allocator falls back to `ExAllocatePoolWithTag`).
    pub has_pool2: bool,
    /// The file is opened for asynchronous I/O (no `FO_SYNCHRONOUS_IO`): a cached
    /// write is not synchronous and its post-operation runs at DISPATCH_LEVEL (a
    /// redirector's completion), deferred work in a PASSIVE_LEVEL worker.
    pub asynchronous: bool,
    /// The rule matches any provider (`provider = any`), so it can act in pre-create
    /// (`FILE_WRITE_THROUGH`); an SMB-only rule waits for the post-create, where MUP
    /// names the redirector.
    pub any_provider: bool,
    /// The steps between instance setup and FilterUnload.
    pub steps: &'static [Step],
    /// `max-batch` and `max-batch-wait-us` of a `group-commit` rule (persisted or sent
    /// with SetPolicy).
    pub group: GroupOptions,
}

const fn spec(name: &'static str, mode: Option<Mode>) -> Spec {
    Spec {
        name,
        mode,
        method: FlushMethod::Filter,
        has_flush2: true,
        has_pool2: true,
        asynchronous: false,
        any_provider: false,
        steps: FILE_LIFE,
        group: GroupOptions::DEFAULT,
    }
}

/// Two governed writes before the flush: a group-commit stream's coordinator leads two
/// batches, one on each of its two events.
const TWO_WRITES: &[Step] = &[
    Step::Open,
    Step::Write(WriteKind::Cached),
    Step::Write(WriteKind::Cached),
    Step::Flush(0),
    Step::Cleanup,
    Step::Close,
];

/// Every scenario.
pub const SCENARIOS: &[Spec] = &[
    spec("no-policy", None),
    spec("flush-after-write", Some(Mode::FlushAfterWrite)),
    Spec {
        has_flush2: false,
        has_pool2: false,
        ..spec("flush-after-write-legacy", Some(Mode::FlushAfterWrite))
    },
    Spec {
        method: FlushMethod::Native,
        ..spec("flush-after-write-native", Some(Mode::FlushAfterWrite))
    },
    Spec {
        method: FlushMethod::Native,
        asynchronous: true,
        ..spec(
            "flush-after-write-native-async",
            Some(Mode::FlushAfterWrite),
        )
    },
    Spec {
        method: FlushMethod::Native,
        asynchronous: true,
        steps: &[
            Step::Open,
            Step::Write(WriteKind::Synchronous),
            Step::Flush(0),
            Step::Cleanup,
            Step::Close,
        ],
        ..spec("native-flush-own-handle", Some(Mode::FlushAfterWrite))
    },
    spec("write-through", Some(Mode::WriteThrough)),
    Spec {
        any_provider: true,
        ..spec("write-through-any-provider", Some(Mode::WriteThrough))
    },
    spec("flush-on-close", Some(Mode::FlushOnClose)),
    Spec {
        asynchronous: true,
        ..spec("flush-after-write-async", Some(Mode::FlushAfterWrite))
    },
    Spec {
        asynchronous: true,
        ..spec("flush-on-close-async", Some(Mode::FlushOnClose))
    },
    spec("audit", Some(Mode::Audit)),
    Spec {
        steps: &[
            Step::Open,
            Step::Write(WriteKind::FastIo),
            Step::Write(WriteKind::Paging),
            Step::Flush(3), // IRP_MN_FLUSH_NO_SYNC
            Step::Cleanup,
            Step::Close,
        ],
        ..spec("fast-io-and-paging-io", Some(Mode::FlushAfterWrite))
    },
    Spec {
        steps: &[
            Step::Connect,
            Step::SetPolicy(Mode::FlushAfterWrite),
            Step::Open,
            Step::Write(WriteKind::Cached),
            Step::Cleanup,
            Step::Close,
            Step::Disconnect,
        ],
        ..spec("policy-change-over-port", None)
    },
    spec("group-commit", Some(Mode::GroupCommit)),
    Spec {
        asynchronous: true,
        ..spec("group-commit-async", Some(Mode::GroupCommit))
    },
    Spec {
        group: GroupOptions {
            max_batch: 64,
            max_batch_wait_us: 500,
        },
        steps: TWO_WRITES,
        ..spec("group-commit-batch-wait", Some(Mode::GroupCommit))
    },
    Spec {
        method: FlushMethod::Native,
        asynchronous: true,
        steps: &[
            Step::Open,
            Step::Write(WriteKind::Synchronous),
            Step::Write(WriteKind::Synchronous),
            Step::Cleanup,
            Step::Close,
        ],
        ..spec("group-commit-native-own-handle", Some(Mode::GroupCommit))
    },
    Spec {
        asynchronous: true,
        group: GroupOptions {
            max_batch: 2,
            max_batch_wait_us: 100,
        },
        steps: &[
            Step::Connect,
            Step::SetPolicy(Mode::GroupCommit),
            Step::Open,
            Step::Write(WriteKind::Cached),
            Step::Write(WriteKind::Cached),
            Step::Cleanup,
            Step::Close,
            Step::Disconnect,
        ],
        ..spec("group-commit-policy-over-port", None)
    },
    Spec {
        asynchronous: true,
        steps: &[Step::Open, Step::WriteLeftPended],
        ..spec("pended-write-at-unload", Some(Mode::FlushAfterWrite))
    },
    Spec {
        steps: &[
            Step::Connect,
            Step::PortAbuse,
            Step::Open,
            Step::Write(WriteKind::Cached),
        ],
        ..spec(
            "unload-with-open-handle-and-client",
            Some(Mode::FlushOnClose),
        )
    },
];

/// The create options of `spec`'s file.
pub fn create_options(spec: &Spec) -> u32 {
    if spec.asynchronous {
        CREATE_OPTIONS_ASYNC
    } else {
        CREATE_OPTIONS
    }
}

/// A one-rule policy (`\\srv\share`, SMB or any provider) with `mode`, encoded as
/// `Parameters\Policy` and SetPolicy carry it (the host scenarios' policy).
pub fn policy_blob(spec: &Spec, mode: Mode) -> Vec<u8> {
    let mut action =
        flushguard_tests::scenario::action(mode, spec.method, FlushFlags::empty(), None);
    if action.group.is_some() {
        action.group = Some(group_options(spec));
    }
    let provider = if spec.any_provider {
        ProviderSelector::Any
    } else {
        ProviderSelector::Smb
    };
    flushguard_tests::scenario::policy_blob_for(provider, action)
}

/// The group-commit options of `spec`'s rule (when its mode is `group-commit`).
pub fn group_options(spec: &Spec) -> GroupOptions {
    spec.group
}

/// The persisted policy of `spec`, if any.
pub fn policy_of(spec: &Spec) -> Option<Vec<u8>> {
    spec.mode.map(|mode| policy_blob(spec, mode))
}

/// What one scenario observed on the binary.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Violations (harness checks, leaks, expectation mismatches).
    pub violations: Vec<String>,
    /// Import calls made by the driver.
    pub calls: usize,
    /// Distinct imports called.
    pub distinct_calls: usize,
    /// Driver callbacks the harness invoked.
    pub callbacks: usize,
    /// Pool allocations (all tags).
    pub allocations: u64,
    /// `DbgPrintEx` lines.
    pub debug_output: Vec<String>,
    /// Per-routine call counts (for the comparison with the fake).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Flushes `(routine, flags)`.
    pub flushes: Vec<(&'static str, u32)>,
    /// What reached the file system.
    pub seen: Seen,
    /// Port messages `(what, status, reply)` in order, for the comparison.
    pub messages: Vec<(String, i32, Vec<u8>)>,
    /// Import calls in order with key argument, file and IRQL (compared, normalised,
    /// with the host fake's call log).
    pub sequence: Vec<flushguard_tests::fake::FmCall>,
}

/// What reached the (simulated) file system below the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `FILE_WRITE_THROUGH` in the create options.
    pub create_write_through: bool,
    /// `SL_WRITE_THROUGH` on the last write.
    pub write_through: bool,
    /// The last flush's minor function.
    pub flush_minor: u8,
}
