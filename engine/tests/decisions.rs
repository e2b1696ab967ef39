//! Decisions: per-callback behaviour and the "stricter never does less" property.
#![allow(missing_docs)]

mod common;

use flushguard_engine::protocol::nt::{
    FILE_DIRECTORY_FILE, FILE_WRITE_THROUGH, IRP_MN_FLUSH_DATA_ONLY, IRP_MN_FLUSH_NO_SYNC,
    IRP_PAGING_IO, SL_WRITE_THROUGH,
};
use flushguard_engine::protocol::stats::Counter;
use flushguard_engine::protocol::{FlushFlags, NtStatus};
use flushguard_engine::{
    decide, Action, FlushMethod, FlushPoint, FlushRequest, MajorFunction, Mode, OperationView,
    Phase, PreOp,
};
use proptest::prelude::*;

const fn view(major: MajorFunction, phase: Phase) -> OperationView {
    OperationView::new(major, phase)
}

fn write_pre(len: u32) -> OperationView {
    OperationView {
        length: len,
        ..view(MajorFunction::Write, Phase::Pre)
    }
}

fn write_post() -> OperationView {
    OperationView {
        status: Some(NtStatus::SUCCESS),
        ..view(MajorFunction::Write, Phase::Post)
    }
}

#[test]
fn write_through_create_and_write() {
    let a = Action::with_mode(Mode::WriteThrough);
    let d = decide(&a, &view(MajorFunction::Create, Phase::Pre));
    assert!(d.set_create_write_through);
    assert!(d.counts.contains(Counter::WriteThroughForced));
    // Already write-through, or a directory: nothing to add.
    let d = decide(
        &a,
        &OperationView {
            create_options: FILE_WRITE_THROUGH,
            ..view(MajorFunction::Create, Phase::Pre)
        },
    );
    assert!(!d.set_create_write_through);
    let d = decide(
        &a,
        &OperationView {
            create_options: FILE_DIRECTORY_FILE,
            ..view(MajorFunction::Create, Phase::Pre)
        },
    );
    assert!(!d.set_create_write_through);

    let d = decide(&a, &write_pre(4096));
    assert!(d.set_sl_write_through);
    assert_eq!(d.pre_op, PreOp::SuccessNoCallback);
    assert_eq!(d.bytes_governed, 4096);
    for c in [
        Counter::WritesSeen,
        Counter::WritesGoverned,
        Counter::WriteThroughForced,
    ] {
        assert!(d.counts.contains(c), "{c:?}");
    }
    // FO_WRITE_THROUGH already set: flag still added, not counted as forced.
    let d = decide(
        &a,
        &OperationView {
            file_object_write_through: true,
            ..write_pre(1)
        },
    );
    assert!(d.set_sl_write_through && !d.counts.contains(Counter::WriteThroughForced));
    let d = decide(
        &a,
        &OperationView {
            operation_flags: SL_WRITE_THROUGH,
            ..write_pre(1)
        },
    );
    assert!(!d.set_sl_write_through);
    assert!(decide(&a, &write_post()).flush.is_none());
}

#[test]
fn paging_io_is_never_blocked_or_flushed() {
    for mode in [
        Mode::WriteThrough,
        Mode::FlushAfterWrite,
        Mode::FlushOnClose,
    ] {
        let a = Action {
            count_paging_io: true,
            ..Action::with_mode(mode)
        };
        let v = OperationView {
            irp_flags: IRP_PAGING_IO,
            synchronous: false,
            ..write_pre(65536)
        };
        let d = decide(&a, &v);
        assert_eq!(d.pre_op, PreOp::SuccessNoCallback, "{mode:?}");
        assert!(!d.set_sl_write_through && !d.disallow_fast_io && d.flush.is_none());
        assert!(d.counts.contains(Counter::PagingIoPassed));
        assert!(d.counts.contains(Counter::WritesSeen));
        let post = OperationView {
            irp_flags: IRP_PAGING_IO,
            ..write_post()
        };
        assert!(decide(&a, &post).flush.is_none());
    }
    let a = Action::with_mode(Mode::WriteThrough);
    let d = decide(
        &a,
        &OperationView {
            irp_flags: IRP_PAGING_IO,
            ..write_pre(1)
        },
    );
    assert!(
        !d.counts.contains(Counter::WritesSeen),
        "paging I/O not counted unless asked"
    );
}

