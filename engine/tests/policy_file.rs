//! Policy files, validation and the blob encoding.
#![allow(missing_docs)]

mod common;

use flushguard_engine::protocol::{Contradiction, DecodeError, FlushFlags, NameProblem, NtStatus};
use flushguard_engine::{Action, FlushMethod, Mode, Policy, PolicyError, ProviderSelector};
use proptest::prelude::*;

fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_parses_encodes_and_round_trips() {
    let ex = examples();
    assert!(ex.len() >= 4, "examples/ has {} policies", ex.len());
    for (path, src) in ex {
        let p = Policy::from_toml_str(&src).unwrap_or_else(|e| panic!("{path}: {e}"));
        let blob = p.encode().unwrap();
        assert_eq!(Policy::decode(&blob).unwrap(), p, "{path}");
        let again = Policy::from_toml_str(&p.to_toml_string()).unwrap();
        assert_eq!(again, p, "{path}: to_toml_string round trip");
    }
}

#[test]
fn sql_example_content() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sql-server.toml"
    ))
    .unwrap();
    let p = Policy::from_toml_str(&src).unwrap();
    assert_eq!(p.rules.len(), 3);
    assert_eq!(p.rules[0].name, "sql-data");
    assert_eq!(p.rules[0].matcher.provider, ProviderSelector::Smb);
    assert_eq!(p.rules[0].matcher.share.as_deref(), Some("\\\\fs1\\sql"));
    assert_eq!(p.rules[0].action.mode, Mode::WriteThrough);
    assert_eq!(
        p.rules[2].action.upgrade_app_flush,
        Some(FlushFlags::empty())
    );
    assert_eq!(p.default_action, Action::PASS);
}

fn syntax_err(src: &str) -> (usize, usize, String, String) {
    match Policy::from_toml_str(src) {
        Err(PolicyError::Syntax {
            line,
            column,
            field,
            message,
        }) => (line, column, field, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let (line, col, _, msg) = syntax_err("[default]\nmode = \"pass\"\n[[rule]\nname = \"x\"\n");
    assert_eq!(line, 3, "{msg}");
    assert!(col >= 1);
}

#[test]
fn unknown_mode_lists_expected_values() {
    let src = "[[rule]]\nname = \"a\"\nmode = \"write-thru\"\n";
    let (line, col, field, msg) = syntax_err(src);
    assert_eq!((line, col), (3, 8), "{msg}");
    assert_eq!(field, "rule[0].mode");
    assert!(
        msg.contains("write-through") && msg.contains("flush-on-close"),
        "{msg}"
    );
}

#[test]
fn unknown_field_is_named() {
    let src = "[[rule]]\nname = \"a\"\nmode = \"pass\"\n\n[[rule]]\nname = \"b\"\nmode = \"pass\"\nshares = 'x'\n";
    let (line, _, field, msg) = syntax_err(src);
    assert_eq!(line, 8, "{msg}");
    assert_eq!(field, "rule[1].shares");
    assert!(msg.contains("shares"), "{msg}");
}

#[test]
fn wrong_type_is_reported() {
    let (line, _, field, msg) =
        syntax_err("[[rule]]\nname = \"a\"\nmode = \"pass\"\ncount-paging-io = \"yes\"\n");
    assert_eq!(line, 4);
    assert_eq!(field, "rule[0].count-paging-io");
    assert!(msg.contains("bool"), "{msg}");
}

#[test]
fn semantic_errors_point_at_the_field() {
    let src = "[[rule]]\nname = \"a\"\nshare = 'C:\\data'\nmode = \"write-through\"\n";
    let (line, col, field, msg) = syntax_err(src);
    assert_eq!(
        (line, col, field.as_str()),
        (3, 9, "rule[0].share"),
        "{msg}"
    );
    assert!(msg.contains("expected \\\\server\\share"), "{msg}");

    let src = "[[rule]]\nname = \"a\"\nmode = \"pass\"\n[[rule]]\nname = \"b\"\npath = '../x'\nmode = \"pass\"\n";
    let (line, _, field, _) = syntax_err(src);
    assert_eq!((line, field.as_str()), (6, "rule[1].path"));

    let src = "[[rule]]\nname = \"a\"\nmode = \"flush-after-write\"\nmethod = \"native\"\nflush = \"flush-and-purge\"\n";
    let (line, _, field, msg) = syntax_err(src);
    assert_eq!((line, field.as_str()), (1, "rule[0].action"), "{msg}");
    assert!(
        msg.contains("flush-and-purge with the native method"),
        "{msg}"
    );

    let src = "[[rule]]\nname = \"a\"\nmode = \"pass\"\n[[rule]]\nname = \"a\"\nmode = \"pass\"\n";
    let (line, _, field, msg) = syntax_err(src);
    assert_eq!((line, field.as_str()), (5, "rule[1].name"), "{msg}");

    let src = "[default]\nmode = \"audit\"\naudit-mode = \"pass\"\n";
    let (_, _, field, msg) = syntax_err(src);
    assert_eq!(field, "default", "{msg}");
}

#[test]
fn validation_errors_are_specific() {
    let mut p = Policy::pass_through();
    p.rules.push(flushguard_engine::Rule {
        name: "x".into(),
        matcher: Default::default(),
        action: Action {
            mode: Mode::Pass,
            flags: FlushFlags::NO_SYNC,
            ..Action::PASS
        },
    });
    let e = p.validate().unwrap_err();
    assert_eq!(e.ntstatus(), NtStatus::INVALID_PARAMETER_MIX);
    assert!(matches!(
        e,
        PolicyError::Invalid {
            rule: Some(0),
            field: "action",
            error: DecodeError::Contradictory(Contradiction::SettingsOnPassMode),
            ..
        }
    ));
    p.rules[0].action = Action::with_mode(Mode::WriteThrough);
    p.rules[0].matcher.extensions = vec!["d*b".into()];
    let e = p.validate().unwrap_err();
    assert!(matches!(
        e,
        PolicyError::Invalid {
            error: DecodeError::Name {
                problem: NameProblem::BadExtension,
                ..
            },
            ..
        }
    ));
    assert_eq!(e.ntstatus(), NtStatus::OBJECT_NAME_INVALID);
    p.rules[0].matcher.extensions = vec![];
    p.rules[0].name = "n".repeat(65);
    assert_eq!(
        p.validate().unwrap_err().ntstatus(),
        NtStatus::NAME_TOO_LONG
    );
    p.rules[0].name = "ok".into();
    p.rules[0].action.method = FlushMethod::Native;
    p.rules[0].action.flags = FlushFlags::FLUSH_AND_PURGE;
    assert_eq!(
        p.validate().unwrap_err().ntstatus(),
        NtStatus::INVALID_PARAMETER_MIX
    );
}

#[test]
fn rule_limit_is_enforced() {
    let rules = (0..=flushguard_engine::protocol::policy::MAX_RULES as usize)
        .map(|i| flushguard_engine::Rule {
            name: format!("r{i}"),
            matcher: Default::default(),
            action: Action::PASS,
        })
        .collect();
    let p = Policy {
        rules,
        ..Policy::pass_through()
    };
    let e = p.encode().unwrap_err();
    assert_eq!(e.ntstatus(), NtStatus::IMPLEMENTATION_LIMIT);
}

#[test]
fn decode_rejects_semantically_bad_blob() {
    // A structurally valid blob whose share is not a share.
    let mut p = Policy::pass_through();
    p.rules.push(flushguard_engine::Rule {
        name: "s".into(),
        matcher: flushguard_engine::Matcher {
            share: Some("\\\\fs1\\data".into()),
            ..Default::default()
        },
        action: Action::with_mode(Mode::WriteThrough),
    });
    let mut blob = p.encode().unwrap();
    // Overwrite the share's first two UTF-16 units ("\\\\") with "C:".
    let needle: Vec<u8> = "\\\\fs1"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let at = blob
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    blob[at..at + 4].copy_from_slice(&[b'C', 0, b':', 0]);
    let e = Policy::decode(&blob).unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::Invalid {
                rule: Some(0),
                field: "share",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.ntstatus(), NtStatus::OBJECT_NAME_INVALID);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_decode_round_trip(p in common::policy(12)) {
        let blob = p.encode().unwrap();
        prop_assert_eq!(blob.len() % 4, 0);
        let back = Policy::decode(&blob).unwrap();
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.encode().unwrap(), blob);
        prop_assert_eq!(Policy::from_toml_str(&p.to_toml_string()).unwrap(), p);
    }

    #[test]
    fn policy_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Policy::decode(&bytes);
    }

    #[test]
    fn mutated_blobs_are_rejected_or_valid(p in common::policy(4), idx in any::<usize>(), val in any::<u8>()) {
        let mut blob = p.encode().unwrap();
        let i = idx % blob.len();
        blob[i] = val;
        if let Ok(q) = Policy::decode(&blob) {
            prop_assert!(q.validate().is_ok());
            // Decoding is strict: an accepted blob is the canonical encoding.
            prop_assert_eq!(q.encode().unwrap(), blob);
        }
    }

    #[test]
    fn toml_parser_never_panics(s in "\\PC{0,200}") {
        let _ = Policy::from_toml_str(&s);
    }
}

