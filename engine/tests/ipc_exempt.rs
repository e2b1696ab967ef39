//! Named pipe / mailslot shares (`\\server\PIPE`, `\\server\MAILSLOT`,
//! `\\server\IPC$`) are never governed: lookup, explain and policy validation.
#![allow(missing_docs)]

use flushguard_engine::protocol::{Contradiction, DecodeError, NtStatus};
use flushguard_engine::{
    Action, CompiledPolicy, Exemption, FileKey, FileName, FileProvider, FlushMethod, Matcher, Mode,
    Policy, PolicyError, ProviderSelector, Rule,
};

/// Every accepted spelling of a name on an IPC share, in mixed case.
const EXEMPT: [&str; 14] = [
    "\\\\srv\\pipe\\x",
    "\\\\srv\\PIPE",
    "\\\\srv\\PIPE\\",
    "\\\\SRV\\Pipe\\sql\\query",
    "\\Device\\Mup\\srv\\mailslot\\y",
    "\\DEVICE\\MUP\\srv\\MailSlot\\browse",
    "\\Device\\Mup\\;LanmanRedirector\\;Z:000000000001a2b3\\srv\\PIPE\\spoolss",
    "\\\\srv\\ipc$",
    "\\\\srv\\IPC$\\",
    "\\\\?\\UNC\\srv\\pipe\\x",
    "\\??\\UNC\\fs1.corp.example\\PIPE\\lsarpc",
    "//srv/pipe/x",
    "\\\\10.0.0.5\\mailslot\\a\\b",
    // Win32 strips trailing dots and spaces: this opens the pipe share too.
    "\\\\srv\\pipe.\\x",
];

/// Shares whose names only resemble an IPC share: governed like any other.
const GOVERNED: [&str; 7] = [
    "\\\\srv\\pipes\\x",
    "\\\\srv\\pipe2\\x",
    "\\\\srv\\ipc\\x",
    "\\\\srv\\mailslots\\y",
    "\\\\srv\\data\\pipe\\x",
    "\\Device\\Mup\\srv\\share\\MAILSLOT",
    "\\\\pipe\\data\\x",
];

fn rule(name: &str, matcher: Matcher, mode: Mode) -> Rule {
    Rule {
        name: name.into(),
        matcher,
        action: Action::with_mode(mode),
    }
}

/// Policies that would govern every SMB file: a provider-only rule, an
/// extension-less catch-all, and a flushing default with no rule at all.
fn greedy_policies() -> Vec<(&'static str, CompiledPolicy)> {
    let provider_only = Policy {
        rules: vec![rule(
            "smb-all",
            Matcher {
                provider: ProviderSelector::Smb,
                ..Default::default()
            },
            Mode::WriteThrough,
        )],
        ..Policy::pass_through()
    };
    let catch_all = Policy {
        rules: vec![rule("all", Matcher::default(), Mode::FlushAfterWrite)],
        ..Policy::pass_through()
    };
    let flushing_default = Policy {
        rules: Vec::new(),
        default_action: Action {
            method: FlushMethod::Native,
            ..Action::with_mode(Mode::FlushOnClose)
        },
        attach_local_volumes: true,
    };
    vec![
        (
            "provider-only rule",
            CompiledPolicy::new(provider_only, 3).unwrap(),
        ),
        ("catch-all rule", CompiledPolicy::new(catch_all, 4).unwrap()),
        (
            "flushing default",
            CompiledPolicy::new(flushing_default, 5).unwrap(),
        ),
    ]
}

fn key<'a>(n: &'a FileName, provider: FileProvider) -> FileKey<'a> {
    FileKey {
        provider,
        name: Some(n),
        process_image: "C:\\Windows\\System32\\svchost.exe",
    }
}

#[test]
fn ipc_shares_are_never_governed_in_any_spelling() {
    for (what, c) in greedy_policies() {
        for path in EXEMPT {
            let n = FileName::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            for provider in [FileProvider::Smb, FileProvider::Other] {
                let k = key(&n, provider);
                let r = c.lookup(&k);
                assert_eq!(r.exempt, Some(Exemption::IpcShare), "{what}: {path}");
                assert_eq!(r.index, None, "{what}: {path}");
                assert_eq!(r.action, Action::PASS, "{what}: {path}");
                assert_eq!(c.lookup_linear(&k), r, "{what}: {path}");
                let cached = c.lookup_cached(&k);
                assert_eq!(cached.rule, r);
                let e = c.explain_key(&k);
                assert_eq!(e.exempt, Some(Exemption::IpcShare), "{what}: {path}");
                assert_eq!((e.matched, e.action), (None, Action::PASS));
                assert!(e.rejected.is_empty(), "{what}: {path}: {:?}", e.rejected);
            }
            let (e, err) = c.explain(path, "", FileProvider::Smb);
            assert_eq!(err, None, "{path}");
            assert_eq!(e.exempt, Some(Exemption::IpcShare), "{what}: {path}");
        }
    }
}

#[test]
fn lookalike_shares_are_still_governed() {
    for (what, c) in greedy_policies() {
        for path in GOVERNED {
            let n = FileName::parse(path).unwrap();
            let k = key(&n, FileProvider::Smb);
            let r = c.lookup(&k);
            assert_eq!(r.exempt, None, "{what}: {path}");
            assert_ne!(r.action.mode, Mode::Pass, "{what}: {path}");
            assert_eq!(c.lookup_linear(&k), r);
            let e = c.explain_key(&k);
            assert_eq!((e.exempt, e.matched), (None, r.index), "{what}: {path}");
        }
    }
}