#[test]
fn flush_after_write_synchronizes_only_synchronous_writes() {
    let a = Action {
        method: FlushMethod::Native,
        flags: FlushFlags::DATA_SYNC_ONLY,
        ..Action::with_mode(Mode::FlushAfterWrite)
    };
    let d = decide(&a, &write_pre(10));
    assert_eq!(d.pre_op, PreOp::Synchronize);
    assert!(d.mark_written_since_flush);
    let d = decide(
        &a,
        &OperationView {
            synchronous: false,
            ..write_pre(10)
        },
    );
    assert_eq!(d.pre_op, PreOp::SuccessWithCallback);
    let d = decide(&a, &write_post());
    assert_eq!(
        d.flush,
        Some(FlushRequest {
            method: FlushMethod::Native,
            flags: FlushFlags::DATA_SYNC_ONLY,
            point: FlushPoint::AfterWrite
        })
    );
    // Failed write, draining, top-level IRP, own flush: no flush.
    assert!(decide(
        &a,
        &OperationView {
            status: Some(NtStatus::ACCESS_DENIED),
            ..write_post()
        }
    )
    .flush
    .is_none());
    let d = decide(
        &a,
        &OperationView {
            draining: true,
            ..write_post()
        },
    );
    assert!(d.flush.is_none() && d.counts.contains(Counter::FlushesSkipped));
    let d = decide(
        &a,
        &OperationView {
            top_level_irp: true,
            ..write_post()
        },
    );
    assert!(d.flush.is_none() && d.counts.contains(Counter::FlushesSkipped));
    assert!(decide(
        &a,
        &OperationView {
            own_flush_in_progress: true,
            ..write_post()
        }
    )
    .flush
    .is_none());
    // The skipped flush happens at cleanup.
    let c = OperationView {
        written_since_flush: true,
        ..view(MajorFunction::Cleanup, Phase::Pre)
    };
    assert_eq!(
        decide(&a, &c).flush.map(|f| f.point),
        Some(FlushPoint::AtCleanup)
    );
}

#[test]
fn own_flushes_pass_through() {
    let a = Action {
        upgrade_app_flush: Some(FlushFlags::empty()),
        ..Action::with_mode(Mode::FlushAfterWrite)
    };
    let v = OperationView {
        own_flush_in_progress: true,
        ..view(MajorFunction::FlushBuffers, Phase::Pre)
    };
    let d = decide(&a, &v);
    assert!(d.upgrade_flush.is_none());
    assert!(d.counts.contains(Counter::OwnFlushesPassed));
    assert!(!d.counts.contains(Counter::AppFlushesSeen));
    let d = decide(
        &a,
        &OperationView {
            own_flush_in_progress: true,
            ..write_pre(1)
        },
    );
    assert_eq!(d.pre_op, PreOp::SuccessNoCallback);
    assert!(d.counts.contains(Counter::OwnFlushesPassed));
}

#[test]
fn fast_io_on_governed_files_is_disallowed() {
    let v = OperationView {
        fast_io: true,
        ..write_pre(1)
    };
    for mode in [
        Mode::WriteThrough,
        Mode::FlushAfterWrite,
        Mode::FlushOnClose,
    ] {
        let d = decide(&Action::with_mode(mode), &v);
        assert_eq!(d.pre_op, PreOp::DisallowFastIo);
        assert!(d.disallow_fast_io && d.counts.contains(Counter::FastIoDisallowed));
    }
    let d = decide(&Action::PASS, &v);
    assert_eq!(d.pre_op, PreOp::SuccessNoCallback);
}

