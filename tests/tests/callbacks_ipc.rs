//! Remote named pipes and mailslots (`\Device\Mup\server\PIPE\...`,
//! `\Device\Mup\server\MAILSLOT\...`, `\Device\Mup\server\IPC$`) on the fake Filter
//! Manager: under policies that would govern every SMB file, a create, writes, an
//! application flush and the close pass through untouched (no `FILE_WRITE_THROUGH`,
//! no `SL_WRITE_THROUGH`, no flush issued, no flush upgraded, no context), and stay
//! so across a policy change. A look-alike share (`pipes`) is governed.

use flushguard_engine::callbacks::{Counter, FILE_WRITE_THROUGH, SL_WRITE_THROUGH};
use flushguard_engine::policy::{
    Action, FlushMethod, Matcher, Mode, Policy, ProviderSelector, Rule,
};
use flushguard_protocol::nt::IRP_MN_FLUSH_NO_SYNC;
use flushguard_protocol::stats::Counter as StatsCounter;
use flushguard_protocol::{FlushFlags, NtStatus};
use flushguard_tests::fake::{FakeOptions, PROVIDER_SMB};
use flushguard_tests::harness::{Harness, WriteSpec};
use flushguard_tests::port_request_set_policy;
use flushguard_tests::scenario::{action, PROCESS};

const IPC_NAMES: [&str; 4] = [
    "\\Device\\Mup\\srv\\PIPE\\sql\\query",
    "\\Device\\Mup\\;LanmanRedirector\\srv\\pipe\\spoolss",
    "\\Device\\Mup\\srv\\MAILSLOT\\browse",
    "\\Device\\Mup\\srv\\IPC$",
];

/// A full flush after every write, application flushes upgraded to full flushes.
fn flushing(method: FlushMethod) -> Action {
    action(
        Mode::FlushAfterWrite,
        method,
        FlushFlags::empty(),
        Some(FlushFlags::empty()),
    )
}

fn encode(rules: Vec<Rule>, default_action: Action) -> Vec<u8> {
    Policy {
        rules,
        default_action,
        attach_local_volumes: false,
    }
    .encode()
    .expect("valid test policy")
}

fn smb_rule(act: Action) -> Rule {
    Rule {
        name: "smb-all".into(),
        matcher: Matcher {
            provider: ProviderSelector::Smb,
            ..Matcher::default()
        },
        action: act,
    }
}

/// Policies that govern every SMB file: a flushing default with no rule, a
/// provider-only flushing rule, and a write-through catch-all before a flushing
/// default.
fn greedy_blobs() -> Vec<(&'static str, Vec<u8>)> {
    let write_through = action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    );
    vec![
        (
            "flushing default",
            encode(Vec::new(), flushing(FlushMethod::Filter)),
        ),
        (
            "provider-only rule",
            encode(vec![smb_rule(flushing(FlushMethod::Native))], Action::PASS),
        ),
        (
            "catch-all write-through",
            encode(
                vec![Rule {
                    name: "all".into(),
                    matcher: Matcher::default(),
                    action: write_through,
                }],
                flushing(FlushMethod::Filter),
            ),
        ),
    ]
}

/// Opens `name`, writes twice, flushes (`IRP_MN_FLUSH_NO_SYNC`); returns the file,
/// whether `FILE_WRITE_THROUGH` / `SL_WRITE_THROUGH` reached the file system and
/// the flush minor function it saw.
fn open_write_flush(h: &Harness, name: &str) -> (u64, bool, bool, u8) {
    let (file, seen) = h.open_seen(name, Some(PROVIDER_SMB), PROCESS, 0);
    let file = file.expect("opened");
    let mut sl = false;
    for _ in 0..2 {
        let flags = h.write(file, WriteSpec::default()).expect("write reached");
        sl |= flags & SL_WRITE_THROUGH != 0;
    }
    let minor = h
        .flush(file, IRP_MN_FLUSH_NO_SYNC, NtStatus::SUCCESS)
        .expect("flush reached");
    (file, seen & FILE_WRITE_THROUGH != 0, sl, minor)
}

#[test]
fn pipes_and_mailslots_pass_through_under_policies_that_govern_everything() {
    for (what, blob) in greedy_blobs() {
        let h = Harness::new(FakeOptions {
            has_flush2: true,
            registry: Some(blob),
        });
        for (i, name) in IPC_NAMES.iter().enumerate() {
            let (file, create_wt, sl_wt, minor) = open_write_flush(&h, name);
            assert!(!create_wt, "{what}: {name}: FILE_WRITE_THROUGH added");
            assert!(!sl_wt, "{what}: {name}: SL_WRITE_THROUGH set");
            assert_eq!(minor, IRP_MN_FLUSH_NO_SYNC, "{what}: {name}: upgraded");
            assert!(h.fake.file_context(file).is_none(), "{what}: {name}");
            h.close(file);
            assert!(
                h.fake.flushes().is_empty(),
                "{what}: {name}: flushed {:?}",
                h.fake.flushes()
            );
            assert_eq!(
                h.filter.counters().get(Counter::IpcShareExempt),
                i as u64 + 1,
                "{what}: one exemption per create"
            );
        }
        let stats = h.filter.state().stats().global();
        assert_eq!(stats.get(StatsCounter::WritesSeen), 0, "{what}");
        assert_eq!(h.filter.counters().get(Counter::ContextAttached), 0);
        h.unload();
        h.assert_clean();
    }
}

#[test]
fn a_pipe_handle_stays_exempt_across_a_policy_change() {
    let blobs = greedy_blobs();
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(blobs[0].1.clone()),
    });
    let (pipe, ..) = open_write_flush(&h, IPC_NAMES[0]);
    for (what, blob) in &blobs[1..] {
        let mut out = vec![0u8; 4096];
        h.message(&port_request_set_policy(blob, false), &mut out)
            .expect("port open")
            .expect("SetPolicy accepted");
        let flags = h.write(pipe, WriteSpec::default()).expect("write");
        assert_eq!(flags & SL_WRITE_THROUGH, 0, "{what}");
        let minor = h
            .flush(pipe, IRP_MN_FLUSH_NO_SYNC, NtStatus::SUCCESS)
            .expect("flush");
        assert_eq!(minor, IRP_MN_FLUSH_NO_SYNC, "{what}");
        assert!(h.fake.flushes().is_empty(), "{what}");
    }
    h.close(pipe);
    assert!(h.fake.flushes().is_empty());
    assert_eq!(h.filter.counters().get(Counter::RuleRefreshed), 0);
    assert_eq!(h.filter.counters().get(Counter::IpcShareExempt), 1);
    h.unload();
    h.assert_clean();
}

#[test]
fn a_look_alike_share_is_governed() {
    // The control: the same script on `\\srv\pipes` is flushed, so the checks above
    // would see a governed file.
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(greedy_blobs()[0].1.clone()),
    });
    let (file, _, _, minor) = open_write_flush(&h, "\\Device\\Mup\\srv\\pipes\\x");
    assert!(h.fake.file_context(file).is_some());
    assert_ne!(minor, IRP_MN_FLUSH_NO_SYNC, "application flush upgraded");
    assert_eq!(h.fake.flushes().len(), 2, "one flush after each write");
    h.close(file);
    assert_eq!(h.filter.counters().get(Counter::IpcShareExempt), 0);
    h.unload();
    h.assert_clean();
}
