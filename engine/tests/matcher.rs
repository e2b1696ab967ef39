//! Matcher: first match wins, share index == linear scan, explain.
#![allow(missing_docs)]

mod common;

use flushguard_engine::{
    Action, CompiledPolicy, FileKey, FileName, FileProvider, Matcher, Mismatch, Mode, Policy,
    ProviderSelector, Rule,
};
use proptest::prelude::*;

fn rule(name: &str, m: Matcher, mode: Mode) -> Rule {
    Rule {
        name: name.into(),
        matcher: m,
        action: Action::with_mode(mode),
    }
}

fn key<'a>(n: &'a FileName, p: &'a str) -> FileKey<'a> {
    FileKey {
        provider: FileProvider::Smb,
        name: Some(n),
        process_image: p,
    }
}

fn sample() -> CompiledPolicy {
    let p = Policy {
        rules: vec![
            rule(
                "sql-data",
                Matcher {
                    provider: ProviderSelector::Smb,
                    share: Some("\\\\fs1\\sql".into()),
                    extensions: vec!["mdf".into(), ".LDF".into()],
                    process: Some("sqlservr.exe".into()),
                    ..Default::default()
                },
                Mode::WriteThrough,
            ),
            rule(
                "sql-any",
                Matcher {
                    share: Some("\\Device\\Mup\\fs1\\sql".into()),
                    ..Default::default()
                },
                Mode::FlushOnClose,
            ),
            rule(
                "dbs",
                Matcher {
                    path: Some("**/*.db".into()),
                    ..Default::default()
                },
                Mode::FlushAfterWrite,
            ),
            rule(
                "logs",
                Matcher {
                    share: Some("\\\\?\\UNC\\fs3\\logs".into()),
                    path: Some("app/*".into()),
                    ..Default::default()
                },
                Mode::Audit,
            ),
            rule(
                "webdav",
                Matcher {
                    provider: ProviderSelector::WebDav,
                    ..Default::default()
                },
                Mode::WriteThrough,
            ),
        ],
        default_action: Action::PASS,
        attach_local_volumes: false,
    };
    CompiledPolicy::new(p, 7).unwrap()
}

#[test]
fn first_match_wins_in_order() {
    let c = sample();
    assert_eq!(c.generation(), 7);
    let n = FileName::parse("\\\\FS1\\Sql\\data\\x.MDF").unwrap();
    assert_eq!(
        c.lookup(&key(&n, "C:\\Program Files\\SQL\\sqlservr.exe"))
            .index,
        Some(0)
    );
    // Same file, other process: rule 0 fails on process, rule 1 matches.
    assert_eq!(c.lookup(&key(&n, "notepad.exe")).index, Some(1));
    // A .db on the sql share: rule 1 (share) comes before rule 2 (path).
    let n = FileName::parse("\\Device\\Mup\\fs1\\sql\\a\\b.db").unwrap();
    assert_eq!(c.lookup(&key(&n, "x.exe")).index, Some(1));
    let n = FileName::parse("\\\\fs2\\data\\a\\b.db").unwrap();
    assert_eq!(c.lookup(&key(&n, "x.exe")).index, Some(2));
    let n = FileName::parse("\\\\fs3\\logs\\app\\today.log").unwrap();
    let r = c.lookup(&key(&n, "x.exe"));
    assert_eq!(r.index, Some(3));
    assert_eq!(r.action.mode, Mode::Audit);
    let n = FileName::parse("\\\\fs3\\logs\\app\\sub\\today.log").unwrap();
    assert_eq!(c.lookup(&key(&n, "x.exe")).index, None);
    let n = FileName::parse("\\\\dav@SSL\\DavWWWRoot\\f.txt").unwrap();
    let k = FileKey {
        provider: FileProvider::WebDav,
        name: Some(&n),
        process_image: "a.exe",
    };
    assert_eq!(c.lookup(&k).index, Some(4));
}