#[test]
fn app_flush_upgrade() {
    let a = Action {
        upgrade_app_flush: Some(FlushFlags::empty()),
        ..Action::PASS
    };
    let v = OperationView {
        minor_function: IRP_MN_FLUSH_NO_SYNC,
        ..view(MajorFunction::FlushBuffers, Phase::Pre)
    };
    let d = decide(&a, &v);
    assert_eq!(d.upgrade_flush, Some(FlushFlags::empty()));
    assert!(
        d.counts.contains(Counter::AppFlushesUpgraded)
            && d.counts.contains(Counter::AppFlushesSeen)
    );
    // Already full: no change.
    let d = decide(&a, &view(MajorFunction::FlushBuffers, Phase::Pre));
    assert!(d.upgrade_flush.is_none() && !d.counts.contains(Counter::AppFlushesUpgraded));
    // Upgrade to NO_SYNC of a FILE_DATA_ONLY flush; a DATA_SYNC_ONLY flush joins to full.
    let a = Action {
        upgrade_app_flush: Some(FlushFlags::NO_SYNC),
        ..Action::PASS
    };
    let v = OperationView {
        minor_function: IRP_MN_FLUSH_DATA_ONLY,
        ..view(MajorFunction::FlushBuffers, Phase::Pre)
    };
    assert_eq!(decide(&a, &v).upgrade_flush, Some(FlushFlags::NO_SYNC));
    let v = OperationView {
        minor_function: 4,
        ..v
    };
    assert_eq!(decide(&a, &v).upgrade_flush, Some(FlushFlags::empty()));
    // An undefined minor function is left alone.
    let v = OperationView {
        minor_function: 9,
        ..v
    };
    assert!(decide(&a, &v).upgrade_flush.is_none());
}

#[test]
fn flush_on_close() {
    let a = Action::with_mode(Mode::FlushOnClose);
    let d = decide(&a, &write_pre(5));
    assert!(
        d.mark_written_since_flush && d.flush.is_none() && d.pre_op == PreOp::SuccessNoCallback
    );
    let c = view(MajorFunction::Cleanup, Phase::Pre);
    assert!(decide(&a, &c).flush.is_none(), "not written: no flush");
    let c = OperationView {
        written_since_flush: true,
        ..c
    };
    assert_eq!(
        decide(&a, &c).flush.map(|f| f.point),
        Some(FlushPoint::AtCleanup)
    );
    let d = decide(
        &a,
        &OperationView {
            top_level_irp: true,
            ..c
        },
    );
    assert!(d.flush.is_none() && d.counts.contains(Counter::FlushesSkipped));
    // A successful application flush clears the mark.
    let f = decide(&a, &view(MajorFunction::FlushBuffers, Phase::Pre));
    assert_eq!(f.pre_op, PreOp::SuccessWithCallback);
    let f = decide(
        &a,
        &OperationView {
            status: Some(NtStatus::SUCCESS),
            ..view(MajorFunction::FlushBuffers, Phase::Post)
        },
    );
    assert!(f.clear_written_since_flush);
}

#[test]
fn audit_changes_nothing_and_counts() {
    let a = Action {
        audited_mode: Some(Mode::WriteThrough),
        ..Action::with_mode(Mode::Audit)
    };
    let d = decide(&a, &view(MajorFunction::Create, Phase::Pre));
    assert!(!d.set_create_write_through && d.audit_only);
    assert!(d.counts.contains(Counter::AuditWouldWriteThrough));
    let d = decide(
        &a,
        &OperationView {
            fast_io: true,
            ..write_pre(1)
        },
    );
    assert_eq!(d.pre_op, PreOp::SuccessNoCallback);
    let a = Action {
        audited_mode: Some(Mode::FlushAfterWrite),
        upgrade_app_flush: Some(FlushFlags::empty()),
        ..Action::with_mode(Mode::Audit)
    };
    // Issue 10 defect 4: "audit never synchronizes, so the deferred flush is skipped
    // as not deferrable". Audit synchronizes exactly the (synchronous) writes the
    // audited mode would, so its post-write decides where the enforcing one would.
    let d = decide(&a, &write_pre(1));
    assert_eq!(
        d.pre_op,
        PreOp::Synchronize,
        "SYNCHRONIZE in audit where the audited mode would"
    );
    assert!(!d.set_sl_write_through && d.flush.is_none());
    let d = decide(
        &a,
        &OperationView {
            synchronous: false,
            ..write_pre(1)
        },
    );
    assert_eq!(
        d.pre_op,
        PreOp::SuccessWithCallback,
        "never for an asynchronous write"
    );
    let d = decide(&a, &write_post());
    assert!(d.flush.is_none() && d.counts.contains(Counter::AuditWouldFlush));
    assert!(
        d.clear_written_since_flush,
        "the would-be flush counts as done for the written-since-flush mark"
    );
    let v = OperationView {
        minor_function: IRP_MN_FLUSH_NO_SYNC,
        ..view(MajorFunction::FlushBuffers, Phase::Pre)
    };
    let d = decide(&a, &v);
    assert!(d.upgrade_flush.is_none() && d.counts.contains(Counter::AuditWouldUpgrade));
}

