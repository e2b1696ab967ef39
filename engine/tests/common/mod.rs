//! Shared test helpers: proptest strategies for valid policies.
#![allow(dead_code, missing_docs)]

use flushguard_engine::protocol::FlushFlags;
use flushguard_engine::{Action, FlushMethod, Matcher, Mode, Policy, ProviderSelector, Rule};
use proptest::prelude::*;

pub const SHARES: [&str; 4] = [
    "\\\\fs1\\data",
    "\\Device\\Mup\\FS1\\sql",
    "\\\\?\\UNC\\fs2\\data",
    "\\\\fs3\\logs",
];
pub const GLOBS: [&str; 5] = ["**/*.db", "logs/*", "a/**/b/*.mdf", "*", "tmp/**"];
pub const PROCS: [&str; 3] = ["sqlservr.exe", "*.exe", "notepad.exe"];
pub const EXTS: [&str; 4] = ["db", ".mdf", "LOG", "txt"];

pub fn provider() -> impl Strategy<Value = ProviderSelector> {
    prop_oneof![
        4 => Just(ProviderSelector::Any),
        2 => Just(ProviderSelector::Smb),
        1 => Just(ProviderSelector::WebDav),
        1 => Just(ProviderSelector::Nfs),
        1 => Just(ProviderSelector::Rdpdr),
    ]
}

pub fn flush_flags() -> impl Strategy<Value = FlushFlags> {
    (0usize..5).prop_map(|i| FlushFlags::VALID[i])
}

pub fn action() -> impl Strategy<Value = Action> {
    (
        0u16..6,
        2u16..6,
        any::<bool>(),
        flush_flags(),
        proptest::option::of(flush_flags()),
        any::<bool>(),
        (1u32..=4096, 0u32..=50_000),
    )
        .prop_map(
            |(mode, audited, native, flags, upgrade, paging, (batch, wait))| {
                let mode = Mode::from_code(mode).unwrap();
                let mut a = Action::with_mode(mode);
                if mode == Mode::Audit {
                    a.audited_mode = Some(Mode::from_code(audited).unwrap());
                }
                if a.effective_mode() == Mode::GroupCommit {
                    a.group = Some(flushguard_engine::policy::GroupOptions {
                        max_batch: batch,
                        max_batch_wait_us: wait,
                    });
                }
                if mode != Mode::Pass {
                    a.method = if native && flags != FlushFlags::FLUSH_AND_PURGE {
                        FlushMethod::Native
                    } else {
                        FlushMethod::Filter
                    };
                    a.flags = flags;
                }
                a.upgrade_app_flush = upgrade;
                a.count_paging_io = paging;
                a
            },
        )
}

pub fn matcher() -> impl Strategy<Value = Matcher> {
    (
        provider(),
        proptest::option::of(0usize..SHARES.len()),
        proptest::option::of(0usize..GLOBS.len()),
        proptest::option::weighted(0.2, 0usize..PROCS.len()),
        proptest::collection::vec(0usize..EXTS.len(), 0..3),
    )
        .prop_map(|(provider, share, glob, process, exts)| Matcher {
            provider,
            share: share.map(|i| SHARES[i].to_string()),
            path: glob.map(|i| GLOBS[i].to_string()),
            process: process.map(|i| PROCS[i].to_string()),
            extensions: exts.into_iter().map(|i| EXTS[i].to_string()).collect(),
        })
}

pub fn policy(max_rules: usize) -> impl Strategy<Value = Policy> {
    (
        proptest::collection::vec((matcher(), action()), 0..max_rules),
        action(),
        any::<bool>(),
    )
        .prop_map(|(rules, default_action, local)| Policy {
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, (matcher, action))| Rule {
                    name: format!("rule-{i}"),
                    matcher,
                    action,
                })
                .collect(),
            default_action,
            attach_local_volumes: local,
        })
}

pub const FILES: [&str; 10] = [
    "\\Device\\Mup\\fs1\\data\\x\\a.db",
    "\\\\fs1\\data\\logs\\b.txt",
    "\\\\FS1\\SQL\\a\\q\\b\\x.MDF",
    "\\\\fs2\\data\\tmp\\deep\\f.log",
    "\\\\fs3\\logs\\app\\today.log",
    "\\\\fs3\\logs\\report.db:Zone.Identifier",
    "C:\\local\\file.db",
    "\\\\fs9\\other\\z.txt",
    "\\\\fs1\\data\\a.db. ",
    "\\\\fs1\\data\\..\\escape.db",
];

pub fn file_provider() -> impl Strategy<Value = flushguard_engine::FileProvider> {
    use flushguard_engine::FileProvider::*;
    prop_oneof![
        Just(Smb),
        Just(WebDav),
        Just(Nfs),
        Just(Rdpdr),
        Just(Other),
        Just(Local)
    ]
}
