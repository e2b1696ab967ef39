//! Every callback in every mode, on the fake Filter Manager: the effects each mode
//! must have, and none it must not.

use flushguard_engine::callbacks::{Counter, Irql, FILE_WRITE_THROUGH, SL_WRITE_THROUGH};
use flushguard_engine::policy::{FlushMethod, Mode, ProviderSelector};
use flushguard_protocol::nt::{IRP_MN_FLUSH_DATA_ONLY, IRP_MN_FLUSH_NO_SYNC};
use flushguard_protocol::stats::Counter as StatsCounter;
use flushguard_protocol::{FlushFlags, NtStatus};
use flushguard_tests::fake::{FakeOptions, PROVIDER_SMB};
use flushguard_tests::harness::{Harness, WriteKind, WriteSpec};
use flushguard_tests::scenario::{self, action, full_script, harness, MODES, PROCESS, SHARE_FILE};

fn engine_count(h: &Harness, c: StatsCounter) -> u64 {
    h.filter.state().stats().global().get(c)
}

fn open(h: &Harness) -> u64 {
    flushguard_tests::scenario::open_share(h)
}

#[test]
fn full_script_is_clean_in_every_mode_method_and_flush_routine() {
    for mode in MODES {
        for method in [FlushMethod::Filter, FlushMethod::Native] {
            for has_flush2 in [true, false] {
                for flags in [FlushFlags::empty(), FlushFlags::DATA_SYNC_ONLY] {
                    let h = harness(
                        action(mode, method, flags, Some(FlushFlags::empty())),
                        has_flush2,
                    );
                    scenario::run(&h, &full_script());
                    h.unload();
                    h.assert_clean();
                }
            }
        }
    }
}

#[test]
fn write_through_sets_create_option_and_sl_write_through() {
    // A provider-agnostic rule applies at create time already.
    let act = action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    );
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(scenario::policy_blob_for(ProviderSelector::Any, act)),
    });
    let (file, seen) = h.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(
        seen & FILE_WRITE_THROUGH,
        FILE_WRITE_THROUGH,
        "FILE_WRITE_THROUGH added at create"
    );
    let file = file.expect("opened");
    let flags = h
        .write(file, WriteSpec::default())
        .expect("write reached the file system");
    assert_eq!(flags & SL_WRITE_THROUGH, SL_WRITE_THROUGH);
    let paging = h
        .write(
            file,
            WriteSpec {
                kind: WriteKind::Paging,
                ..WriteSpec::default()
            },
        )
        .expect("paging");
    assert_eq!(paging & SL_WRITE_THROUGH, 0, "paging I/O passes untouched");
    assert!(h.fake.flushes().is_empty(), "write-through issues no flush");
    assert_eq!(h.filter.counters().get(Counter::CreateWriteThroughSet), 1);
    h.close(file);
    h.unload();
    h.assert_clean();
}