#[test]
fn unparseable_names_only_match_nameless_rules() {
    let c = sample();
    let k = FileKey {
        provider: FileProvider::WebDav,
        name: None,
        process_image: "a.exe",
    };
    assert_eq!(c.lookup(&k).index, Some(4));
    let k = FileKey {
        provider: FileProvider::Smb,
        name: None,
        process_image: "a.exe",
    };
    assert_eq!(c.lookup(&k).index, None);
}

#[test]
fn explain_gives_reasons_for_every_earlier_rule() {
    let c = sample();
    let (e, err) = c.explain("\\\\fs2\\data\\a\\b.db", "notepad.exe", FileProvider::Smb);
    assert!(err.is_none());
    assert_eq!(e.matched, Some(2));
    assert_eq!(e.action.mode, Mode::FlushAfterWrite);
    assert_eq!(e.rejected.len(), 2);
    assert_eq!(
        e.rejected[0],
        (
            0,
            Mismatch::Share {
                rule: "\\\\fs1\\sql".into(),
                file: Some("\\\\fs2\\data".into())
            }
        )
    );
    assert_eq!(e.rejected[1].0, 1);

    assert_eq!(
        e.rejected[0].1.to_string(),
        "share: rule wants \\\\fs1\\sql, file is on \\\\fs2\\data"
    );
    let (e, _) = c.explain("\\\\fs1\\sql\\x.mdf", "notepad.exe", FileProvider::Smb);
    assert_eq!(e.matched, Some(1));
    assert_eq!(
        e.rejected[0],
        (
            0,
            Mismatch::Process {
                pattern: "sqlservr.exe".into(),
                image: "notepad.exe".into()
            }
        )
    );
    let (e, _) = c.explain("\\\\fs1\\sql\\x.txt", "sqlservr.exe", FileProvider::Smb);
    assert_eq!(
        e.rejected[0],
        (
            0,
            Mismatch::Extension {
                rule: vec!["mdf".into(), ".LDF".into()],
                file: Some("txt".into())
            }
        )
    );
    let (e, _) = c.explain("\\\\fs3\\logs\\other\\x.txt", "a.exe", FileProvider::Smb);
    assert_eq!(e.matched, None);
    assert_eq!(e.rejected.len(), 5);
    assert_eq!(
        e.rejected[3],
        (
            3,
            Mismatch::Path {
                glob: "app/*".into(),
                file: "other\\x.txt".into()
            }
        )
    );
    assert_eq!(
        e.rejected[4],
        (
            4,
            Mismatch::Provider {
                rule: ProviderSelector::WebDav,
                file: FileProvider::Smb
            }
        )
    );
    let (e, err) = c.explain("\\\\fs1\\sql\\..\\x.mdf", "a.exe", FileProvider::WebDav);
    assert!(err.is_some());
    assert_eq!(
        e.rejected[0].1,
        Mismatch::Provider {
            rule: ProviderSelector::Smb,
            file: FileProvider::WebDav
        }
    );
    assert_eq!(e.rejected[1].1, Mismatch::NoName);
    assert_eq!(e.matched, Some(4));
}

#[test]
fn cached_rule_is_tied_to_generation() {
    let c = sample();
    let n = FileName::parse("\\\\fs2\\data\\a.db").unwrap();
    let cached = c.lookup_cached(&key(&n, "x.exe"));
    assert!(cached.is_current(&c));
    let newer = CompiledPolicy::new(c.policy().clone(), 8).unwrap();
    assert!(!cached.is_current(&newer));
}

