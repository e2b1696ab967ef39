//! The same scenario on the host fake Filter Manager (`flushguard-tests`), and the
//! comparison with what the binary did: the calls per Filter Manager / kernel call site
//! the fake counts, the flushes (routine and flags) and what reached the file system.

use flushguard_engine::callbacks::Irql;
use flushguard_protocol::NtStatus;
use flushguard_tests::fake::{CallSite, Fake, FakeOptions, FmCall};
use flushguard_tests::harness::{Harness, WriteKind as FakeWriteKind, WriteSpec};

use crate::scenario::{
    bad_requests, create_options, policy_blob, policy_of, Outcome, Seen, Spec, Step, WriteKind,
    PROCESS, PROVIDER_SMB, SHARE_FILE,
};

/// The binary's import routine that corresponds to a fake call site, and how to count
/// it in the binary's call record.
pub fn routine_of(site: CallSite) -> &'static str {
    match site {
        CallSite::GetFileNameInformation => "FltGetFileNameInformation",
        CallSite::MupProviderOfFile => "FsRtlMupGetProviderInfoFromFileObject",
        CallSite::ProcessImageName => "SeLocateProcessImageName",
        CallSite::AllocateContext => "FltAllocateContext",
        CallSite::SetStreamHandleContext => "FltSetStreamHandleContext",
        CallSite::GetStreamHandleContext => "FltGetStreamHandleContext",
        // The driver's own queue: a ring push under a spin lock (not compared: LOCKS),
        // then KeReleaseSemaphore, counted only inside a post-operation
        // (World::pend_releases; kernel/thread.rs).
        CallSite::QueueDeferredIoWorkItem => "KeReleaseSemaphore",
        CallSite::FltFlushBuffers2 => "FltFlushBuffers2",
        CallSite::FltFlushBuffers => "FltFlushBuffers",
        CallSite::OpenKernelHandle => "FltCreateFileEx2",
        CallSite::ZwFlushBuffersFileEx => "ZwFlushBuffersFileEx",
        CallSite::CloseKernelHandle => "FltClose",
        CallSite::ReadPolicy => "ZwOpenKey",
        CallSite::WritePolicy => "ZwCreateKey",
        // Not one routine: the driver's pool allocator (ExAllocatePool2, or
        // ExAllocatePoolWithTag without it) serves every allocation. The binary's count
        // is of the coordinator blocks alone, told apart by their size in DriverEntry
        // (world::COORDINATOR_BLOCK_SIZE, the identification checked on every run).
        CallSite::AllocateCommitSync => crate::world::COORDINATOR_BLOCK_SITE,
    }
}

/// The call site named `name` (its `Debug` spelling, e.g. `GetFileNameInformation`).
pub fn site_by_name(name: &str) -> Option<CallSite> {
    CallSite::ALL
        .iter()
        .copied()
        .find(|site| format!("{site:?}") == name)
}

/// The call sites whose calls can fail in a scenario: every one but the registry read
/// and write (the binary's `ZwOpenKey` / `ZwCreateKey` have no failure injection) and
/// the queuing of a pended write to the flush worker threads (the binary's is a push
/// on the driver's own ring and a `KeReleaseSemaphore`, which cannot fail: nothing
/// outside the driver can make the push fail; the host fake's refusal models a full
/// or stopping queue, covered by the host tests).
/// `AllocateCommitSync` fails at load on both sides: the fake's failure is injected
/// before its DriverEntry (`Filter::load`), the binary's allocation returns NULL.
pub fn injectable(site: CallSite) -> bool {
    !matches!(
        site,
        CallSite::ReadPolicy | CallSite::WritePolicy | CallSite::QueueDeferredIoWorkItem
    )
}

/// Calls only the binary makes that the harness also makes fail, one run each: the
/// routine and the status. The host fake has no DriverEntry, so these runs are not
/// compared with it; DriverEntry must fail and leave nothing behind.
/// `PsCreateSystemThread`: the flush worker threads, created in DriverEntry; a
/// failure must stop the threads already made (the semaphore released, each waited
/// for and its handle closed) and unregister the filter.
pub const BINARY_ONLY_SITES: &[(&str, i32)] = &[(
    "PsCreateSystemThread",
    crate::kernel::STATUS_INSUFFICIENT_RESOURCES,
)];