#[test]
fn provider_specific_rule_governs_from_post_create() {
    // MUP names the redirector only once the file object is open: an SMB-only rule
    // cannot set FILE_WRITE_THROUGH at create, but governs every write after it.
    let h = harness(
        action(
            Mode::WriteThrough,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    let (file, seen) = h.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(seen & FILE_WRITE_THROUGH, 0);
    let file = file.expect("opened");
    assert!(
        h.fake.file_context(file).is_some(),
        "context attached in post-create"
    );
    let flags = h.write(file, WriteSpec::default()).expect("write");
    assert_eq!(flags & SL_WRITE_THROUGH, SL_WRITE_THROUGH);
    // The same share through NFS is not governed by the SMB rule.
    let (nfs, _) = h.open_seen(
        SHARE_FILE,
        Some(flushguard_tests::fake::PROVIDER_NFS),
        PROCESS,
        0,
    );
    let nfs = nfs.expect("opened");
    assert!(h.fake.file_context(nfs).is_none());
    assert_eq!(
        h.write(nfs, WriteSpec::default()).expect("write") & SL_WRITE_THROUGH,
        0
    );
    assert_eq!(
        h.filter.counters().get(Counter::ProviderQueryFailed),
        0,
        "pre-create failure is expected, not counted"
    );
    h.close(file);
    h.close(nfs);
    h.unload();
    h.assert_clean();
}

#[test]
fn other_share_is_not_governed() {
    let h = harness(
        action(
            Mode::WriteThrough,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    let (file, seen) = h.open_seen(scenario::OTHER_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(seen & FILE_WRITE_THROUGH, 0);
    let flags = h
        .write(file.expect("opened"), WriteSpec::default())
        .expect("write");
    assert_eq!(flags & SL_WRITE_THROUGH, 0);
    assert!(
        h.fake.file_context(file.expect("opened")).is_none(),
        "no context on ungoverned handles"
    );
    h.unload();
    h.assert_clean();
}

#[test]
fn flush_after_write_flushes_each_successful_non_paging_write() {
    for method in [FlushMethod::Filter, FlushMethod::Native] {
        let h = harness(
            action(
                Mode::FlushAfterWrite,
                method,
                FlushFlags::DATA_SYNC_ONLY,
                None,
            ),
            true,
        );
        let file = open(&h);
        // A native rule's flush runs only in the flush worker, on FlushGuard's own
        // handle: even a synchronous write is pended there, not synchronized.
        let native = method == FlushMethod::Native;
        h.write(file, WriteSpec::default());
        assert_eq!(
            h.filter.counters().get(Counter::WriteSynchronized),
            u64::from(!native),
            "sync write -> FLT_PREOP_SYNCHRONIZE (filter method)"
        );
        if native {
            assert!(h.fake.flushes().is_empty(), "held until the worker flushes");
            assert!(h.complete_one(Irql::PASSIVE_LEVEL));
        }
        assert_eq!(h.fake.flushes().len(), 1);
        let routine = h.fake.flushes()[0].routine;
        match method {
            FlushMethod::Filter => {
                assert_eq!(routine, "FltFlushBuffers2");
                assert_eq!(
                    h.fake.flushes()[0].flags,
                    FlushFlags::DATA_SYNC_ONLY.to_flt_flush_type()
                );
            }
            FlushMethod::Native => {
                assert_eq!(routine, "ZwFlushBuffersFileEx");
                assert_eq!(
                    Ok(h.fake.flushes()[0].flags),
                    FlushFlags::DATA_SYNC_ONLY.to_flush_flags_ex()
                );
            }
        }
        // Asynchronous write completing at DISPATCH_LEVEL: deferred to a worker.
        h.write(file, WriteSpec::asynchronous());
        assert_eq!(h.fake.flushes().len(), 1, "not flushed at DISPATCH_LEVEL");
        assert_eq!(
            h.filter.counters().get(Counter::FlushDeferred),
            1 + u64::from(native)
        );
        assert!(h.complete_one(Irql::PASSIVE_LEVEL), "deferred work queued");
        assert_eq!(
            h.fake.flushes().len(),
            2,
            "flushed by the worker at PASSIVE_LEVEL"
        );
        // Failed write: no flush.
        h.write(
            file,
            WriteSpec {
                status: NtStatus::DISK_FULL,
                ..WriteSpec::default()
            },
        );
        assert_eq!(h.fake.flushes().len(), 2);
        assert_eq!(h.filter.counters().get(Counter::WriteFailed), 1);
        // Paging I/O and top-level IRP: never a flush.
        h.write(
            file,
            WriteSpec {
                kind: WriteKind::Paging,
                ..WriteSpec::default()
            },
        );
        h.write(
            file,
            WriteSpec {
                top_level: true,
                ..WriteSpec::default()
            },
        );
        assert_eq!(h.fake.flushes().len(), 2);
        assert!(
            engine_count(&h, StatsCounter::FlushesSkipped) >= 1,
            "top-level IRP: flush skipped and counted"
        );
        // Fast I/O: disallowed, reissued as an IRP, then flushed.
        h.write(
            file,
            WriteSpec {
                kind: WriteKind::FastIo,
                ..WriteSpec::default()
            },
        );
        assert_eq!(h.filter.counters().get(Counter::FastIoDisallowed), 1);
        h.complete_all();
        assert_eq!(h.fake.flushes().len(), 3);
        h.close(file);
        h.unload();
        h.assert_clean();
    }
}

#[test]
fn flush_after_write_without_flt_flush_buffers2_uses_flt_flush_buffers() {
    let h = Harness::new(FakeOptions {
        has_flush2: false,
        registry: Some(scenario::policy_blob(action(
            Mode::FlushAfterWrite,
            FlushMethod::Filter,
            FlushFlags::NO_SYNC,
            None,
        ))),
    });
    let file = open(&h);
    h.write(file, WriteSpec::default());
    let flushes = h.fake.flushes();
    assert_eq!(flushes.len(), 1);
    assert_eq!(flushes[0].routine, "FltFlushBuffers");
    assert_eq!(h.filter.counters().get(Counter::FlushTypeWidened), 1);
    h.close(file);
    h.unload();
    h.assert_clean();
}

#[test]
fn flush_on_close_flushes_only_written_handles_once() {
    let h = harness(
        action(
            Mode::FlushOnClose,
            FlushMethod::Native,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    let untouched = open(&h);
    h.close(untouched);
    assert!(
        h.fake.flushes().is_empty(),
        "nothing written, nothing flushed"
    );

    let file = open(&h);
    h.write(file, WriteSpec::default());
    h.write(file, WriteSpec::asynchronous());
    assert!(
        h.fake.flushes().is_empty(),
        "flush-on-close does not flush after writes"
    );
    h.close(file);
    let flushes = h.fake.flushes();
    assert_eq!(flushes.len(), 1, "one flush at cleanup");
    assert_eq!(
        flushes[0].routine, "FltFlushBuffers2",
        "native flush at cleanup goes through the filter"
    );
    assert_eq!(h.filter.counters().get(Counter::NativeFlushViaFilter), 1);

    // An application full flush after the last write makes the close flush unnecessary.
    let file = open(&h);
    h.write(file, WriteSpec::default());
    h.flush(file, 0, NtStatus::SUCCESS);
    h.close(file);
    assert_eq!(
        h.fake.flushes().len(),
        1,
        "covered by the application's flush"
    );
    h.unload();
    h.assert_clean();
}

#[test]
fn audit_counts_and_changes_nothing() {
    let h = harness(
        action(
            Mode::Audit,
            FlushMethod::Filter,
            FlushFlags::empty(),
            Some(FlushFlags::empty()),
        ),
        true,
    );
    let (file, seen) = h.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(seen & FILE_WRITE_THROUGH, 0);
    let file = file.expect("opened");
    let flags = h.write(file, WriteSpec::default()).expect("write");
    assert_eq!(flags & SL_WRITE_THROUGH, 0);
    h.write(
        file,
        WriteSpec {
            kind: WriteKind::FastIo,
            ..WriteSpec::default()
        },
    );
    assert_eq!(h.filter.counters().get(Counter::FastIoDisallowed), 0);
    assert_eq!(
        h.flush(file, IRP_MN_FLUSH_NO_SYNC, NtStatus::SUCCESS),
        Some(IRP_MN_FLUSH_NO_SYNC)
    );
    h.close(file);
    assert!(h.fake.flushes().is_empty());
    assert!(engine_count(&h, StatsCounter::AuditWouldFlush) >= 1);
    assert!(engine_count(&h, StatsCounter::AuditWouldUpgrade) >= 1);
    h.unload();
    h.assert_clean();
}

/// (flushes issued, write-throughs forced, application flushes upgraded) of one
/// script (generated): a synchronous and an asynchronous write whose post-writes
/// complete at DISPATCH_LEVEL unless synchronized, a NO_SYNC application flush, one
/// more write, close.
fn audit_script(
    a: flushguard_engine::policy::Action,
    rule: ProviderSelector,
    provider: Option<u32>,
) -> [u64; 6] {
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(scenario::policy_blob_for(rule, a)),
    });
    let file = h
        .open(SHARE_FILE, provider, PROCESS, 0, NtStatus::SUCCESS)
        .expect("create succeeds");
    let dispatch = WriteSpec {
        post_irql: Irql::DISPATCH_LEVEL,
        ..WriteSpec::default()
    };
    h.write(file, dispatch);
    h.write(
        file,
        WriteSpec {
            synchronous: false,
            ..dispatch
        },
    );
    // Enforcing: the asynchronous write is pended; the flush worker runs now.
    h.complete_all();
    h.flush(file, IRP_MN_FLUSH_NO_SYNC, NtStatus::SUCCESS);
    h.write(file, dispatch);
    h.close(file);
    let counts = [
        h.fake.flushes().len() as u64,
        engine_count(&h, StatsCounter::WriteThroughForced),
        engine_count(&h, StatsCounter::AppFlushesUpgraded),
        engine_count(&h, StatsCounter::AuditWouldFlush),
        engine_count(&h, StatsCounter::AuditWouldWriteThrough),
        engine_count(&h, StatsCounter::AuditWouldUpgrade),
    ];
    h.unload();
    h.assert_clean();
    counts
}

#[test]
fn audit_predicts_what_the_audited_mode_does() {
    // Issue 10 defect 4: audit's would-flush / would-write-through / would-upgrade
    // equal what the audited mode does enforcing, on a share and on a local volume,
    // with a provider-agnostic rule (write-through at create) and an SMB rule.
    for mode in [
        Mode::WriteThrough,
        Mode::FlushAfterWrite,
        Mode::FlushOnClose,
    ] {
        for (rule, provider) in [
            (ProviderSelector::Any, Some(PROVIDER_SMB)),
            (ProviderSelector::Smb, Some(PROVIDER_SMB)),
            (ProviderSelector::Any, None),
        ] {
            let enforcing = action(
                mode,
                FlushMethod::Filter,
                FlushFlags::empty(),
                Some(FlushFlags::empty()),
            );
            let audit = flushguard_engine::policy::Action {
                mode: Mode::Audit,
                audited_mode: Some(mode),
                ..enforcing
            };
            let e = audit_script(enforcing, rule, provider);
            let a = audit_script(audit, rule, provider);
            assert_eq!(
                a[..3],
                [0, 0, 0],
                "{mode:?} {rule:?} {provider:?}: audit changes nothing"
            );
            assert_eq!(
                a[3..],
                e[..3],
                "{mode:?} {rule:?} {provider:?}: audit's would (flush, write-through, upgrade) = what enforcing did"
            );
            assert!(
                e[..3].iter().any(|&n| n > 0),
                "{mode:?}: the script exercises the mode"
            );
        }
    }
}

#[test]
fn application_flush_is_upgraded_per_rule() {
    let h = harness(
        action(
            Mode::WriteThrough,
            FlushMethod::Filter,
            FlushFlags::empty(),
            Some(FlushFlags::empty()),
        ),
        true,
    );
    let file = open(&h);
    assert_eq!(
        h.flush(file, IRP_MN_FLUSH_NO_SYNC, NtStatus::SUCCESS),
        Some(0),
        "NO_SYNC -> full flush"
    );
    assert_eq!(
        h.flush(file, IRP_MN_FLUSH_DATA_ONLY, NtStatus::SUCCESS),
        Some(0),
        "DATA_ONLY -> full flush"
    );
    assert_eq!(
        h.flush(file, 0, NtStatus::SUCCESS),
        Some(0),
        "full flush unchanged (and not dirtied)"
    );
    assert_eq!(h.filter.counters().get(Counter::AppFlushUpgraded), 2);
    h.close(file);
    h.unload();
    h.assert_clean();
}

#[test]
fn own_native_flush_re_enters_once_and_passes_through() {
    let h = harness(
        action(
            Mode::FlushAfterWrite,
            FlushMethod::Native,
            FlushFlags::empty(),
            Some(FlushFlags::DATA_SYNC_ONLY),
        ),
        true,
    );
    let file = open(&h);
    h.write(file, WriteSpec::default());
    assert!(h.complete_one(Irql::PASSIVE_LEVEL), "the flush worker runs");
    assert_eq!(h.fake.flushes().len(), 1);
    assert_eq!(h.fake.flushes()[0].routine, "ZwFlushBuffersFileEx");
    assert!(
        h.filter.counters().get(Counter::OwnIoPassedThrough) >= 2,
        "the ZwFlushBuffersFileEx pre-flush and the paging write were recognised"
    );
    h.close(file);
    h.unload();
    h.assert_clean();
}

#[test]
fn registry_policy_absent_or_invalid_starts_pass_through() {
    use flushguard_engine::callbacks::PolicySource;
    let absent = Harness::new(FakeOptions::default());
    assert_eq!(absent.source, PolicySource::Absent);
    let bad = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(vec![1, 2, 3]),
    });
    assert!(
        matches!(bad.source, PolicySource::Invalid(_)),
        "{:?}",
        bad.source
    );
    let (file, seen) = bad.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(seen, 0, "pass-through policy changes nothing");
    bad.write(file.expect("opened"), WriteSpec::default());
    assert!(bad.fake.flushes().is_empty());
    let good = harness(
        action(
            Mode::WriteThrough,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    assert_eq!(good.source, PolicySource::Registry);
    for h in [absent, bad, good] {
        h.unload();
        h.assert_clean();
    }
}

#[test]
fn process_rule_uses_the_requestor_image() {
    use flushguard_engine::policy::{Action, Matcher, Policy, Rule};
    let policy = Policy {
        rules: vec![Rule {
            name: "app".to_string(),
            matcher: Matcher {
                process: Some("app.exe".to_string()),
                ..Matcher::default()
            },
            action: action(
                Mode::WriteThrough,
                FlushMethod::Filter,
                FlushFlags::empty(),
                None,
            ),
        }],
        default_action: Action::PASS,
        attach_local_volumes: false,
    };
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(policy.encode().expect("valid")),
    });
    let (app, seen) = h.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(
        seen & FILE_WRITE_THROUGH,
        FILE_WRITE_THROUGH,
        "{PROCESS} matches app.exe"
    );
    let (other, seen) = h.open_seen(
        SHARE_FILE,
        Some(PROVIDER_SMB),
        "\\Device\\HarddiskVolume2\\Windows\\notepad.exe",
        0,
    );
    assert_eq!(seen & FILE_WRITE_THROUGH, 0);
    // An image lookup failure matches with an empty image: not governed, counted.
    h.fake
        .inject(flushguard_tests::fake::CallSite::ProcessImageName, 0);
    let (failed, seen) = h.open_seen(SHARE_FILE, Some(PROVIDER_SMB), PROCESS, 0);
    assert_eq!(seen & FILE_WRITE_THROUGH, 0);
    assert_eq!(h.filter.counters().get(Counter::ProcessQueryFailed), 1);
    for f in [app, other, failed] {
        h.close(f.expect("opened"));
    }
    h.unload();
    h.assert_clean();
}

/// Issue 11 item 3: ZwFlushBuffersFileEx runs only in the flush worker, on a handle
/// FlushGuard opens by the file's name and closes itself — never a handle to the
/// application's file object. So a pended write whose application closed its last
/// handle before the worker ran is still flushed natively, with no second
/// IRP_MJ_CLEANUP for the application's file object.
#[test]
fn native_flush_runs_in_the_worker_on_flushguards_own_handle() {
    let h = harness(
        action(
            Mode::FlushAfterWrite,
            FlushMethod::Native,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    let file = open(&h);
    // An asynchronous write completes at DISPATCH_LEVEL: it is pended to the worker
    // ...
    h.write(file, WriteSpec::asynchronous());
    assert_eq!(h.fake.pending_len(), 1);
    // ... and the application closes its last handle before the worker runs: the
    // cleanup flush uses the filter method (native only in the worker).
    h.cleanup(file);
    assert!(h.complete_one(Irql::PASSIVE_LEVEL));
    let violations = h.fake.violations();
    assert!(violations.is_empty(), "{violations:?}");
    let flushes = h.fake.flushes();
    let routines: Vec<_> = flushes.iter().map(|f| f.routine).collect();
    assert_eq!(routines, ["FltFlushBuffers2", "ZwFlushBuffersFileEx"]);
    assert_eq!(
        h.fake
            .calls(flushguard_tests::fake::CallSite::OpenKernelHandle),
        1,
        "one FltCreateFileEx2 of FlushGuard's own handle"
    );
    assert_eq!(
        h.fake.with_file(file, |f| f.cleanups),
        Some(1),
        "the application's file object saw one IRP_MJ_CLEANUP"
    );
    assert_eq!(h.filter.counters().get(Counter::NativeFlushViaFilter), 1);
    h.fake.close_file(file);
    // A synchronous write on a thread inside a guarded region (all APCs disabled):
    // not synchronized, pended; the worker (APCs enabled) flushes natively.
    let file = open(&h);
    flushguard_tests::fake::set_guarded_region(true);
    h.write(file, WriteSpec::default());
    flushguard_tests::fake::set_guarded_region(false);
    assert_eq!(h.filter.counters().get(Counter::WriteSynchronized), 0);
    assert!(h.complete_one(Irql::PASSIVE_LEVEL));
    assert_eq!(
        h.fake.flushes().last().map(|f| f.routine),
        Some("ZwFlushBuffersFileEx")
    );
    let violations = h.fake.violations();
    assert!(violations.is_empty(), "{violations:?}");
    h.close(file);
    h.unload();
    h.assert_clean();
}

/// Issue 11 (flush placement): an asynchronous governed write is never flushed in the
/// thread that completes it. Its post-operation is pended to FlushGuard's flush worker
/// (FlushGuard's own worker threads, `FLT_POSTOP_MORE_PROCESSING_REQUIRED`) on every
/// volume — `FltDoCompletionProcessingWhenSafe`, whose DDI page excludes
/// IRP_MJ_WRITE, is not used — and the write completes to the application only after
/// the worker's flush (`FltCompletePendedPostOperation`).
#[test]
fn async_writes_are_pended_to_the_flush_worker_and_complete_after_their_flush() {
    use flushguard_engine::policy::Policy;
    let policy = Policy {
        rules: Vec::new(),
        default_action: action(
            Mode::FlushAfterWrite,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        attach_local_volumes: true,
    };
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(policy.encode().expect("valid")),
    });
    for post_irql in [Irql::DISPATCH_LEVEL, Irql::PASSIVE_LEVEL] {
        let asynchronous = WriteSpec {
            synchronous: false,
            post_irql,
            ..WriteSpec::default()
        };
        let local = h
            .open(
                "\\Device\\HarddiskVolume2\\data\\a.txt",
                None,
                PROCESS,
                0,
                NtStatus::SUCCESS,
            )
            .expect("create succeeds");
        let share = open(&h);
        for file in [local, share] {
            let flushes = h.fake.flushes().len();
            let completed = h.fake.completed_pended();
            h.write(file, asynchronous);
            assert_eq!(h.fake.pending_len(), 1, "pended to the worker");
            assert_eq!(h.fake.pended(), 1, "the write has not completed yet");
            assert_eq!(
                h.fake.flushes().len(),
                flushes,
                "not flushed in the completing thread ({post_irql:?})"
            );
            assert_eq!(h.filter.pended_writes(), 1);
            assert!(h.complete_one(Irql::PASSIVE_LEVEL), "the worker runs");
            assert_eq!(h.fake.flushes().len(), flushes + 1, "flushed by the worker");
            assert_eq!(h.fake.completed_pended(), completed + 1, "then completed");
            assert_eq!(h.fake.pended(), 0);
            assert_eq!(h.filter.pended_writes(), 0);
        }
        h.close(local);
        h.close(share);
    }
    assert_eq!(h.filter.counters().get(Counter::FlushDeferred), 4);
    assert_eq!(
        h.filter.counters().get(Counter::FlushSkippedNotDeferrable),
        0
    );
    let violations = h.fake.violations();
    assert!(violations.is_empty(), "{violations:?}");
    h.unload();
    h.assert_clean();
}

/// Issue 11: writes still pended at unload are flushed and completed by the worker
/// before the filter goes (none left pended, none completed twice); a write the
/// worker cannot take (posting refused) completes at once, its flush skipped and
/// counted, and the cleanup flush covers it.
#[test]
fn pended_writes_at_unload_and_refused_posting() {
    for mode in [Mode::FlushAfterWrite, Mode::GroupCommit] {
        pended_writes_at_unload_and_refused_posting_in(mode);
    }
}

/// [`pended_writes_at_unload_and_refused_posting`] under `mode` (group-commit: the
/// pended writes are committed by the worker, each leading its own batch).
fn pended_writes_at_unload_and_refused_posting_in(mode: Mode) {
    use flushguard_tests::fake::CallSite;
    let h = harness(
        action(mode, FlushMethod::Filter, FlushFlags::empty(), None),
        true,
    );
    let file = open(&h);
    let asynchronous = WriteSpec::asynchronous();
    // Posting refused: no flush now, one at cleanup.
    h.fake.inject(CallSite::QueueDeferredIoWorkItem, 0);
    h.write(file, asynchronous);
    assert_eq!(h.fake.pended(), 0);
    assert_eq!(
        h.filter.counters().get(Counter::FlushSkippedNotDeferrable),
        1
    );
    assert!(h.fake.flushes().is_empty());
    h.cleanup(file);
    assert_eq!(h.fake.flushes().len(), 1, "the cleanup flush covers it");
    h.fake.close_file(file);
    // A redirector worker completing the write with its own IRP top-level: posting
    // is refused (as FltQueueDeferredIoWorkItem would: STATUS_FLT_NOT_SAFE_TO_POST_OPERATION,
    // "file system recursion could cause deadlocks"): completed at once, counted, and
    // flushed at cleanup.
    let file = open(&h);
    h.write(
        file,
        WriteSpec {
            top_level: true,
            ..asynchronous
        },
    );
    assert_eq!(h.fake.pended(), 0);
    assert_eq!(
        h.filter.counters().get(Counter::FlushSkippedNotDeferrable),
        2
    );
    h.cleanup(file);
    assert_eq!(h.fake.flushes().len(), 2, "the cleanup flush covers it");
    h.fake.close_file(file);
    // Three writes pended, then unload: each is flushed and completed exactly once.
    let file = open(&h);
    for _ in 0..3 {
        h.write(file, asynchronous);
    }
    assert_eq!(h.fake.pended(), 3);
    h.unload();
    assert_eq!(h.fake.pended(), 0);
    assert_eq!(h.fake.completed_pended(), 3);
    assert_eq!(h.fake.flushes().len(), 5);
    h.assert_clean();
}

/// Issue 9 finding 8: with every recursion-guard slot taken by other threads, a
/// flush-after-write is still issued (unguarded, through the filter method: nothing
/// re-enters FlushGuard's pre-flush), never skipped, and the cause is counted.
#[test]
fn flush_after_write_runs_when_every_recursion_guard_slot_is_taken() {
    use flushguard_engine::callbacks::OWN_FLUSH_SLOTS;
    for method in [FlushMethod::Filter, FlushMethod::Native] {
        let h = harness(
            action(Mode::FlushAfterWrite, method, FlushFlags::empty(), None),
            true,
        );
        let file = open(&h);
        // Other threads (ids no harness thread uses) inside FlushGuard flushes.
        let others: Vec<_> = (0..OWN_FLUSH_SLOTS as u64)
            .map(|i| {
                h.filter
                    .own_flushes()
                    .enter(0xF1D5_0000_0000 + i)
                    .expect("a free slot per other thread")
            })
            .collect();
        h.write(file, WriteSpec::default());
        h.complete_all(); // a native rule's write is flushed by the worker
        assert_eq!(
            h.fake.flushes().len(),
            1,
            "{method:?}: flushed, not skipped"
        );
        assert_eq!(
            h.fake.flushes()[0].routine,
            "FltFlushBuffers2",
            "unguarded: the filter method even when the rule says native"
        );
        assert_eq!(h.filter.counters().get(Counter::OwnFlushUnguarded), 1);
        assert_eq!(h.filter.counters().get(Counter::FlushSkippedRecursion), 0);
        assert_eq!(engine_count(&h, StatsCounter::FlushesSkipped), 0);
        drop(others);
        // With the guard free again, the rule's method is used.
        h.write(file, WriteSpec::default());
        h.complete_all();
        let routine = h.fake.flushes()[1].routine;
        assert_eq!(
            routine,
            match method {
                FlushMethod::Filter => "FltFlushBuffers2",
                FlushMethod::Native => "ZwFlushBuffersFileEx",
            }
        );
        h.close(file);
        h.unload();
        h.assert_clean();
    }
}

/// Issue 9 finding 5: what one create on a share costs in name, image and provider
/// queries. Under a policy whose every action is `pass`: none. Otherwise one
/// normalized name query per create (the post-create's, or the pre-create's when a
/// provider-agnostic rule acts at create and no rule names a provider).
#[test]
fn a_create_queries_the_name_at_most_once_and_never_under_a_pass_through_policy() {
    use flushguard_tests::fake::CallSite;
    let queries = |h: &Harness| {
        [
            CallSite::GetFileNameInformation,
            CallSite::ProcessImageName,
            CallSite::MupProviderOfFile,
        ]
        .map(|site| h.fake.calls(site))
    };
    let pass = action(Mode::Pass, FlushMethod::Filter, FlushFlags::empty(), None);
    let write_through = action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    );
    let flush = action(
        Mode::FlushAfterWrite,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    );
    for (provider, act, per_create) in [
        (ProviderSelector::Smb, pass, [0, 0, 0]),
        (ProviderSelector::Any, pass, [0, 0, 0]),
        (ProviderSelector::Smb, flush, [1, 1, 1]),
        (ProviderSelector::Any, flush, [1, 1, 1]),
        (ProviderSelector::Smb, write_through, [1, 1, 1]),
        // Pre-create classifies (FILE_WRITE_THROUGH at create); the post-create
        // reuses its rule: no rule names a provider.
        (ProviderSelector::Any, write_through, [1, 1, 0]),
    ] {
        let h = Harness::new(FakeOptions {
            has_flush2: true,
            registry: Some(scenario::policy_blob_for(provider, act)),
        });
        let before = queries(&h);
        let files: Vec<u64> = (0..3).map(|_| open(&h)).collect();
        let after = queries(&h);
        let per: Vec<u64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| (a - b) / files.len() as u64)
            .collect();
        assert_eq!(
            per, per_create,
            "{provider:?} {:?}: [name, image, provider] queries per create",
            act.mode
        );
        for f in files {
            h.close(f);
        }
        h.unload();
        h.assert_clean();
    }
}

/// Issue 9 finding 6: a redirector that registers with MUP after the driver loaded
/// (here RDPDR) is resolved again on a miss, at most once per second, and counted.
#[test]
fn a_redirector_registered_after_load_is_resolved_on_a_miss() {
    use flushguard_engine::callbacks::{RDPDR_DEVICE, RERESOLVE_INTERVAL_US};
    const PROVIDER_RDPDR: u32 = 0x40;
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(scenario::policy_blob_for(
            ProviderSelector::Rdpdr,
            action(
                Mode::FlushAfterWrite,
                FlushMethod::Filter,
                FlushFlags::empty(),
                None,
            ),
        )),
    });
    let open_rdpdr = |h: &Harness| {
        h.open(
            SHARE_FILE,
            Some(PROVIDER_RDPDR),
            PROCESS,
            0,
            NtStatus::SUCCESS,
        )
        .expect("create succeeds")
    };
    let governed = |h: &Harness, file: u64| {
        let before = h.fake.flushes().len();
        h.write(file, WriteSpec::default());
        h.fake.flushes().len() > before
    };
    // Not registered yet, and within a second of load: throttled, not governed.
    let a = open_rdpdr(&h);
    assert!(!governed(&h, a));
    assert_eq!(
        h.filter.counters().get(Counter::ProviderReresolveThrottled),
        1
    );
    // RDPDR registers; the next miss more than a second later resolves it.
    h.fake.register_provider(RDPDR_DEVICE, PROVIDER_RDPDR);
    h.fake.advance_clock(RERESOLVE_INTERVAL_US);
    let b = open_rdpdr(&h);
    assert_eq!(h.filter.counters().get(Counter::ProviderReresolved), 1);
    assert!(governed(&h, b), "the rdpdr rule governs the new handle");
    // Resolved for good: later opens need no new attempt.
    let c = open_rdpdr(&h);
    assert!(governed(&h, c));
    assert_eq!(h.filter.counters().get(Counter::ProviderReresolved), 1);
    assert_eq!(
        h.filter.counters().get(Counter::ProviderReresolveThrottled),
        1
    );
    for f in [a, b, c] {
        h.close(f);
    }
    h.unload();
    h.assert_clean();
}

