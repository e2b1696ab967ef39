//! The same scenario on the host fake Filter Manager (`flushguard-tests`), and the
//! comparison with what the binary did: the calls per Filter Manager / kernel call site
//! the fake counts, the flushes (routine and flags) and what reached the file system.

use flushguard_engine::callbacks::Irql;
use flushguard_protocol::NtStatus;
use flushguard_tests::fake::{CallSite, FakeOptions};
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
        CallSite::QueueDeferredIoWorkItem => "FltQueueDeferredIoWorkItem",
        CallSite::FltFlushBuffers2 => "FltFlushBuffers2",
        CallSite::FltFlushBuffers => "FltFlushBuffers",
        CallSite::OpenKernelHandle => "FltCreateFileEx2",
        CallSite::ZwFlushBuffersFileEx => "ZwFlushBuffersFileEx",
        CallSite::CloseKernelHandle => "FltClose",
        CallSite::ReadPolicy => "ZwOpenKey",
        CallSite::WritePolicy => "ZwCreateKey",
    }
}

/// The call site named `name` (its `Debug` spelling, e.g. `GetFileNameInformation`).
pub fn site_by_name(name: &str) -> Option<CallSite> {
    CallSite::ALL
        .iter()
        .copied()
        .find(|site| format!("{site:?}") == name)
}

/// The call sites whose first call can fail in a scenario: every one but the registry
/// read and write (the fake reads the policy before a failure can be injected).
pub fn injectable(site: CallSite) -> bool {
    !matches!(site, CallSite::ReadPolicy | CallSite::WritePolicy)
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
    let h = Harness::new(FakeOptions {
        has_flush2: spec.has_flush2,
        registry: policy_of(spec),
    });
    if let Some((site, nth)) = inject {
        h.fake.inject(site, nth);
    }
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
    for v in &fake.violations {
        out.push(format!("host fake violation (same scenario): {v}"));
    }
    out
}