/// Calls of `AllocateCommitSync` made to fail, one run each: the table lock's block
/// and the first two coordinators'. A later one takes the same path
/// (`GroupTable::try_new` gives up and frees the blocks allocated so far) with one more
/// block to free: 62 more runs per scenario for nothing new.
pub const COORDINATOR_BLOCK_CALLS: u64 = 3;

/// How many of an injectable site's calls the sweep makes fail, one run each (from the
/// first): every call, but [`COORDINATOR_BLOCK_CALLS`] of the coordinator blocks.
pub fn injected_calls(site: CallSite) -> u64 {
    match site {
        CallSite::AllocateCommitSync => COORDINATOR_BLOCK_CALLS,
        _ => u64::MAX,
    }
}

/// What the fake saw for `spec`.
pub struct FakeOutcome {
    /// Calls per call site.
    pub counts: Vec<(CallSite, u64)>,
    /// Flushes `(routine, flags)`.
    pub flushes: Vec<(&'static str, u32)>,
    /// What reached the file system.
    pub seen: Seen,
    /// The fake's own violations.
    pub violations: Vec<String>,
    /// Port messages `(what, status, reply)`.
    pub messages: Vec<(String, i32, Vec<u8>)>,
    /// The fake's call log (`Fake::call_log`).
    pub sequence: Vec<FmCall>,
}

/// One message through the engine's handler, as the port would deliver it.
fn message(h: &Harness, what: &str, request: &[u8], out: &mut Vec<(String, i32, Vec<u8>)>) {
    let mut reply = vec![0u8; 4096];
    let (status, bytes) = match h.message(request, &mut reply) {
        Some(Ok(n)) => (0, reply.get(..n).unwrap_or(&[]).to_vec()),
        Some(Err(status)) => (status.0, Vec::new()),
        None => return,
    };
    out.push((what.to_string(), status, bytes));
}

/// Runs `spec` on the host fake: the same steps through the engine's callbacks, the
/// `n`-th call (from 0) of the call site `inject` failing.
pub fn run_fake(spec: &Spec, inject: Option<(CallSite, u64)>) -> FakeOutcome {
    let fake = Fake::new(FakeOptions {
        has_flush2: spec.has_flush2,
        registry: policy_of(spec),
    });
    fake.log_calls();
    // Before the load, like the binary's: a call site the engine reaches at load (the
    // group-commit coordinators) fails there too.
    if let Some((site, nth)) = inject {
        fake.inject(site, nth);
    }
    let h = Harness::on(fake);
    let mut seen = Seen::default();
    let mut file = None;
    let mut messages = Vec::new();
    for &step in spec.steps {
        match step {
            Step::Open => {
                let (f, options) = h.open_seen(
                    SHARE_FILE,
                    Some(PROVIDER_SMB),
                    PROCESS,
                    create_options(spec),
                );
                seen.create_write_through = options & 0x2 != 0;
                file = f;
            }
            Step::Write(kind) => {
                let Some(f) = file else { continue };
                let write = match kind {
                    WriteKind::Cached if spec.asynchronous => WriteSpec {
                        synchronous: false,
                        post_irql: Irql::DISPATCH_LEVEL,
                        ..WriteSpec::default()
                    },
                    WriteKind::Cached | WriteKind::Synchronous => WriteSpec::default(),
                    WriteKind::FastIo => WriteSpec {
                        kind: FakeWriteKind::FastIo,
                        ..WriteSpec::default()
                    },
                    WriteKind::Paging => WriteSpec {
                        kind: FakeWriteKind::Paging,
                        synchronous: false,
                        ..WriteSpec::default()
                    },
                };
                let flags = h.write(f, write).unwrap_or(0);
                seen.write_through = flags & 0x4 != 0;
                // Deferred safe post-operations run in a worker before the next request.
                h.complete_all();
            }
            Step::WriteLeftPended => {
                let Some(f) = file else { continue };
                let write = if spec.asynchronous {
                    WriteSpec {
                        synchronous: false,
                        post_irql: Irql::DISPATCH_LEVEL,
                        ..WriteSpec::default()
                    }
                } else {
                    WriteSpec::default()
                };
                let flags = h.write(f, write).unwrap_or(0);
                seen.write_through = flags & 0x4 != 0;
                // No h.complete_all(): the pended write waits for the unload.
            }
            Step::Flush(minor) => {
                if let Some(f) = file {
                    seen.flush_minor = h.flush(f, minor, NtStatus::SUCCESS).unwrap_or(0);
                }
            }
            Step::Cleanup => {
                if let Some(f) = file {
                    h.cleanup(f);
                }
            }
            Step::Close => {
                if let Some(f) = file.take() {
                    h.fake.close_file(f);
                }
            }
            Step::Connect | Step::Disconnect | Step::PortAbuse => {}
            Step::GetVersion => message(
                &h,
                "GetVersion",
                &flushguard_tests::port_request_get_version(),
                &mut messages,
            ),
            Step::BadRequests => {
                for (what, request) in bad_requests() {
                    message(&h, what, &request, &mut messages);
                }
            }
            Step::SetPolicy(mode) => message(
                &h,
                "SetPolicy",
                &flushguard_tests::port_request_set_policy(&policy_blob(spec, mode), true),
                &mut messages,
            ),
        }
    }
    h.unload();
    FakeOutcome {
        counts: CallSite::ALL
            .iter()
            .map(|&site| (site, h.fake.calls(site)))
            .collect(),
        flushes: h
            .fake
            .flushes()
            .into_iter()
            .map(|f| (f.routine, f.flags))
            .collect(),
        seen,
        violations: h.fake.violations(),
        messages,
        sequence: h.fake.call_log(),
    }
}

/// Differences between the binary's `outcome` and the fake's, as violation messages.
pub fn differences(outcome: &Outcome, fake: &FakeOutcome) -> Vec<String> {
    let mut out = Vec::new();
    for &(site, expected) in &fake.counts {
        let routine = routine_of(site);
        let actual = outcome.counts.get(routine).copied().unwrap_or(0);
        if actual != expected {
            out.push(format!(
                "{routine}: the binary called it {actual} time(s), the engine on the host \
                 fake {expected} ({site:?})"
            ));
        }
    }
    if outcome.flushes != fake.flushes {
        out.push(format!(
            "flushes: binary {:?}, host fake {:?}",
            outcome.flushes, fake.flushes
        ));
    }
    if outcome.seen != fake.seen {
        out.push(format!(
            "file system saw: binary {:?}, host fake {:?}",
            outcome.seen, fake.seen
        ));
    }
    if outcome.messages.len() != fake.messages.len() {
        out.push(format!(
            "port messages: binary answered {}, host fake {}",
            outcome.messages.len(),
            fake.messages.len()
        ));
    }
    for (binary, fake) in outcome.messages.iter().zip(&fake.messages) {
        if binary != fake {
            out.push(format!(
                "port message \"{}\": binary {} with {} reply byte(s), host fake \"{}\" {} with {} \
                 (or different bytes)",
                binary.0,
                NtStatus(binary.1),
                binary.2.len(),
                fake.0,
                NtStatus(fake.1),
                fake.2.len()
            ));
        }
    }
    out.extend(unknown_routines("the binary", &outcome.sequence));
    out.extend(unknown_routines("the host fake", &fake.sequence));
    out.extend(sequence_difference(
        &normalise(&outcome.sequence),
        &normalise(&fake.sequence),
    ));
    for v in &fake.violations {
        out.push(format!("host fake violation (same scenario): {v}"));
    }
    out
}

/// The routines whose calls are compared in order, binary against host fake: each is
/// the import the driver calls for one `FilterManager` method of the engine, or one
/// method of a group-commit coordinator's `BatchEvent` / `CommitSync::sleep_us` (the
/// fake logs the method under the routine's name). `ExFreePool(image name)` is the
/// binary's `ExFreePool` of a `SeLocateProcessImageName` buffer; `KeReleaseSemaphore`
/// is the binary's release inside a post-operation (the pending of a write to the
/// flush worker threads; the fake's `queue_deferred_flush`).
pub const SEQUENCE_ROUTINES: &[&str] = &[
    "FltGetFileNameInformation",
    "FltReleaseFileNameInformation",
    "FsRtlMupGetProviderIdFromName",
    "FsRtlMupGetProviderInfoFromFileObject",
    "SeLocateProcessImageName",
    "ExFreePool(image name)",
    "FltAllocateContext",
    "FltSetStreamHandleContext",
    "FltGetStreamHandleContext",
    "FltReleaseContext",
    "KeReleaseSemaphore",
    "FltCompletePendedPostOperation",
    "FltFlushBuffers2",
    "FltFlushBuffers",
    "FltCreateFileEx2",
    "ZwFlushBuffersFileEx",
    "FltClose",
    "ZwOpenKey",
    "ZwCreateKey",
    "FltSetCallbackDataDirty",
    "FltIsOperationSynchronous",
    "KeAreAllApcsDisabled",
    "KeAreApcsDisabled",
    "FltCloseCommunicationPort",
    "FltUnregisterFilter",
    "KeClearEvent",
    "KeSetEvent",
    "KeWaitForSingleObject",
    "KeDelayExecutionThread",
];

/// The routines left out of the sequence comparison, each with the reason: they exist
/// on one side only by nature. Every routine either side records is in
/// [`SEQUENCE_ROUTINES`] or here (checked on every run).
pub const SEQUENCE_EXCLUDED: &[(&str, &str)] = &[
    ("DbgPrintEx", "the driver's trace output; the engine traces nothing through FilterManager"),
    ("ExAllocatePoolWithTag", POOL),
    ("ExAllocatePool2", POOL),
    ("ExFreePool", POOL),
    ("ExFreePoolWithTag", POOL),
    ("ExAcquireSpinLockExclusive", LOCKS),
    ("ExReleaseSpinLockExclusive", LOCKS),
    ("ExAcquireSpinLockShared", LOCKS),
    ("ExReleaseSpinLockShared", LOCKS),
    ("KeEnterCriticalRegion", LOCKS),
    ("KeLeaveCriticalRegion", LOCKS),
    ("FltInitializePushLock", LOCKS),
    ("FltDeletePushLock", LOCKS),
    ("FltAcquirePushLockExclusive", LOCKS),
    ("FltReleasePushLock", LOCKS),
    ("KeGetCurrentIrql", QUERIES),
    ("IoGetTopLevelIrp", QUERIES),
    ("PsGetCurrentThreadId", QUERIES),
    ("KeQueryInterruptTimePrecise", QUERIES),
    ("KeQuerySystemTimePrecise", QUERIES),
    ("FltRegisterFilter", SHELL),
    ("FltStartFiltering", SHELL),
    ("FltBuildDefaultSecurityDescriptor", SHELL),
    ("FltFreeSecurityDescriptor", SHELL),
    ("FltCreateCommunicationPort", SHELL),
    ("FltCloseClientPort", SHELL),
    ("FltGetRoutineAddress", SHELL),
    ("MmGetSystemRoutineAddress", SHELL),
    ("FltGetVolumeProperties", SHELL),
    ("FltGetRequestorProcess", "the shell's step to the PEPROCESS that SeLocateProcessImageName (compared) takes"),
    ("FltParseFileNameInformation", "part of the fake's get_file_name_information (FltGetFileNameInformation, compared)"),
    ("FltDoCompletionProcessingWhenSafe", "the shell's way to a PASSIVE_LEVEL post-operation; the fake's harness runs the safe post-operation itself"),
    ("KeInitializeSemaphore", THREADS),
    ("PsCreateSystemThread", THREADS),
    ("PsTerminateSystemThread", THREADS),
    ("ZwWaitForSingleObject", THREADS),
    ("KeReleaseSemaphore(wake)", "KeReleaseSemaphore outside a post-operation: the wake-up of the flush worker threads to stop them (unload, a DriverEntry failure); the fake has no threads to stop"),
    ("KeWaitForSingleObject(semaphore)", "the flush worker threads' wait for work on the driver's semaphore; the fake runs a pended write's flush without threads (its harness's complete_all, its FltUnregisterFilter); the group-commit waits on events stay compared as KeWaitForSingleObject"),
    ("ObOpenObjectByPointer", "the shell's handle for its own checks; the engine's kernel handle is FltCreateFileEx2 (compared)"),
    ("ZwClose", "closes the registry keys of ZwOpenKey / ZwCreateKey (compared: the fake's read_policy_value / write_policy_value) and the flush worker threads' handles"),
    ("ZwQueryValueKey", "the value read inside the key of ZwOpenKey (compared); the driver asks twice (size, then value), the fake once"),
    ("ZwSetValueKey", "the value written inside the key of ZwCreateKey (compared)"),
    ("KeInitializeEvent", "the group-commit coordinators' events, initialised at load (DriverEntry) in the shell's pool blocks; the fake's new_commit_sync logs nothing (its count is compared as AllocateCommitSync)"),
    ("KeBugCheckEx", "a bug check ends the run, which fails on its own"),
    ("memcmp", INTRINSICS),
    ("memcpy", INTRINSICS),
    ("memset", INTRINSICS),
];
const POOL: &str = "pool: the engine allocates through the Rust allocator on the host; the image-name free is compared as ExFreePool(image name)";
const LOCKS: &str = "the policy locks and the shell's own locks: FilterManager::policy_locks is no kernel call on the fake (lock use is checked by its FakeLocks counters)";
const QUERIES: &str = "queries without effect the shell also makes for its own checks, at different points; the IRQL is compared as an attribute of every compared call";
const SHELL: &str =
    "registration, port and instance setup live in the driver shell; the fake has no DriverEntry";
const INTRINSICS: &str = "compiler intrinsics, not kernel services";
const THREADS: &str = "the flush worker threads' life (DriverEntry, unload): the fake has no threads of its own and runs a pended write's flush itself";

/// Routines in `log` that are neither compared nor excluded, as violations.
pub fn unknown_routines(side: &str, log: &[FmCall]) -> Vec<String> {
    let mut unknown: Vec<&str> = log
        .iter()
        .map(|call| call.routine)
        .filter(|routine| {
            !SEQUENCE_ROUTINES.contains(routine)
                && !SEQUENCE_EXCLUDED.iter().any(|(r, _)| r == routine)
        })
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|routine| {
            format!(
                "{side} called {routine}, which is neither in SEQUENCE_ROUTINES nor in \
                 SEQUENCE_EXCLUDED (compare.rs)"
            )
        })
        .collect()
}