#[test]
fn error_messages_read_well() {
    let src = "[[rule]]\nname = \"a\"\nshare = 'C:\\data'\nmode = \"write-through\"\n";
    let e = Policy::from_toml_str(src).unwrap_err().to_string();
    assert_eq!(
        e,
        "line 3, column 9, field `rule[0].share`: share: not a share (\\\\server\\share) \
         (expected \\\\server\\share, \\Device\\Mup\\server\\share or \\\\?\\UNC\\server\\share)"
    );
    let e = Policy::from_toml_str("[[rule]]\nname = \"a\"\nmode = \"write-thru\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "line 3, column 8, field `rule[0].mode`: unknown variant `write-thru`, expected one of"
        ),
        "{e}"
    );
}

#[test]
fn to_toml_string_reads_like_a_policy_file() {
    let src = "[[rule]]\nname = \"a\"\nshare = '\\\\fs1\\x'\nmode = \"flush-on-close\"\nflush = \"no-sync\"\n";
    let p = Policy::from_toml_str(src).unwrap();
    assert_eq!(
        p.to_toml_string(),
        "[default]\nmode = \"pass\"\n\n[[rule]]\nname = \"a\"\nshare = '\\\\fs1\\x'\nmode = \"flush-on-close\"\nflush = \"no-sync\"\n"
    );
}

#[test]
fn encoded_size_limit_is_enforced() {
    // 16 384 rules with maximal globs exceed the 4 MiB blob limit.
    let glob = format!("{}/*.db", "d".repeat(1000));
    let rules = (0..5000)
        .map(|i| flushguard_engine::Rule {
            name: format!("r{i}"),
            matcher: flushguard_engine::Matcher {
                path: Some(glob.clone()),
                ..Default::default()
            },
            action: Action::with_mode(Mode::WriteThrough),
        })
        .collect();
    let e = Policy {
        rules,
        ..Policy::pass_through()
    }
    .encode()
    .unwrap_err();
    assert_eq!(e.ntstatus(), NtStatus::IMPLEMENTATION_LIMIT, "{e}");
}