#[test]
fn many_share_keyed_rules() {
    let rules: Vec<Rule> = (0..2000)
        .map(|i| {
            rule(
                &format!("r{i}"),
                Matcher {
                    share: Some(format!("\\\\srv{}\\share{}", i % 50, i)),
                    ..Default::default()
                },
                Mode::WriteThrough,
            )
        })
        .collect();
    let c = CompiledPolicy::new(
        Policy {
            rules,
            ..Policy::pass_through()
        },
        1,
    )
    .unwrap();
    let n = FileName::parse("\\\\SRV7\\SHARE1957\\f").unwrap();
    assert_eq!(c.lookup(&key(&n, "a.exe")).index, Some(1957));
    assert_eq!(c.lookup_linear(&key(&n, "a.exe")).index, Some(1957));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The share index gives exactly the linear first-match result.
    #[test]
    fn index_equals_linear_scan(
        p in common::policy(16),
        file in 0usize..common::FILES.len(),
        proc_ in 0usize..4,
        prov in common::file_provider(),
    ) {
        let c = CompiledPolicy::new(p, 1).unwrap();
        let name = FileName::parse(common::FILES[file]).ok();
        let process = ["sqlservr.exe", "C:\\x\\NOTEPAD.EXE", "a.dll", ""][proc_];
        let k = FileKey { provider: prov, name: name.as_ref(), process_image: process };
        let fast = c.lookup(&k);
        prop_assert_eq!(fast, c.lookup_linear(&k));
        let e = c.explain_key(&k);
        prop_assert_eq!(e.matched, fast.index);
        prop_assert_eq!(e.action, fast.action);
        // Every rule before the match is reported as rejected, in order.
        let before = fast.index.unwrap_or(c.rule_count() as u32);
        prop_assert_eq!(e.rejected.iter().map(|r| r.0).collect::<Vec<_>>(), (0..before).collect::<Vec<_>>());
    }

    /// Inserting a catch-all rule at position i makes every lookup stop at i
    /// or earlier.
    #[test]
    fn first_match_order(p in common::policy(10), at in any::<prop::sample::Index>(), file in 0usize..common::FILES.len()) {
        let mut p = p;
        let i = at.index(p.rules.len() + 1);
        p.rules.insert(i, rule("catch-all", Matcher::default(), Mode::WriteThrough));
        let c = CompiledPolicy::new(p, 1).unwrap();
        let name = FileName::parse(common::FILES[file]).ok();
        let k = FileKey { provider: FileProvider::Smb, name: name.as_ref(), process_image: "a.exe" };
        let r = c.lookup(&k);
        prop_assert!(r.index.is_some_and(|x| x as usize <= i));
    }
}

/// Validation reports the first rule (in order) with a problem, whether that is a
/// name an earlier rule already has or another field: the duplicate check
/// (a sorted index, no per-name set) keeps the order of a rule-by-rule scan.
#[test]
fn validation_reports_the_first_failing_rule() {
    use flushguard_engine::policy::PolicyError;
    use flushguard_engine::protocol::{Contradiction, DecodeError};
    let named = |names: &[&str], bad_share_at: Option<usize>| Policy {
        rules: names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let share = if bad_share_at == Some(i) {
                    "C:\\not-a-share"
                } else {
                    "\\\\srv\\share"
                };
                rule(
                    n,
                    Matcher {
                        share: Some(share.into()),
                        ..Default::default()
                    },
                    Mode::WriteThrough,
                )
            })
            .collect(),
        ..Policy::pass_through()
    };
    let at = |p: Policy| match p.validate() {
        Err(PolicyError::Invalid {
            rule, field, error, ..
        }) => (rule, field, error),
        other => panic!("expected an invalid rule, got {other:?}"),
    };
    let dup = DecodeError::Contradictory(Contradiction::DuplicateRuleName);
    assert_eq!(
        at(named(&["x", "y", "y", "x"], None)),
        (Some(2), "name", dup)
    );
    assert_eq!(
        at(named(&["b", "a", "c", "a", "b"], None)),
        (Some(3), "name", dup)
    );
    // An invalid share before the duplicate is reported first, and after it not.
    assert_eq!(at(named(&["a", "b", "a"], Some(1))).0, Some(1));
    assert_eq!(
        at(named(&["a", "b", "a", "c"], Some(3))),
        (Some(2), "name", dup)
    );
    assert!(named(&["a", "b", "c"], None).validate().is_ok());
}