/// One compared call, normalised: routine, key argument, file as the order of its
/// first appearance (`f0`, `f1`, ...: the binary's file objects are addresses, the
/// fake's ids), IRQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqCall {
    /// The routine.
    pub routine: &'static str,
    /// Flush type or flags.
    pub arg: Option<u32>,
    /// File, by first appearance.
    pub file: Option<usize>,
    /// IRQL at the call.
    pub irql: u8,
}

impl std::fmt::Display for SeqCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.routine)?;
        if self.file.is_some() || self.arg.is_some() {
            write!(f, "(")?;
            if let Some(file) = self.file {
                write!(f, "f{file}")?;
            }
            if let Some(arg) = self.arg {
                write!(f, ", 0x{arg:X}")?;
            }
            write!(f, ")")?;
        }
        write!(f, " at IRQL {}", self.irql)
    }
}

/// The calls of [`SEQUENCE_ROUTINES`] in `log`, normalised.
pub fn normalise(log: &[FmCall]) -> Vec<SeqCall> {
    let mut files: Vec<u64> = Vec::new();
    log.iter()
        .filter(|call| SEQUENCE_ROUTINES.contains(&call.routine))
        .map(|call| SeqCall {
            routine: call.routine,
            arg: call.arg,
            file: call.file.map(|file| {
                files.iter().position(|&f| f == file).unwrap_or_else(|| {
                    files.push(file);
                    files.len() - 1
                })
            }),
            irql: call.irql,
        })
        .collect()
}