/// Issue 9 finding 2: data changes that arrive without an IRP_MJ_WRITE — server-side
/// copy, offload write, block cloning, end-of-file / allocation changes — mark the
/// handle written, and flush-after-write flushes right after a synchronous one.
#[test]
fn data_changing_fsctls_and_size_changes_count_as_writes() {
    use flushguard_engine::callbacks::PreOpStatus;
    use flushguard_protocol::nt::{
        DATA_CHANGING_FSCTLS, FILE_ALLOCATION_INFORMATION, FILE_END_OF_FILE_INFORMATION,
        FSCTL_SRV_COPYCHUNK,
    };
    /// `FSCTL_GET_REPARSE_POINT` (winioctl.h): reads, changes nothing.
    const FSCTL_GET_REPARSE_POINT: u32 = 0x0009_00A8;
    /// `FileBasicInformation` (timestamps, attributes).
    const FILE_BASIC_INFORMATION: u32 = 4;
    let close_flushes = |h: &Harness, file: u64| {
        let before = h.fake.flushes().len();
        h.close(file);
        h.fake.flushes().len() - before
    };
    let on_close = || {
        harness(
            action(
                Mode::FlushOnClose,
                FlushMethod::Filter,
                FlushFlags::empty(),
                None,
            ),
            true,
        )
    };
    // Flush-on-close: each data-changing FSCTL alone makes the close flush.
    for code in DATA_CHANGING_FSCTLS {
        let h = on_close();
        let file = open(&h);
        h.fs_control(file, code, true, NtStatus::SUCCESS);
        assert_eq!(close_flushes(&h, file), 1, "FSCTL {code:#010X}");
        assert_eq!(h.filter.counters().get(Counter::DataChangeRecorded), 1);
        h.unload();
        h.assert_clean();
    }
    // ... so does an end-of-file or allocation change; a failed one, another FSCTL or
    // another information class does not.
    for (what, step, flushes) in [
        ("end of file", 0u8, 1usize),
        ("allocation", 1, 1),
        ("failed copy", 2, 0),
        ("reparse query", 3, 0),
        ("basic information", 4, 0),
    ] {
        let h = on_close();
        let file = open(&h);
        let pre = match step {
            0 => h.set_information(file, FILE_END_OF_FILE_INFORMATION, NtStatus::SUCCESS),
            1 => h.set_information(file, FILE_ALLOCATION_INFORMATION, NtStatus::SUCCESS),
            2 => h.fs_control(file, FSCTL_SRV_COPYCHUNK, true, NtStatus::ACCESS_DENIED),
            3 => h.fs_control(file, FSCTL_GET_REPARSE_POINT, true, NtStatus::SUCCESS),
            _ => h.set_information(file, FILE_BASIC_INFORMATION, NtStatus::SUCCESS),
        };
        if step >= 3 {
            assert_eq!(pre, Some(PreOpStatus::SuccessNoCallback), "{what}");
        }
        assert_eq!(close_flushes(&h, file), flushes, "{what}");
        h.unload();
        h.assert_clean();
    }
    // Flush-after-write: a synchronous server-side copy is synchronized and flushed
    // right after it; an asynchronous one is left to the close.
    let h = harness(
        action(
            Mode::FlushAfterWrite,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    let file = open(&h);
    let pre = h.fs_control(file, FSCTL_SRV_COPYCHUNK, true, NtStatus::SUCCESS);
    assert_eq!(pre, Some(PreOpStatus::Synchronize));
    assert_eq!(h.fake.flushes().len(), 1, "flushed after the copy");
    assert_eq!(close_flushes(&h, file), 0, "the copy is covered");
    let file = open(&h);
    let pre = h.fs_control(file, FSCTL_SRV_COPYCHUNK, false, NtStatus::SUCCESS);
    assert_eq!(pre, Some(PreOpStatus::SuccessWithCallback));
    assert_eq!(
        h.filter
            .counters()
            .get(Counter::DataChangeFlushLeftToCleanup),
        1
    );
    assert_eq!(
        close_flushes(&h, file),
        1,
        "asynchronous copy flushed at close"
    );
    h.unload();
    h.assert_clean();
}

#[test]
fn a_flush_that_outlasts_a_set_policy_is_not_counted_under_the_new_policys_rule() {
    // A network flush can take seconds; a SetPolicy may land meanwhile, and rule 0 of
    // the new policy may be another rule (here a pass rule). The flush is counted
    // globally, and in no rule of the new policy.
    for mode in [Mode::FlushAfterWrite, Mode::GroupCommit, Mode::FlushOnClose] {
        let h = harness(
            action(mode, FlushMethod::Filter, FlushFlags::empty(), None),
            true,
        );
        let file = open(&h);
        let new_policy = scenario::policy_blob(action(
            Mode::Pass,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ));
        h.fake.during_next_flush(move |filter| {
            let mut reply = [0u8; 256];
            let request = flushguard_tests::port_request_set_policy(&new_policy, false);
            filter
                .handle_message(&request, &mut reply)
                .expect("SetPolicy during the flush");
        });
        h.write(file, WriteSpec::default()).expect("write");
        h.close(file);
        let policy = h.filter.state().policy();
        assert_eq!(policy.generation(), 2, "{mode:?}: the SetPolicy ran");
        let rule0 = policy.counters(Some(0));
        assert_eq!(
            engine_count(&h, StatsCounter::FlushesFilter),
            1,
            "{mode:?}: one flush, counted globally"
        );
        assert_eq!(
            rule0.get(StatsCounter::FlushesFilter),
            0,
            "{mode:?}: not under the new policy's rule 0"
        );
        assert_eq!(rule0.get(StatsCounter::GroupCommitWrites), 0, "{mode:?}");
        if mode == Mode::GroupCommit {
            assert_eq!(engine_count(&h, StatsCounter::GroupCommitWrites), 1);
        }
        h.unload();
        h.assert_clean();
    }
}