#[test]
fn exemption_of_share_is_exact_and_case_insensitive_after_folding() {
    for (share, exempt) in [
        ("\\\\srv\\pipe", true),
        ("\\\\srv\\mailslot", true),
        ("\\\\srv\\ipc$", true),
        ("\\\\srv\\pipes", false),
        ("\\\\srv\\pipe2", false),
        ("\\\\srv\\ipc", false),
        ("\\\\pipe\\data", false),
    ] {
        assert_eq!(Exemption::of_share(share).is_some(), exempt, "{share}");
    }
    // Every spelling normalizes to a folded share that of_share recognises.
    for s in [
        "\\\\SRV\\PIPE",
        "\\Device\\Mup\\srv\\MailSlot\\",
        "\\\\?\\UNC\\srv\\IPC$",
    ] {
        let n = FileName::parse(s).unwrap();
        assert!(
            n.share().and_then(Exemption::of_share).is_some(),
            "{s} -> {:?}",
            n.share()
        );
    }
}

#[test]
fn unparseable_names_on_ipc_shares_are_exempt_too() {
    // A pipe name may hold components no file name does; the share still decides.
    for path in [
        "\\\\srv\\pipe\\a\\..\\b",
        "\\Device\\Mup\\;LanmanRedirector\\srv\\PIPE\\.\\x",
        "\\\\srv\\MAILSLOT\\ctl\u{1}name",
    ] {
        assert!(FileName::parse(path).is_err(), "{path}");
        assert_eq!(
            Exemption::of_unparsed(path),
            Ok(Some(Exemption::IpcShare)),
            "{path}"
        );
        for (what, c) in greedy_policies() {
            let (e, err) = c.explain(path, "", FileProvider::Smb);
            assert!(err.is_some(), "{what}: {path}");
            assert_eq!(e.exempt, Some(Exemption::IpcShare), "{what}: {path}");
            assert_eq!(e.action, Action::PASS);
        }
    }
    for path in [
        "\\\\srv\\data\\..\\x",
        "\\\\srv\\pipes\\..\\x",
        "C:\\pipe\\..\\x",
        "\\\\srv",
    ] {
        assert_eq!(Exemption::of_unparsed(path), Ok(None), "{path}");
    }
}

#[test]
fn a_rule_naming_an_ipc_share_is_rejected_as_contradictory() {
    for share in [
        "\\\\srv\\PIPE",
        "\\\\srv\\pipe\\",
        "\\Device\\Mup\\srv\\mailslot",
        "\\\\?\\UNC\\srv\\IPC$",
        "//srv/Ipc$",
    ] {
        let p = Policy {
            rules: vec![
                rule("ok", Matcher::default(), Mode::Pass),
                rule(
                    "ipc",
                    Matcher {
                        share: Some(share.into()),
                        ..Default::default()
                    },
                    Mode::WriteThrough,
                ),
            ],
            ..Policy::pass_through()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.ntstatus(), NtStatus::INVALID_PARAMETER_MIX, "{share}");
        assert!(
            matches!(
                &e,
                PolicyError::Invalid {
                    rule: Some(1),
                    field: "share",
                    error: DecodeError::Contradictory(Contradiction::IpcShare),
                    ..
                }
            ),
            "{share}: {e:?}"
        );
        assert!(CompiledPolicy::new(p, 1).is_err());
    }
    // A share that merely resembles one is fine.
    let p = Policy {
        rules: vec![rule(
            "pipes",
            Matcher {
                share: Some("\\\\srv\\pipes".into()),
                ..Default::default()
            },
            Mode::WriteThrough,
        )],
        ..Policy::pass_through()
    };
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn a_policy_blob_naming_an_ipc_share_is_rejected() {
    // Encode a valid rule for `\\srv\pipx`, then patch the UTF-16 `x` to `e`: the
    // driver's SetPolicy / registry path decodes and must refuse it.
    let p = Policy {
        rules: vec![rule(
            "r",
            Matcher {
                share: Some("\\\\srv\\pipx".into()),
                ..Default::default()
            },
            Mode::WriteThrough,
        )],
        ..Policy::pass_through()
    };
    let mut blob = p.encode().unwrap();
    let needle: Vec<u8> = "pipx".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let at = blob
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    blob[at + 6] = b'e';
    let e = Policy::decode(&blob).unwrap_err();
    assert_eq!(e.ntstatus(), NtStatus::INVALID_PARAMETER_MIX, "{e:?}");
    assert!(matches!(
        CompiledPolicy::from_blob(&blob, 2),
        Err(PolicyError::Invalid {
            error: DecodeError::Contradictory(Contradiction::IpcShare),
            ..
        })
    ));
}

#[test]
fn policy_file_rejection_points_at_the_share() {
    let src = "[default]\nmode = \"flush-after-write\"\n\n[[rule]]\nname = \"pipes\"\nprovider = \"smb\"\nshare = '\\\\fs1\\PIPE'\nmode = \"write-through\"\n";
    match Policy::from_toml_str(src) {
        Err(PolicyError::Syntax {
            line,
            column,
            field,
            message,
        }) => {
            assert_eq!((line, column, field.as_str()), (7, 9, "rule[0].share"));
            assert!(message.contains("named pipe / mailslot share"), "{message}");
            assert!(!message.contains("expected"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
