//! Policies and operation scripts shared by the callback tests.

use flushguard_engine::callbacks::Irql;
use flushguard_engine::policy::{
    Action, FlushMethod, GroupOptions, Matcher, Mode, Policy, ProviderSelector, Rule,
};
use flushguard_protocol::{FlushFlags, NtStatus};
use proptest::prelude::*;

use crate::fake::{FakeOptions, PROVIDER_NFS, PROVIDER_SMB};
use crate::harness::{Harness, WriteKind, WriteSpec};

/// The governed share in every scenario.
pub const SHARE_FILE: &str = "\\Device\\Mup\\srv\\share\\data\\a.db";
/// A file on another share (default action).
pub const OTHER_FILE: &str = "\\Device\\Mup\\other\\pub\\b.txt";
/// The requestor image.
pub const PROCESS: &str = "\\Device\\HarddiskVolume2\\Apps\\app.exe";

/// Every enforcing or observing mode.
pub const MODES: [Mode; 6] = [
    Mode::Pass,
    Mode::Audit,
    Mode::WriteThrough,
    Mode::FlushAfterWrite,
    Mode::FlushOnClose,
    Mode::GroupCommit,
];

/// Opens [`SHARE_FILE`] on SMB as [`PROCESS`] (a plain create that succeeds) and
/// returns the file object.
pub fn open_share(h: &Harness) -> u64 {
    h.open(
        SHARE_FILE,
        Some(PROVIDER_SMB),
        PROCESS,
        0,
        NtStatus::SUCCESS,
    )
    .expect("create succeeds")
}

/// An action for `mode`.
pub fn action(
    mode: Mode,
    method: FlushMethod,
    flags: FlushFlags,
    upgrade: Option<FlushFlags>,
) -> Action {
    if mode == Mode::Pass {
        // A pass rule carries no settings (the policy validator rejects them).
        return Action::PASS;
    }
    Action {
        mode,
        audited_mode: match mode {
            Mode::Audit => Some(Mode::FlushAfterWrite),
            _ => None,
        },
        method,
        flags,
        upgrade_app_flush: upgrade,
        count_paging_io: true,
        group: (mode == Mode::GroupCommit).then_some(GroupOptions::DEFAULT),
    }
}

/// A policy with one rule for `\\srv\share` on SMB and a pass default, encoded
/// for `Parameters\Policy`.
pub fn policy_blob(action: Action) -> Vec<u8> {
    policy_blob_for(ProviderSelector::Smb, action)
}

/// As [`policy_blob`] with the rule's provider criterion `provider`.
pub fn policy_blob_for(provider: ProviderSelector, action: Action) -> Vec<u8> {
    let policy = Policy {
        rules: vec![Rule {
            name: "share".to_string(),
            matcher: Matcher {
                provider,
                share: Some("\\\\srv\\share".to_string()),
                ..Matcher::default()
            },
            action,
        }],
        default_action: Action::PASS,
        attach_local_volumes: false,
    };
    policy.encode().expect("valid test policy")
}

/// A harness whose registry holds `policy_blob(action)`.
pub fn harness(action: Action, has_flush2: bool) -> Harness {
    Harness::new(FakeOptions {
        has_flush2,
        registry: Some(policy_blob(action)),
    })
}

/// One step of a generated operation sequence.
#[derive(Clone, Debug)]
pub enum Step {
    /// Open a file (index into the open-file table) on SMB or NFS.
    Open {
        /// On the governed share.
        governed: bool,
        /// Create options.
        options: u32,
        /// The create fails.
        fails: bool,
    },
    /// Write through open file `file % open`.
    Write {
        /// Which open file.
        file: usize,
        /// Kind.
        kind: WriteKind,
        /// Synchronous.
        synchronous: bool,
        /// Post-operation IRQL (0..=2).
        post_irql: u8,
        /// Top-level IRP set.
        top_level: bool,
        /// The write fails.
        fails: bool,
        /// Leave in flight.
        later: bool,
    },
    /// Application flush with `IRP_MN_FLUSH_*` minor 0..=4.
    Flush {
        /// Which open file.
        file: usize,
        /// Minor function.
        minor: u8,
    },
    /// Close an open file.
    Close {
        /// Which open file.
        file: usize,
    },
    /// Complete one in-flight item.
    Complete {
        /// IRQL of a completed post-operation.
        irql: u8,
    },
}

/// Strategy for one [`Step`].
pub fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        Just(WriteKind::Cached),
        Just(WriteKind::NonCached),
        Just(WriteKind::Paging),
        Just(WriteKind::WriteBack),
        Just(WriteKind::FastIo)
    ];
    prop_oneof![
        (
            any::<bool>(),
            prop_oneof![Just(0u32), Just(2u32), Just(0x20u32)],
            prop::bool::weighted(0.1)
        )
            .prop_map(|(governed, options, fails)| Step::Open {
                governed,
                options,
                fails
            }),
        (
            0usize..8,
            kind,
            any::<bool>(),
            0u8..=2,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.2)
        )
            .prop_map(
                |(file, kind, synchronous, post_irql, top_level, fails, later)| Step::Write {
                    file,
                    kind,
                    synchronous,
                    post_irql,
                    top_level,
                    fails,
                    later
                }
            ),
        (0usize..8, 0u8..=4).prop_map(|(file, minor)| Step::Flush { file, minor }),
        (0usize..8).prop_map(|file| Step::Close { file }),
        (0u8..=2).prop_map(|irql| Step::Complete { irql }),
    ]
}