#[test]
fn other_operations_pass() {
    let d = decide(
        &Action::with_mode(Mode::WriteThrough),
        &view(MajorFunction::from_irp_mj(0x03), Phase::Pre),
    );
    assert_eq!(d, Default::default());
}

// ---- stricter policy never does less --------------------------------------

/// One operation of a simulated file session.
#[derive(Clone, Copy, Debug)]
enum Op {
    Write {
        sync: bool,
        paging: bool,
        fast: bool,
        ok: bool,
        top_level: bool,
    },
    AppFlush {
        minor: u8,
    },
    Cleanup,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.2), prop::bool::weighted(0.9), prop::bool::weighted(0.1))
            .prop_map(|(sync, paging, fast, ok, top_level)| Op::Write { sync, paging, fast, ok, top_level }),
        1 => (0u8..5).prop_map(|minor| Op::AppFlush { minor }),
        1 => Just(Op::Cleanup),
    ]
}

/// (write-throughs, flushes issued, flush strength sum) over a session,
/// simulating the driver's use of the decisions (fast I/O comes back as an IRP,
/// the written-since-flush mark, FlushGuard's flushes clear it).
fn simulate(a: &Action, ops: &[Op]) -> (u32, u32) {
    let (mut wt, mut flushes) = (0u32, 0u32);
    let mut written = false;
    let create = decide(a, &view(MajorFunction::Create, Phase::Pre));
    let fo_wt = create.set_create_write_through;
    for o in ops {
        match *o {
            Op::Write {
                sync,
                paging,
                fast,
                ok,
                top_level,
            } => {
                let mut pre = OperationView {
                    synchronous: sync,
                    fast_io: fast && !paging,
                    irp_flags: if paging { IRP_PAGING_IO } else { 0 },
                    file_object_write_through: fo_wt,
                    top_level_irp: top_level,
                    ..write_pre(512)
                };
                let mut d = decide(a, &pre);
                if d.pre_op == PreOp::DisallowFastIo {
                    pre.fast_io = false;
                    d = decide(a, &pre);
                }
                if !paging && (d.set_sl_write_through || fo_wt) {
                    wt += 1;
                }
                written |= d.mark_written_since_flush;
                if d.pre_op != PreOp::SuccessNoCallback {
                    let post = OperationView {
                        status: Some(if ok {
                            NtStatus::SUCCESS
                        } else {
                            NtStatus::DISK_FULL
                        }),
                        ..OperationView {
                            phase: Phase::Post,
                            ..pre
                        }
                    };
                    if decide(a, &post).flush.is_some() {
                        flushes += 1;
                        written = false;
                    }
                }
            }
            Op::AppFlush { minor } => {
                let pre = OperationView {
                    minor_function: minor,
                    ..view(MajorFunction::FlushBuffers, Phase::Pre)
                };
                let d = decide(a, &pre);
                if d.pre_op != PreOp::SuccessNoCallback {
                    let post = OperationView {
                        status: Some(NtStatus::SUCCESS),
                        phase: Phase::Post,
                        ..pre
                    };
                    if decide(a, &post).clear_written_since_flush {
                        written = false;
                    }
                }
            }
            Op::Cleanup => {
                let v = OperationView {
                    written_since_flush: written,
                    ..view(MajorFunction::Cleanup, Phase::Pre)
                };
                if decide(a, &v).flush.is_some() {
                    flushes += 1;
                    written = false;
                }
            }
        }
    }
    (wt, flushes)
}

/// Modes ordered by strictness: each step never removes a write-through or a flush.
/// Group-commit decides exactly as flush-after-write (a flush after every governed
/// write; the batching is the coordinator's, below the decision).
fn stricter_modes(m: Mode) -> &'static [Mode] {
    match m {
        Mode::Pass | Mode::Audit => &[
            Mode::Pass,
            Mode::Audit,
            Mode::WriteThrough,
            Mode::FlushOnClose,
            Mode::FlushAfterWrite,
            Mode::GroupCommit,
        ],
        Mode::FlushOnClose => &[Mode::FlushOnClose, Mode::FlushAfterWrite, Mode::GroupCommit],
        Mode::FlushAfterWrite | Mode::GroupCommit => &[Mode::FlushAfterWrite, Mode::GroupCommit],
        Mode::WriteThrough => &[Mode::WriteThrough],
    }
}