/// Calls shown before the first divergence.
const CONTEXT_BEFORE: usize = 4;
/// Calls shown from the first divergence on.
const CONTEXT_AFTER: usize = 4;

/// The first divergence of the two normalised sequences with context, as violation
/// lines (none if equal).
pub fn sequence_difference(binary: &[SeqCall], fake: &[SeqCall]) -> Vec<String> {
    let Some(at) = (0..binary.len().max(fake.len())).find(|&i| binary.get(i) != fake.get(i)) else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "call sequence differs from the host fake's at call {at} (binary {} call(s), host \
         fake {}; compared routines: SEQUENCE_ROUTINES in compare.rs):",
        binary.len(),
        fake.len()
    )];
    for i in at.saturating_sub(CONTEXT_BEFORE)..at {
        if let Some(call) = binary.get(i) {
            out.push(format!("    {i:>4}   both:   {call}"));
        }
    }
    let show = |side: &[SeqCall], i: usize| {
        side.get(i)
            .map_or_else(|| "(end of sequence)".to_string(), ToString::to_string)
    };
    for i in at..at + CONTEXT_AFTER {
        if i >= binary.len() && i >= fake.len() {
            break;
        }
        out.push(format!(
            "  {} {i:>4}   binary: {}",
            if i == at { ">" } else { " " },
            show(binary, i)
        ));
        out.push(format!("         host fake: {}", show(fake, i)));
    }
    out
}