/// Strategy for an action of any mode, method and flush type.
pub fn any_action() -> impl Strategy<Value = Action> {
    let flags = prop_oneof![
        Just(FlushFlags::empty()),
        Just(FlushFlags::NO_SYNC),
        Just(FlushFlags::DATA_SYNC_ONLY),
        Just(FlushFlags::FILE_DATA_ONLY)
    ];
    let upgrade = prop_oneof![
        Just(None),
        Just(Some(FlushFlags::empty())),
        Just(Some(FlushFlags::DATA_SYNC_ONLY))
    ];
    (
        prop::sample::select(MODES.to_vec()),
        any::<bool>(),
        flags,
        upgrade,
    )
        .prop_map(|(mode, native, flags, upgrade)| {
            action(
                mode,
                if native {
                    FlushMethod::Native
                } else {
                    FlushMethod::Filter
                },
                flags,
                upgrade,
            )
        })
}

/// Issues [`Step`]s against a harness, keeping the table of open files.
#[derive(Debug, Default)]
pub struct Runner {
    open: Vec<u64>,
}

impl Runner {
    /// No open files.
    pub fn new() -> Self {
        Runner::default()
    }

    /// Issues one step.
    pub fn step(&mut self, h: &Harness, s: &Step) {
        match *s {
            Step::Open {
                governed,
                options,
                fails,
            } => {
                let (name, provider) = if governed {
                    (SHARE_FILE, PROVIDER_SMB)
                } else {
                    (OTHER_FILE, PROVIDER_NFS)
                };
                let status = if fails {
                    NtStatus::ACCESS_DENIED
                } else {
                    NtStatus::SUCCESS
                };
                if let Some(f) = h.open(name, Some(provider), PROCESS, options, status) {
                    self.open.push(f);
                }
            }
            Step::Write {
                file,
                kind,
                synchronous,
                post_irql,
                top_level,
                fails,
                later,
            } => {
                if self.open.is_empty() {
                    return;
                }
                let f = self.open[file % self.open.len()];
                h.write(
                    f,
                    WriteSpec {
                        kind,
                        synchronous,
                        post_irql: Irql(post_irql),
                        top_level,
                        status: if fails {
                            NtStatus::DISK_FULL
                        } else {
                            NtStatus::SUCCESS
                        },
                        complete_later: later,
                    },
                );
            }
            Step::Flush { file, minor } => {
                if self.open.is_empty() {
                    return;
                }
                h.flush(self.open[file % self.open.len()], minor, NtStatus::SUCCESS);
            }
            Step::Close { file } => {
                if self.open.is_empty() {
                    return;
                }
                let f = self.open.remove(file % self.open.len());
                // In-flight operations of this handle complete before its cleanup.
                h.complete_all();
                h.close(f);
            }
            Step::Complete { irql } => {
                h.complete_one(Irql(irql));
            }
        }
    }

    /// Completes everything in flight and closes every open file.
    pub fn finish(self, h: &Harness) {
        h.complete_all();
        for f in self.open {
            h.close(f);
        }
    }
}

/// Runs `steps` on `h`, then completes and closes everything; returns the number of
/// steps issued.
pub fn run(h: &Harness, steps: &[Step]) -> usize {
    let mut r = Runner::new();
    for s in steps {
        r.step(h, s);
    }
    r.finish(h);
    steps.len()
}

/// A fixed script exercising every callback: open (write-through options), cached,
/// non-cached, async (post at DISPATCH_LEVEL), fast I/O, paging and top-level
/// writes, a failed write, application flushes of every type, close.
pub fn full_script() -> Vec<Step> {
    let w = |kind, synchronous, post_irql, top_level, fails, later| Step::Write {
        file: 0,
        kind,
        synchronous,
        post_irql,
        top_level,
        fails,
        later,
    };
    vec![
        Step::Open {
            governed: true,
            options: 0,
            fails: false,
        },
        Step::Open {
            governed: false,
            options: 0,
            fails: false,
        },
        w(WriteKind::Cached, true, 0, false, false, false),
        w(WriteKind::Cached, false, 2, false, false, false),
        Step::Complete { irql: 0 },
        w(WriteKind::NonCached, false, 1, false, false, true),
        Step::Complete { irql: 2 },
        Step::Complete { irql: 0 },
        w(WriteKind::FastIo, true, 0, false, false, false),
        w(WriteKind::Paging, false, 2, true, false, false),
        w(WriteKind::Cached, true, 0, true, false, false),
        w(WriteKind::Cached, true, 0, false, true, false),
        Step::Flush { file: 0, minor: 3 },
        Step::Flush { file: 0, minor: 2 },
        Step::Flush { file: 0, minor: 0 },
        w(WriteKind::Cached, true, 0, false, false, false),
        Step::Write {
            file: 1,
            kind: WriteKind::Cached,
            synchronous: true,
            post_irql: 0,
            top_level: false,
            fails: false,
            later: false,
        },
        // A handle opened for synchronous I/O (FO_SYNCHRONOUS_IO): file index 2.
        Step::Open {
            governed: true,
            options: 0x20,
            fails: false,
        },
        Step::Write {
            file: 2,
            kind: WriteKind::Cached,
            synchronous: true,
            post_irql: 0,
            top_level: false,
            fails: false,
            later: false,
        },
        Step::Write {
            file: 2,
            kind: WriteKind::NonCached,
            synchronous: false,
            post_irql: 2,
            top_level: false,
            fails: false,
            later: true,
        },
        Step::Flush { file: 2, minor: 3 },
        Step::Close { file: 0 },
        Step::Close { file: 0 },
        Step::Close { file: 0 },
    ]
}