fn with_mode(a: &Action, m: Mode) -> Action {
    let mut b = Action::with_mode(m);
    if m != Mode::Pass {
        b.method = a.method;
        b.flags = a.flags;
    }
    b.upgrade_app_flush = a.upgrade_app_flush;
    b.count_paging_io = a.count_paging_io;
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn stricter_action_never_does_less(a in common::action(), pick in any::<prop::sample::Index>(), ops in prop::collection::vec(op(), 0..20)) {
        let choices = stricter_modes(a.mode);
        let b = with_mode(&a, choices[pick.index(choices.len())]);
        let (wt_a, fl_a) = simulate(&a, &ops);
        let (wt_b, fl_b) = simulate(&b, &ops);
        prop_assert!(wt_b >= wt_a, "write-throughs {:?}->{:?}: {} < {}", a.mode, b.mode, wt_b, wt_a);
        prop_assert!(fl_b >= fl_a, "flushes {:?}->{:?}: {} < {}", a.mode, b.mode, fl_b, fl_a);
    }

    /// Whole policies: making every rule (and the default) stricter never yields
    /// fewer write-throughs or flushes on the same files and operations.
    #[test]
    fn stricter_policy_never_does_less(
        p in common::policy(8),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 9),
        file in 0usize..common::FILES.len(),
        ops in prop::collection::vec(op(), 0..16),
    ) {
        use flushguard_engine::{CompiledPolicy, FileKey, FileName, FileProvider};
        let mut q = p.clone();
        for (i, r) in q.rules.iter_mut().enumerate() {
            let c = stricter_modes(r.action.mode);
            r.action = with_mode(&r.action, c[picks[i].index(c.len())]);
        }
        let c = stricter_modes(q.default_action.mode);
        q.default_action = with_mode(&q.default_action, c[picks[8].index(c.len())]);
        let (cp, cq) = (CompiledPolicy::new(p, 1).unwrap(), CompiledPolicy::new(q, 2).unwrap());
        let name = FileName::parse(common::FILES[file]).ok();
        let k = FileKey { provider: FileProvider::Smb, name: name.as_ref(), process_image: "sqlservr.exe" };
        let (ra, rb) = (cp.lookup(&k), cq.lookup(&k));
        prop_assert_eq!(ra.index, rb.index);
        let (wa, fa) = simulate(&ra.action, &ops);
        let (wb, fb) = simulate(&rb.action, &ops);
        prop_assert!(wb >= wa && fb >= fa);
    }

    #[test]
    fn decide_is_total(a in common::action(), mj in any::<u8>(), post in any::<bool>(), irp in any::<u32>(), opf in any::<u8>(),
                       minor in any::<u8>(), flags in any::<[bool; 8]>(), len in any::<u32>(), st in proptest::option::of(any::<i32>())) {
        let v = OperationView {
            major: MajorFunction::from_irp_mj(mj),
            phase: if post { Phase::Post } else { Phase::Pre },
            irp_flags: irp, operation_flags: opf, minor_function: minor,
            fast_io: flags[0], synchronous: flags[1], requestor_mode_kernel: flags[2], top_level_irp: flags[3],
            own_flush_in_progress: flags[4], draining: flags[5], file_object_write_through: flags[6],
            written_since_flush: flags[7], length: len, status: st.map(NtStatus), ..write_pre(0)
        };
        let d = decide(&a, &v);
        // Invariants the driver relies on.
        if v.is_paging_io() && v.major == MajorFunction::Write { prop_assert!(d.flush.is_none() && d.pre_op == PreOp::SuccessNoCallback); }
        if v.own_flush_in_progress { prop_assert!(d.flush.is_none() && d.upgrade_flush.is_none()); }
        if d.pre_op == PreOp::Synchronize { prop_assert!(v.synchronous); }
        if a.mode == Mode::Audit { prop_assert!(d.flush.is_none() && !d.set_sl_write_through && !d.set_create_write_through && d.upgrade_flush.is_none()); }
        if let Some(f) = d.flush { prop_assert!(f.flags.validate().is_ok()); if f.method == FlushMethod::Native { prop_assert!(f.flags.to_flush_flags_ex().is_ok()); } }
    }
}
