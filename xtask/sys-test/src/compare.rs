//! The same scenario on the host fake Filter Manager (`flushguard-tests`), and the
//! comparison with what the binary did: the calls per Filter Manager / kernel call site
//! the fake counts, the flushes (routine and flags) and what reached the file system.

use flushguard_engine::callbacks::Irql;
use flushguard_protocol::NtStatus;
use flushguard_tests::fake::{CallSite, FakeOptions};
use flushguard_tests::harness::{Harness, WriteKind as FakeWriteKind, WriteSpec};

use crate::scenario::{
    create_options, policy_blob, policy_of, Outcome, Seen, Spec, Step, WriteKind, PROCESS,
    PROVIDER_SMB, SHARE_FILE,
};

/// The binary's import routine that corresponds to a fake call site, and how to count
/// it in the binary's call record.
fn routine_of(site: CallSite) -> &'static str {
    match site {
        CallSite::GetFileNameInformation => "FltGetFileNameInformation",
        CallSite::MupProviderOfFile => "FsRtlMupGetProviderInfoFromFileObject",
        CallSite::ProcessImageName => "SeLocateProcessImageName",
        CallSite::AllocateContext => "FltAllocateContext",
        CallSite::SetStreamHandleContext => "FltSetStreamHandleContext",
        CallSite::GetStreamHandleContext => "FltGetStreamHandleContext",
        CallSite::CompletionWhenSafe => "FltDoCompletionProcessingWhenSafe",
        CallSite::FltFlushBuffers2 => "FltFlushBuffers2",
        CallSite::FltFlushBuffers => "FltFlushBuffers",
        CallSite::OpenKernelHandle => "ObOpenObjectByPointer",
        CallSite::ZwFlushBuffersFileEx => "ZwFlushBuffersFileEx",
        CallSite::CloseKernelHandle => "ZwClose(file handle)",
        CallSite::ReadPolicy => "ZwOpenKey",
        CallSite::WritePolicy => "ZwCreateKey",
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
}

/// Runs `spec` on the host fake: the same steps through the engine's callbacks.
pub fn run_fake(spec: &Spec) -> FakeOutcome {
    let h = Harness::new(FakeOptions {
        has_flush2: spec.has_flush2,
        registry: policy_of(spec),
    });
    let mut seen = Seen::default();
    let mut file = None;
    let mut reply = vec![0u8; 4096];
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
                    WriteKind::Cached => WriteSpec::default(),
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
            Step::Connect | Step::Disconnect => {}
            Step::GetVersion => {
                let _ = h.message(&flushguard_tests::port_request_get_version(), &mut reply);
            }
            Step::BadRequest => {
                let request = flushguard_tests::port_request_get_version();
                let _ = h.message(&request[..3], &mut reply);
            }
            Step::SetPolicy(mode) => {
                let request =
                    flushguard_tests::port_request_set_policy(&policy_blob(spec, mode), true);
                let _ = h.message(&request, &mut reply);
            }
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
    for v in &fake.violations {
        out.push(format!("host fake violation (same scenario): {v}"));
    }
    out
}
